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


def check_counts(cfg, names, optional=()) -> None:
    """Each option ``names`` of a training config (epochs, iterations, batch size, threads…) is a
    count of at least 1, checked before any data loads; an ``optional`` one may be None."""
    from ..errors import InputError

    for name in names:
        value = getattr(cfg, name)
        if value is None and name in optional:
            continue
        if int(value) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def read_checkpoint(last: Path, needs: str | None = None) -> dict:
    """The training state in ``last``, or one InputError: a file cut off by a kill or a full disk
    gave a raw PytorchStreamReader traceback.  ``needs``: a key the state must hold."""
    import torch

    from ..errors import InputError

    try:
        state = torch.load(last, weights_only=False, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - whatever torch raises for a broken file: one line, no traceback
        raise InputError(f"{last} cannot be read ({type(exc).__name__}): it is probably cut off (a run killed "
                         "while writing it, or a full disk); delete it to start over, or choose another --out") from None
    if not isinstance(state, dict) or (needs is not None and needs not in state):
        raise InputError(f"{last} holds no training state: delete it to start over, or choose another --out")
    return state


def settings_changes(theirs: dict, mine: dict, keys) -> list[str]:
    """"key old -> new" for each of ``keys`` where a checkpoint's recorded settings differ from
    this run's: what the refusal to resume names."""
    return [f"{k} {theirs.get(k)!r} -> {mine[k]!r}" for k in keys if theirs.get(k) != mine[k]]
