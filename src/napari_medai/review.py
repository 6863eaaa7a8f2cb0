"""The reader's review of a detector's findings: each one accepted, rejected, or not reviewed.

A detector's findings are prompts for a reader, not results: on the real lung1 CT the built-in
detector lists seven false positives (small hilar vessels) beside the nodule at its operating
point.  The radiologist looks at each one and accepts it (a nodule to report) or rejects it (a
vessel, a scar, an artefact).  The report then counts what the reader did not reject:

* a rejected finding stays in the report, marked, so what the software proposed stays on
  record, but it no longer sets the exam's Lung-RADS category;
* a finding nobody reviewed still counts: it has not been dismissed.

A review is a list with one state per finding, in rank order.  Numpy-free and Qt-free: the
widgets keep the list, ``screening_markdown`` / ``screening_record`` and ``findings_to_csv``
write it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InputError

NOT_REVIEWED, ACCEPTED, REJECTED = "", "accepted", "rejected"
STATES = (NOT_REVIEWED, ACCEPTED, REJECTED)


def checked_review(review: Sequence[str] | None, n_findings: int) -> list[str]:
    """``review`` as a list of one state per finding (``None`` or empty: none reviewed);
    an unknown state or a list of the wrong length is refused with a clear message."""
    if not review:
        return [NOT_REVIEWED] * n_findings
    review = [NOT_REVIEWED if state is None else str(state) for state in review]
    unknown = sorted({state for state in review if state not in STATES})
    if unknown:
        raise InputError(f"unknown review state(s) {unknown}: use 'accepted', 'rejected' or '' (not reviewed)")
    if len(review) != n_findings:
        raise InputError(f"the review has {len(review)} state(s) for {n_findings} finding(s): one per finding, "
                         "in rank order")
    return review


def is_reviewed(review: Sequence[str] | None) -> bool:
    """Whether the reader decided on at least one finding."""
    return any(state != NOT_REVIEWED for state in review or ())


def not_rejected(items: Sequence, review: Sequence[str] | None) -> list:
    """The items (findings, in rank order) the reader did not reject."""
    states = checked_review(review, len(items))
    return [item for item, state in zip(items, states) if state != REJECTED]


def review_counts(review: Sequence[str]) -> dict[str, int]:
    """{"accepted": a, "rejected": r, "not_reviewed": u}."""
    return {"accepted": sum(s == ACCEPTED for s in review), "rejected": sum(s == REJECTED for s in review),
            "not_reviewed": sum(s == NOT_REVIEWED for s in review)}


def review_mark(state: str) -> str:
    """The table's short mark: ✓ accepted, ✗ rejected, nothing when not reviewed."""
    return {ACCEPTED: "✓", REJECTED: "✗"}.get(state, "")
