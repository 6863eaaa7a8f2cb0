"""How found lesions are measured against their reference masks (metrics.detection)."""

import numpy as np
import pytest
from scipy import ndimage

from napari_medai.metrics import measurement_errors, measurement_rows, target_mask
from napari_medai.postprocess.findings import measure_finding

SPACING = (2.0, 1.0, 1.0)


def _ball(radius, centre=(10, 20, 20), shape=(20, 40, 40)):
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    return np.sqrt(((z - centre[0]) * SPACING[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= radius


def _finding(mask, score):
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    return measure_finding(mask[box].astype(np.float32), box, score, SPACING, np.diag([*SPACING, 1.0]))


def test_each_hit_lesion_is_measured_by_its_best_finding_against_its_whole_reference():
    reference = _ball(4.0)  # an 8 mm nodule
    reference[10, 20, 24:28] = True  # a spicule reaching out of the target sphere counts
    target = target_mask(reference.shape, SPACING, [(10, 20, 20), (10, 5, 5)], [8.0, 6.0])
    low, high = _finding(_ball(4.0), 0.3), _finding(_ball(2.5), 0.9)  # two findings on it; the best one counts
    rows = measurement_rows(reference, target, [low, high], SPACING, nominal_mm=[8.0, 6.0])
    assert len(rows) == 1  # the second lesion has no reference voxels and no finding
    (row,) = rows
    assert row["lesion"] == 1 and row["nominal_mm"] == 8.0
    assert row["diameter_mm"] == high.mean_diameter_mm and row["volume_ml"] == high.volume_ml
    assert row["ref_ml"] == pytest.approx(reference.sum() * 2.0 / 1000)
    assert row["ref_diameter_mm"] > row["diameter_mm"] and row["category"] == "2" and row["ref_category"] != "2"
    assert row["outline"] == "network"  # the best finding's own: measured on its probability mask
    e = measurement_errors(rows)
    assert e["n"] == 1 and e["category_agree"] == 0
    assert e["diameter_abs_mm"] == pytest.approx(row["ref_diameter_mm"] - row["diameter_mm"])
    assert e["volume_bias_pct"] < 0 and e["volume_abs_pct"] == pytest.approx(-e["volume_bias_pct"])


def test_a_finding_on_the_reference_mask_itself_agrees_to_the_digit():
    # the reference is measured as findings are (each axis rounded before the mean); the mean of
    # unrounded axes put a finding on the reference's own mask 0.055 mm and a category away
    rng = np.random.default_rng(5)
    for _ in range(20):
        reference = _ball(rng.uniform(2.5, 5.0), centre=(10, 20 + rng.uniform(-0.5, 0.5), 20 + rng.uniform(-0.5, 0.5)))
        target = target_mask(reference.shape, SPACING, [(10, 20, 20)], [8.0])
        (row,) = measurement_rows(reference, target, [_finding(reference, 0.9)], SPACING)
        assert row["ref_diameter_mm"] == row["diameter_mm"] and row["ref_category"] == row["category"]


def test_a_finding_outside_every_target_measures_nothing():
    reference = _ball(4.0)
    target = target_mask(reference.shape, SPACING, [(10, 20, 20)], [8.0])
    away = _finding(_ball(3.0, centre=(10, 5, 5)), 0.9)
    assert measurement_rows(reference, target, [away], SPACING) == []
    assert measurement_errors([])["n"] == 0
