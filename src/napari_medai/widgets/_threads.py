"""How many CPU threads torch may use for a job started from the viewer.

Measured with benchmarks/bench_ui_responsiveness.py (docs/widgets.md): on a 2-core machine
with software OpenGL, torch's default (one thread per core) competes with the viewer's
redraws while the user scrolls; leaving one core to the viewer removed the worst stalls and,
on that busy shared machine, was not slower.  On a many-core machine one core less costs little.
"""

from __future__ import annotations

import os
from contextlib import contextmanager


def default_job_threads() -> int:
    """Cores minus one for the viewer, at least one."""
    return max(1, (os.cpu_count() or 1) - 1)


@contextmanager
def torch_threads(count: int):
    """Run the block with ``count`` torch intra-op threads, then restore the old count.

    Call it in the worker thread.  With torch's OpenMP backend (checked with torch 2.13) the
    setting applies to the calling thread and becomes the default of threads started later,
    while threads already running keep theirs: hence the restore.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
