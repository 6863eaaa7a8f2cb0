import numpy as np
import pytest

from napari_medai.metrics import at_threshold, dice_hd95, froc, operating_point, target_mask


def test_target_mask_balls_and_min_radius():
    m = target_mask((20, 40, 40), (2.0, 1.0, 1.0), [(10, 10, 10), (10, 30, 30)], [10.0, 1.0])
    assert m[10, 10, 10] == 1 and m[10, 30, 30] == 2
    assert m[10, 10, 15] == 1 and m[10, 10, 16] == 0  # radius 5 mm along x
    assert m[10, 30, 32] == 2 and m[10, 30, 33] == 0  # tiny lesion gets the 2 mm floor


def test_where_two_lesions_balls_overlap_each_keeps_its_own_centre():
    """An elongated lesion's ball covered a small neighbour's centre: a finding there was scored a
    hit on the large lesion and the small one as missed (found by an audit helper)."""
    m = target_mask((20, 40, 40), (1.0, 1.0, 1.0), [(10, 20, 10), (10, 20, 18)], [21.0, 3.0])
    assert m[10, 20, 18] == 2 and m[10, 20, 17] == 2  # within 1.5 mm of B, 7-8 mm (of 10.5) from A
    assert m[10, 20, 16] == 1 and m[10, 20, 10] == 1 and m[10, 20, 20] == 1  # A's where it is relatively nearer
    r = froc([([0.9, 0.8], [(10, 20, 10), (10, 20, 18)], m, [])])
    assert r["sensitivity"][8] == pytest.approx(1.0)  # both hit
    # listed the other way round, the same voxels go to the same lesions
    swapped = target_mask((20, 40, 40), (1.0, 1.0, 1.0), [(10, 20, 18), (10, 20, 10)], [3.0, 21.0])
    np.testing.assert_array_equal(swapped, np.select([m == 1, m == 2], [2, 1], 0))


def test_a_lesion_thinner_than_the_slices_keeps_its_centre_voxel():
    """On 5 mm slices a 4.4 mm lesion centred between two slices had a ball holding no voxel centre:
    it went uncounted and a finding on it was the top false positive (an audit helper's finding)."""
    spacing = (5.0, 1.0, 1.0)
    mask = target_mask((20, 40, 40), spacing, [(10.5, 10, 10), (5, 30, 30)], [4.4, 10.0])
    assert mask[10, 10, 10] == 1 and np.count_nonzero(mask == 1) == 1  # np.rint(10.5) is 10
    result = froc([([0.9, 0.8], [(10.5, 10, 10), (5, 30, 30)], mask, [])])
    assert result["targets"] == 2 and result["sensitivity"][0.125] == 1.0


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


def test_a_detector_that_hits_every_lesion_without_false_positives_scores_1():
    # MONAI's curve leaves out the lowest score of all, a missed lesion's 0; with every lesion hit
    # it left out the hit's own score, and this detector scored 0 everywhere
    mask = target_mask((10, 50, 50), (1, 1, 1), [(5, 10, 10)], [6])
    r = froc([([0.9], [(5, 10, 10)], mask, [])])
    assert r["sensitivity"] == {t: 1.0 for t in r["sensitivity"]} and r["mean"] == 1.0
    # a hit ranked below two false positives: found from 2 false positives per scan on
    r = froc([([0.6, 0.5, 0.3], [(5, 40, 40), (5, 30, 30), (5, 10, 10)], mask, [])])
    assert r["sensitivity"][2] == r["sensitivity"][8] == 1.0 and r["sensitivity"][1] < 1.0


def _operating_cases():
    mask = target_mask((10, 50, 50), (1, 1, 1), [(5, 10, 10), (5, 40, 40)], [6, 6])
    # scan 1: lesion 1 at 0.95, lesion 2 at 0.60, false positives at 0.90 and 0.50
    scan1 = ([0.95, 0.9, 0.6, 0.5], [(5, 10, 10), (5, 25, 25), (5, 40, 40), (1, 1, 1)], mask, [])
    # scan 2: no lesion, false positives at 0.873 and 0.2
    scan2 = ([0.873, 0.2], [(1, 1, 1), (8, 45, 5)], np.zeros_like(mask), [])
    return [scan1, scan2]


def test_operating_point_keeps_the_false_positive_budget_and_rounds_up():
    cases = _operating_cases()
    # 1 FP a scan = 2 in all: the third-highest FP (0.5) must go, the two above may stay
    op = operating_point(cases, fp_per_scan=1.0)
    assert op["score_threshold"] == 0.51
    assert op["fp_per_scan"] == 1.0 and op["sensitivity"] == 1.0 and op["lesions_found"] == 2
    # half an FP a scan = 1 in all: threshold just above the second FP, 0.873 -> 0.88
    op = operating_point(cases, fp_per_scan=0.5)
    assert op["score_threshold"] == 0.88
    assert op["fp_per_scan"] == 0.5 and op["sensitivity"] == 0.5  # lesion 2 (0.60) is below it
    # no false positive allowed: above 0.90, so only the 0.95 lesion stays
    op = operating_point(cases, fp_per_scan=0.0)
    assert op["score_threshold"] == 0.91 and op["fp_per_scan"] == 0.0 and op["lesions_found"] == 1
    # more budget than false positives: every finding with a score stays, a missed lesion stays missed
    mask = cases[0][2]
    op = operating_point([([0.4], [(5, 10, 10)], mask, [])], fp_per_scan=4)
    assert op["score_threshold"] == 0.01 and op["lesions_found"] == 1 and op["lesions"] == 2


def test_at_threshold_counts_what_a_reader_is_shown():
    r = at_threshold(_operating_cases(), 0.6)
    assert r["lesions_found"] == 2 and r["fp_per_scan"] == 1.0  # 0.9 and 0.873 pass, 0.5 and 0.2 do not
    r = at_threshold(_operating_cases(), 0.96)
    assert r["lesions_found"] == 0 and r["sensitivity"] == 0.0 and r["fp_per_scan"] == 0.0


def test_no_operating_point_when_false_positives_score_1():
    # a threshold capped at 1.0 kept both: 2 false positives per scan against a budget of 1
    mask = target_mask((10, 50, 50), (1, 1, 1), [(5, 10, 10)], [6])
    cases = [([1.0, 1.0, 0.8], [(5, 40, 40), (5, 30, 30), (5, 10, 10)], mask, [])]
    with pytest.raises(ValueError, match="no score threshold keeps the false positives within 1 per scan: 2 false"):
        operating_point(cases, fp_per_scan=1.0)
    assert operating_point(cases, fp_per_scan=2.0)["score_threshold"] == 0.01  # the budget holds for all
    # scores just under 1.0 (float32 0.99999994) read as 1.0 but stay below a threshold of 1.0
    below = float(np.nextafter(np.float32(1.0), np.float32(0.0)))
    op = operating_point([([below, below, 0.8], cases[0][1], mask, [])], fp_per_scan=1.0)
    assert op["score_threshold"] == 1.0 and op["fp_per_scan"] == 0.0


def test_operating_point_needs_scans():
    with pytest.raises(ValueError, match="no scans"):
        operating_point([])


def test_dice_hd95():
    ref = np.zeros((10, 20, 20), np.uint8)
    ref[2:8, 5:15, 5:15] = 1
    pred = ref.copy()
    pred[2:8, 5:15, 14] = 0
    r = dice_hd95(pred, ref, {1: "lung", 2: "nodule"}, (2.0, 1.0, 1.0))
    assert r["lung"]["dice"] == pytest.approx(2 * 540 / (540 + 600))
    assert 0 < r["lung"]["hd95_mm"] <= 1.0 + 1e-6
    assert r["nodule"] == {"dice": 1.0, "hd95_mm": 0.0}
