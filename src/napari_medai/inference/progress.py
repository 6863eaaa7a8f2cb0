"""Progress of several passes reported as one bar."""

from __future__ import annotations


def share_progress(progress, stage: int, stages: int):
    """Progress of one of ``stages`` equal passes as a share of one bar over all of them.

    A stage counts as large as its first total; a stage whose total later shrinks (a run with
    ``tta="mirror-lesions"``) reports its share done of that, so the bar never goes back."""
    if progress is None or stages == 1:
        return progress
    unit = []

    def report(done, total):
        if not unit:
            unit.append(max(int(total), 1))
        n = unit[0]
        progress(stage * n + round(n * int(done) / max(int(total), 1)), stages * n)

    return report


class PassesProgress:
    """One bar over passes of unequal size (``tta="mirror-lesions"``: a mirrored pass runs only
    some windows).  A pass whose size is not known yet counts as large as the first; the plain
    pass tells the mirrored passes' sizes (``expect``) as soon as it has run, so the bar's total
    shrinks once, then only grows towards it."""

    def __init__(self, progress, passes: int):
        self.progress = progress
        self.totals: list[int | None] = [None] * passes

    def expect(self, stage: int, total: int) -> None:
        self.totals[stage] = int(total)

    def stage(self, stage: int):
        """The progress callback for pass ``stage``."""
        if self.progress is None:
            return None

        def report(done, total):
            self.totals[stage] = int(total)
            first = self.totals[0]
            sizes = [first if t is None else t for t in self.totals]
            self.progress(sum(sizes[:stage]) + int(done), sum(sizes))

        return report
