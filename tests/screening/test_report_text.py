"""The screening report's words on synthetic results (no model): what the Markdown says must be
what the code computed (found wrong by an audit helper, 2026-11-29)."""

from __future__ import annotations

import numpy as np

from napari_medai.postprocess.attenuation import lung_rads_by_attenuation
from napari_medai.postprocess.findings import Finding, lung_rads_category, mean_diameter
from napari_medai.screening import ScreenedFinding, ScreeningResult, _highest, screening_markdown, with_review


def _finding(long, short, kind="solid", solid=0.0, added=False):
    m = mean_diameter(long, short)
    return Finding([10, 20, 30], [10.0, 20.0, 30.0], [[9, 19, 29], [12, 22, 32]], long, short, m, 0.1,
                   1.0 if added else 0.9, lung_rads_category(m), attenuation=kind, solid_diameter_mm=solid,
                   lung_rads_by_attenuation=lung_rads_by_attenuation(kind, m, solid), added_by_reader=added,
                   outline="half-maximum")


def _result(findings, review=()):
    detected = [f for f in findings if not f.added_by_reader]
    return ScreeningResult([ScreenedFinding(f, "right", "upper", 0.1, "half-maximum") for f in findings],
                           np.zeros((2, 2, 2), np.uint8), {1: {"name": "lung"}}, {"right": 1000.0, "left": 900.0},
                           _highest(f.lung_rads for f in detected), {"detect": {"name": "d", "sha256": "0" * 64,
                                                                                  "tta": "off"}},
                           {}, 0.5, None, [], False, _highest(f.lung_rads_by_attenuation for f in detected),
                           review=list(review))


def test_the_attenuation_note_gives_the_whole_part_solid_rule():
    # a 5.6 mm part-solid nodule with a 3.4 mm solid part is category 2; the note said only "by the
    # solid component", by which it would be 3
    text = screening_markdown(_result([_finding(5.8, 5.4, "part-solid", 3.4)]))
    assert "| part-solid (solid 3.4 mm): 2 |" in text
    assert "part-solid: 2 under 6 mm in all, else by the solid component" in text


def test_nothing_reported_is_no_category_before_the_readers_nodule():
    text = screening_markdown(_result([_finding(7.4, 7.4, added=True)], review=["accepted"]))
    assert "Before the review: no finding reported" in text
    assert "3 after the review (no finding reported before)" in text and "(1 before)" not in text


def test_the_small_nodule_warning_stays_when_the_reader_rejects_every_finding():
    result = _result([_finding(4.0, 4.0), _finding(5.0, 4.6)])
    nothing = screening_markdown(with_review(result, ["rejected", "rejected"]))
    assert "none kept" in nothing and "Limit: " in nothing
    assert "Limit: " in screening_markdown(result)  # category 2: the warning, as before
