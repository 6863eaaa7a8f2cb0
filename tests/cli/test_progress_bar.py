"""The command-line progress bar (cli._common.ProgressBar)."""

from napari_medai.cli._common import ProgressBar


def test_the_bar_takes_a_total_that_shrinks_and_ends_full():
    # a run mirrored only at lesions counts every window of four passes until the plain pass
    # tells how many of the mirrored passes' windows run
    bar = ProgressBar(leave=False)
    for done, total in [(0, 64), (8, 64), (16, 64), (16, 19), (18, 19), (19, 19)]:
        bar(done, total)
    assert (bar.bar.n, bar.bar.total) == (19, 19)
    bar.close()
