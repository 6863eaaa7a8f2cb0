import numpy as np
import pytest

from napari_medai.postprocess import class_volumes, clean_segmentation
from napari_medai.postprocess.measure import FEW_LABELS, label_counts


def test_clean_keeps_two_lungs_and_drops_small_lesions():
    lab = np.zeros((10, 40, 40), np.uint8)
    lab[1:9, 5:35, 2:15] = 1  # right lung
    lab[1:9, 5:35, 22:38] = 1  # left lung
    lab[0, 0, 0] = 1  # speck of "lung" outside
    lab[4:7, 10:13, 5:8] = 2  # 27 voxels nodule
    lab[2, 30, 30] = 2  # 1-voxel false lesion
    out = clean_segmentation(lab, (2.0, 1.0, 1.0), organs={1: 2}, lesions=(2,), min_lesion_mm3=10)
    assert out[0, 0, 0] == 0 and out[2, 30, 30] == 0
    assert (out == 2).sum() == 27
    assert (out == 1).sum() == (lab == 1).sum() - 1
    assert lab[0, 0, 0] == 1  # input untouched


def test_class_volumes_in_ml():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[:5] = 1
    lab[0, 0, 0] = 2
    rows = class_volumes(lab, (2.0, 1.0, 0.5), {1: "lung", 2: "nodule", 3: "vessel"})
    assert [r["name"] for r in rows] == ["lung", "nodule", "vessel"]
    assert rows[0]["volume_ml"] == (499 * 1.0) / 1000
    assert rows[1]["voxels"] == 1 and rows[2]["voxels"] == 0


def test_class_volumes_list_named_classes_and_values_present_only():
    lab = np.zeros((4, 4, 4), np.float32)  # a float label map (as MONAI's SaveImage writes)
    lab[0, 0, :3], lab[1, 1, 1] = 5, 1
    rows = class_volumes(lab, (1.0, 1.0, 1.0), {1: "lung", 2: "nodule"})
    assert [(r["index"], r["name"], r["voxels"]) for r in rows] == [(1, "lung", 1), (2, "nodule", 0), (5, "class 5", 3)]


def test_label_counts_match_bincount():
    def expected(labels):
        counts = np.bincount(labels[labels > 0].astype(np.int64))
        return {int(k): int(n) for k, n in enumerate(counts) if k and n}

    rng = np.random.default_rng(0)
    few = rng.integers(0, 4, (40, 9, 7)).astype(np.uint8)
    assert label_counts(few) == expected(few)
    many = rng.integers(-3, FEW_LABELS + 20, (40, 9, 7)).astype(np.int32)  # negative values are ignored
    assert label_counts(many) == expected(many)
    assert label_counts(np.zeros((3, 2, 2), np.uint8)) == {}
    # an instance map with large ids (uint64, which np.bincount refuses): no array of size max+1
    ids = np.zeros((4, 5, 6), np.uint64)
    ids[0, 0, :2], ids[3, 4, 5] = 2**40, 7
    assert label_counts(ids) == {7: 1, 2**40: 2}
    # every dtype a Labels layer holds, with values above the 32 a pass each was for (bincount, slab by slab)
    for dtype in (np.uint8, np.uint16, np.int16, np.int32, np.int64, np.uint64, np.float32):
        wide = rng.integers(0, 255, (40, 9, 7)).astype(dtype)
        assert label_counts(wide) == expected(wide.astype(np.int64))


def test_lesions_must_touch_their_host_class():
    lab = np.zeros((10, 40, 40), np.uint8)
    lab[1:9, 5:35, 2:15] = 1  # lung
    lab[1:9, 5:35, 22:38] = 1
    lab[4:7, 10:13, 5:8] = 2  # nodule inside the lung
    lab[4:7, 10:13, 15:18] = 2  # juxta-pleural: touches the lung from outside (x=15 next to x=14)
    lab[4:7, 36:39, 17:20] = 2  # in the mediastinum/outside air: no lung voxel next to it
    lab[0, 0, 0] = 1  # speck of "lung" the organ rule removes; its neighbour must not survive by it
    lab[0, 1, 1] = 2
    kwargs = dict(organs={1: 2}, lesions=(2,), min_lesion_mm3=0)
    out = clean_segmentation(lab, (2.0, 1.0, 1.0), lesion_hosts=(1,), **kwargs)
    assert (out[4:7, 10:13, 5:8] == 2).all() and (out[4:7, 10:13, 15:18] == 2).all()
    assert (out[4:7, 36:39, 17:20] == 0).all() and out[0, 1, 1] == 0
    assert (out == 2).sum() == 54
    # without hosts every lesion component stays
    assert (clean_segmentation(lab, (2.0, 1.0, 1.0), **kwargs) == 2).sum() == 82


def test_relabel_above_only_below_one_half():
    from napari_medai.postprocess.components import relabel_above

    lab = np.array([0, 1, 1, 0], np.uint8)
    prob = np.array([0.1, 0.35, 0.6, 0.45], np.float32)
    np.testing.assert_array_equal(relabel_above(lab, prob, 2, 0.3), [0, 2, 2, 2])
    np.testing.assert_array_equal(relabel_above(lab, prob, 2, 0.5), lab)  # argmax only
    assert lab[1] == 1  # input untouched


def test_a_lower_threshold_with_a_confidence_level_grows_only_confident_components():
    from napari_medai.postprocess.components import confident_components, relabel_above

    lab = np.zeros((1, 1, 9), np.uint8)
    lab[0, 0, 1] = 2  # a nodule the network is sure of (p 0.99)
    lab[0, 0, 6] = 2  # an unsure one (p 0.6): the argmax made it a nodule, the level does not
    prob = np.array([[[0.3, 0.99, 0.35, 0.0, 0.0, 0.3, 0.6, 0.4, 0.0]]], np.float32)
    np.testing.assert_array_equal(confident_components(prob >= 0.3, prob, 0.9)[0, 0],
                                  [1, 1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(relabel_above(lab, prob, 2, 0.3, confident=0.9)[0, 0],
                                  [2, 2, 2, 0, 0, 0, 2, 0, 0])
    # without the level both grow; with a level no component reaches, only the argmax stays
    np.testing.assert_array_equal(relabel_above(lab, prob, 2, 0.3)[0, 0], [2, 2, 2, 0, 0, 2, 2, 2, 0])
    np.testing.assert_array_equal(relabel_above(lab, prob, 2, 0.3, confident=0.999), lab)
    assert not confident_components(np.zeros((2, 2, 2), bool), np.ones((2, 2, 2)), 0.5).any()


@pytest.mark.parametrize("level", ["0.9", 0.0, 1.5, True])
def test_a_confidence_level_that_is_no_probability_is_refused(level):
    from napari_medai.errors import ModelError
    from napari_medai.postprocess.components import clean_with_card

    labels = np.ones((4, 4, 4), np.uint8)
    with pytest.raises(ModelError, match="lesion_confident"):
        clean_with_card(labels, np.zeros(labels.shape, np.float32), (1, 1, 1),
                        {"lesions": [2], "lesion_threshold": 0.3, "lesion_confident": level})


def _merge_scene():
    """Lung (1) everywhere; first-pass nodules A (confirmed), B (a vessel: rejected) and C (no
    candidate there); candidates 1 on A, 2 on B, 3 a small nodule the first pass missed, 4 a
    rejected vessel elsewhere."""
    labels = np.ones((12, 24, 24), np.uint8)
    labels[2:5, 2:6, 2:6] = 2  # A
    labels[2:5, 12:16, 2:6] = 2  # B
    labels[8:11, 2:6, 2:6] = 2  # C
    cands = np.zeros(labels.shape, np.int32)
    cands[2:6, 2:7, 2:7] = 1  # larger than A
    cands[3, 13:15, 3:5] = 2
    cands[8:10, 18:20, 18:20] = 3
    cands[8:10, 12:14, 18:20] = 4
    return labels, cands


def _candidates(cands, scores_by_number):
    """Candidates (one per blob of ``cands``) and their scores, given per blob number."""
    from napari_medai.inference.candidates import find_candidates

    found = find_candidates((cands > 0).astype(np.float32), (1.0, 1.0, 1.0), 0.5)
    numbers = [int(cands[tuple(np.rint(c).astype(int))]) for c in found.centres]
    return found, np.array([scores_by_number[k] for k in numbers])


def test_confirmed_candidates_add_missed_nodules_and_rejected_ones_drop_vessels():
    from napari_medai.postprocess.components import merge_confirmed

    labels, cands = _merge_scene()
    before = labels.copy()
    found, scores = _candidates(cands, {1: 0.95, 2: 0.1, 3: 0.9, 4: 0.2})
    out = merge_confirmed(labels, 2, found, scores, threshold=0.8, host=1)
    np.testing.assert_array_equal(labels, before)  # the input is left alone
    assert (out[2:5, 2:6, 2:6] == 2).all()  # A: confirmed, kept with its own outline ...
    assert out[5, 2, 2] == 1  # ... not grown to the candidate's
    assert (out[2:5, 12:16, 2:6] == 1).all()  # B: only a rejected candidate on it -> lung
    assert (out[8:11, 2:6, 2:6] == 2).all()  # C: no second opinion -> kept
    assert (out[8:10, 18:20, 18:20] == 2).all()  # candidate 3: added
    assert (out[8:10, 12:14, 18:20] == 1).all()  # candidate 4: rejected, never added
    expected = before.copy()
    expected[2:5, 12:16, 2:6] = 1
    expected[cands == 3] = 2
    np.testing.assert_array_equal(out, expected)  # nothing else changed


def test_without_dropping_only_confirmed_candidates_are_added():
    from napari_medai.postprocess.components import merge_confirmed

    labels, cands = _merge_scene()
    found, scores = _candidates(cands, {1: 0.95, 2: 0.1, 3: 0.9, 4: 0.2})
    out = merge_confirmed(labels, 2, found, scores, threshold=0.8, host=1, drop_rejected=False)
    assert (out[2:5, 12:16, 2:6] == 2).all()
    expected = labels.copy()
    expected[cands == 3] = 2
    np.testing.assert_array_equal(out, expected)


def test_unscored_candidates_neither_add_nor_drop():
    from napari_medai.postprocess.components import merge_confirmed

    labels, cands = _merge_scene()
    found, _ = _candidates(cands, {1: 0, 2: 0, 3: 0, 4: 0})
    out = merge_confirmed(labels, 2, found, np.full(4, -1.0), threshold=0.5, host=1)
    np.testing.assert_array_equal(out, labels)


def test_slab_by_slab_counting_and_lookup_equal_the_whole_volume_ones():
    from napari_medai.postprocess.components import SLAB, label_sizes, lookup

    rng = np.random.default_rng(3)
    lab = rng.integers(0, 9, (3 * SLAB + 5, 7, 6)).astype(np.int32)  # slabs, and a short last one
    np.testing.assert_array_equal(label_sizes(lab), np.bincount(lab.ravel()))
    np.testing.assert_array_equal(label_sizes(lab, 12), np.bincount(lab.ravel(), minlength=13))
    table = rng.random(9) > 0.5
    np.testing.assert_array_equal(lookup(table, lab), table[lab])
    assert label_sizes(np.zeros((0, 4), np.int32)).tolist() == [0]


def test_slab_by_slab_argmax_and_organ_field_equal_the_whole_volume_ones():
    from napari_medai.api import _argmax_small
    from napari_medai.postprocess.components import SLAB
    from napari_medai.postprocess.findings import organ_field

    rng = np.random.default_rng(4)
    probs = rng.random((3, 2 * SLAB + 3, 9, 8)).astype(np.float32)
    probs[:, 5, 2, 2] = 0.25  # a tie: the first class wins, as in numpy's argmax
    np.testing.assert_array_equal(_argmax_small(probs), probs.argmax(0))
    probs /= probs.sum(0, keepdims=True)
    np.testing.assert_array_equal(organ_field(probs, [1], 2), probs[[1, 2]].sum(0) >= 0.5)


def test_label_counts_leave_nan_out():
    lab = np.full((3, 4, 4), np.nan, np.float32)
    assert label_counts(lab) == {}
    lab[0, 0, :2] = 2
    assert label_counts(lab) == {2: 2}


def _whole_volume_clean(labels, spacing, organs, lesions, min_lesion_mm3, lesion_hosts):
    """clean_segmentation as it was before it worked in bounding boxes: every step on the
    whole volume (the reference the box version must match voxel for voxel)."""
    from napari_medai.postprocess.components import (drop_components_away_from, keep_largest_components,
                                                     remove_small_components)

    out = labels.copy()
    for cls, n in organs.items():
        m = out == cls
        out[m & ~keep_largest_components(m, n)] = 0
    for cls in lesions:
        m = out == cls
        out[m & ~remove_small_components(m, min_lesion_mm3, spacing)] = 0
    host = np.isin(out, lesion_hosts)
    for cls in lesions:
        m = out == cls
        out[m & ~drop_components_away_from(m, host)] = 0
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_working_in_bounding_boxes_changes_no_voxel(seed):
    # random blobs of lung and nodule, some at the array's edges, some touching, some alone
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(20, 40, 36)), 2)
    labels = np.zeros(field.shape, np.uint8)
    labels[field > 0.0] = 1
    labels[(field > 0.12) & (rng.random(field.shape) < 0.6)] = 2  # nodules inside lungs, some tiny
    labels[(field < -0.1) & (rng.random(field.shape) < 0.02)] = 2  # specks away from any lung
    args = ((2.0, 1.0, 1.0), {1: 2}, (2,), 6.0, (1,))
    expected = _whole_volume_clean(labels, *args)
    assert (expected != labels).any() and (expected == 2).any()  # the clean-up did something
    np.testing.assert_array_equal(clean_segmentation(labels, *args), expected)


def test_bounding_box_grows_within_the_array():
    from napari_medai.postprocess.components import bounding_box

    mask = np.zeros((4, 5, 6), bool)
    assert bounding_box(mask) is None
    mask[0, 2, 5] = mask[1, 3, 4] = True
    assert bounding_box(mask) == (slice(0, 2), slice(2, 4), slice(4, 6))
    assert bounding_box(mask, margin=1) == (slice(0, 3), slice(1, 5), slice(3, 6))


def test_a_nodule_touching_its_lung_only_beyond_the_nodules_box_is_kept():
    labels = np.zeros((6, 8, 24), np.uint8)
    labels[1:5, 1:7, 10:20] = 1
    labels[2:4, 3:5, 6:10] = 2  # against the lung's side at x = 10, outside the nodules' own box
    out = clean_segmentation(labels, (1.0, 1.0, 1.0), {1: 1}, (2,), 0.0, (1,))
    np.testing.assert_array_equal(out, labels)


def test_each_lesion_component_says_the_outline_the_clean_up_gave_it():
    from napari_medai.postprocess.components import clean_with_card, lesion_outlines

    spacing = (1.0, 1.0, 1.0)
    image = np.full((24, 40, 40), -800.0, dtype=np.float32)  # lung
    labels = np.ones(image.shape, dtype=np.uint8)
    prob = np.zeros(image.shape, dtype=np.float32)
    zz, yy, xx = np.ogrid[:24, :40, :40]
    ball = (zz - 8) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 <= 16  # a solid nodule of radius 4
    image[ball] = 40.0
    labels[(zz - 8) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 <= 6] = 2  # drawn too small: refined
    prob[labels == 2] = 0.995
    labels[14:18, 28:32, 28:32] = 2  # a lesion with no contrast to its lung: left as drawn
    prob[14:18, 28:32, 28:32] = 0.995
    labels[16:18, 8:10, 30:32] = 2  # unsure everywhere: kept out of the refinement
    prob[16:18, 8:10, 30:32] = 0.6
    extra = {"lesions": [2], "organs": {"1": 1}, "lesion_hosts": [1], "lesion_refine": {"reach_mm": 1.5},
             "lesion_confident": 0.99}
    refined = np.zeros(labels.shape, dtype=bool)
    out = clean_with_card(labels, prob, spacing, extra, image=image, refined=refined)
    assert (out == 2).sum() > (labels == 2).sum()  # the nodule grew to its contour
    rows = lesion_outlines(out, prob, spacing, 2, refined)
    assert [(r["voxels"], r["outline"]) for r in rows] == [
        ((out[:12] == 2).sum(), "half-maximum"), (64, "network"), (8, "network")]
    assert rows[0]["center_voxel"] == [8.0, 10.0, 10.0] and rows[1]["peak_probability"] == 0.995
    assert rows[1]["volume_ml"] == 0.064
    # a refined nodule grown into an unrefined neighbour is both: "mixed"
    joined = out.copy()
    joined[8, 10, 14:20] = 2
    assert lesion_outlines(joined, prob, spacing, 2, refined)[0]["outline"] == "mixed"
    # nothing refined (no mask), no lesion voxel: the network's outline, nothing to list
    assert {r["outline"] for r in lesion_outlines(out, None, spacing, 2)} == {"network"}
    assert lesion_outlines(out, None, spacing, 2)[0]["peak_probability"] is None
    assert lesion_outlines(np.zeros_like(out), prob, spacing, 2) == []
    # the screening report reads each component's kind back from the rows, numbered as it labels them
    from napari_medai.postprocess.components import lesion_components, outline_per_component

    box, lab, n = lesion_components(out, 2)
    kinds = outline_per_component(lab, n, box, rows)
    assert sorted(kinds) == ["", "half-maximum", "network", "network"]
    assert kinds[lab[8 - box[0].start, 10 - box[1].start, 10 - box[2].start]] == "half-maximum"
    assert kinds[lab[15 - box[0].start, 29 - box[1].start, 29 - box[2].start]] == "network"
    assert outline_per_component(lab, n, box, [])[1:] == [""] * n  # rows of another map: not known
    assert lesion_components(np.zeros_like(out), 2) is None


def test_confident_components_are_those_whose_peak_reaches_the_level():
    # the same components as ndimage.maximum per component picks (it was computed so, 4x slower)
    from scipy import ndimage

    from napari_medai.postprocess.components import _FULL, confident_components

    rng = np.random.default_rng(7)
    prob = ndimage.gaussian_filter(rng.random((20, 40, 40)), 1.5).astype(np.float32)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    mask = prob >= 0.6
    lab, n = ndimage.label(mask, structure=_FULL)
    assert n > 5
    for level in (0.7, 0.8, 0.9):
        peaks = np.asarray(ndimage.maximum(prob, lab, np.arange(1, n + 1)))
        expected = np.isin(lab, np.flatnonzero(peaks >= level) + 1)
        assert 0 < expected.sum() < mask.sum()  # some components each way
        np.testing.assert_array_equal(confident_components(mask, prob, level), expected)
