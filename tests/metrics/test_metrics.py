import numpy as np
import pytest

from napari_medai.metrics import dice_hd95, froc, target_mask


def test_target_mask_balls_and_min_radius():
    m = target_mask((20, 40, 40), (2.0, 1.0, 1.0), [(10, 10, 10), (10, 30, 30)], [10.0, 1.0])
    assert m[10, 10, 10] == 1 and m[10, 30, 30] == 2
    assert m[10, 10, 15] == 1 and m[10, 10, 16] == 0  # radius 5 mm along x
    assert m[10, 30, 32] == 2 and m[10, 30, 33] == 0  # tiny lesion gets the 2 mm floor


def test_froc_counts_hits_and_false_positives():
    mask = target_mask((10, 50, 50), (1, 1, 1), [(5, 10, 10), (5, 40, 40)], [6, 6])
    # scan 1: hit lesion 1 with 0.9, a FP at 0.8, lesion 2 missed
    scan1 = ([0.9, 0.8], [(5, 10, 10), (5, 25, 25)], mask, [])
    # scan 2: no lesions, one FP at 0.3
    scan2 = ([0.3], [(1, 1, 1)], np.zeros_like(mask), [])
    r = froc([scan1, scan2])
    assert r["targets"] == 2 and r["scans"] == 2
    assert r["sensitivity"][8] == pytest.approx(0.5)
    assert r["sensitivity"][0.125] <= 0.5
    # excluding the missed lesion: sensitivity 1 at generous FP rates
    r2 = froc([(scan1[0], scan1[1], mask, [2]), scan2])
    assert r2["targets"] == 1 and r2["sensitivity"][8] == pytest.approx(1.0)


def test_dice_hd95():
    ref = np.zeros((10, 20, 20), np.uint8)
    ref[2:8, 5:15, 5:15] = 1
    pred = ref.copy()
    pred[2:8, 5:15, 14] = 0
    r = dice_hd95(pred, ref, {1: "lung", 2: "nodule"}, (2.0, 1.0, 1.0))
    assert r["lung"]["dice"] == pytest.approx(2 * 540 / (540 + 600))
    assert 0 < r["lung"]["hd95_mm"] <= 1.0 + 1e-6
    assert r["nodule"] == {"dice": 1.0, "hd95_mm": 0.0}
