"""Training checkpoints shared by the trainers: written atomically, and compared with the run
that would resume from them."""

from __future__ import annotations

import os
from pathlib import Path


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` into a temporary file beside ``path``, then ``os.replace``: a run killed
    while writing (Ctrl+C, a full disk) leaves the previous checkpoint whole, not a truncated one."""
    import torch

    partial = path.with_name(f".{path.name}.partial")
    try:
        torch.save(obj, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def settings_changes(theirs: dict, mine: dict, keys) -> list[str]:
    """"key old -> new" for each of ``keys`` where a checkpoint's recorded settings differ from
    this run's: what the refusal to resume names."""
    return [f"{k} {theirs.get(k)!r} -> {mine[k]!r}" for k in keys if theirs.get(k) != mine[k]]
