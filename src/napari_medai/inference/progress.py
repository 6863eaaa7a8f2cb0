"""Progress of several passes reported as one bar."""

from __future__ import annotations


def share_progress(progress, stage: int, stages: int):
    """Progress of one of ``stages`` equal passes as a share of one bar over all of them."""
    if progress is None or stages == 1:
        return progress
    return lambda done, total: progress(stage * total + done, stages * total)
