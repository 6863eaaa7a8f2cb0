"""The reader's review of findings: states, checks and what counts after it."""

from __future__ import annotations

import pytest

from napari_medai.errors import InputError
from napari_medai.review import (
    ACCEPTED, NOT_REVIEWED, REJECTED, checked_review, is_reviewed, not_rejected, review_counts, review_mark,
)


def test_no_review_means_every_finding_not_reviewed():
    assert checked_review(None, 3) == [NOT_REVIEWED] * 3
    assert checked_review([], 2) == ["", ""]
    assert not is_reviewed(None) and not is_reviewed(["", ""])
    assert is_reviewed(["", REJECTED])


def test_rejected_findings_are_left_out_and_unreviewed_ones_kept():
    assert not_rejected(["a", "b", "c"], [ACCEPTED, REJECTED, NOT_REVIEWED]) == ["a", "c"]
    assert not_rejected(["a", "b"], None) == ["a", "b"]
    assert review_counts([ACCEPTED, REJECTED, REJECTED, NOT_REVIEWED]) == \
        {"accepted": 1, "rejected": 2, "not_reviewed": 1}
    assert [review_mark(s) for s in (ACCEPTED, REJECTED, NOT_REVIEWED)] == ["✓", "✗", ""]


def test_a_wrong_review_is_refused_with_a_clear_message():
    with pytest.raises(InputError, match=r"unknown review state\(s\) \['maybe'\]"):
        checked_review(["maybe", ACCEPTED], 2)
    with pytest.raises(InputError, match=r"2 state\(s\) for 3 finding\(s\)"):
        checked_review([ACCEPTED, REJECTED], 3)
