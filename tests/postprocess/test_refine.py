"""Lesion edges moved to the image's half-maximum contour (postprocess.refine)."""

import numpy as np
import pytest
from scipy import ndimage

from napari_medai.postprocess.components import clean_with_card
from napari_medai.postprocess.refine import refine_lesion_edges

SPACING = (2.0, 1.0, 1.0)
LUNG, NODULE = 1, 2


def _ball(centre=(10, 20, 20), shape=(20, 40, 40)):
    """Distance (mm) of every voxel from ``centre`` on the 2 x 1 x 1 mm grid."""
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    return np.sqrt(((z - centre[0]) * SPACING[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)


def _scene(radius=6.0, drawn=4.5):
    """A solid 6 mm-radius nodule (+30 HU) in lung (-880 HU); the network drew it 4.5 mm wide."""
    r = _ball()
    image = np.where(r <= radius, 30.0, -880.0).astype(np.float32)
    labels = np.full(image.shape, LUNG, np.uint8)
    labels[r <= drawn] = NODULE
    return image, labels, r <= radius


def test_an_edge_drawn_too_small_moves_to_the_half_maximum_contour():
    image, labels, truth = _scene()
    before = labels.copy()
    out = refine_lesion_edges(labels, image, SPACING, NODULE, hosts=(LUNG,), reach_mm=3.0)
    assert np.array_equal(out == NODULE, truth)
    assert np.array_equal(labels, before)  # a new array; the input is untouched


def test_it_moves_at_most_reach_mm():
    image, labels, truth = _scene(radius=8.0, drawn=4.0)
    out = refine_lesion_edges(labels, image, SPACING, NODULE, hosts=(LUNG,), reach_mm=1.5)
    grown = out == NODULE
    assert (labels == NODULE).sum() < grown.sum() < truth.sum()
    r = _ball()
    assert r[grown].max() <= 4.0 + 1.5 + 1.0  # drawn edge voxels sit within a voxel of 4 mm


def test_partial_volume_voxels_go_back_to_the_host_and_a_too_large_edge_shrinks():
    image, labels, truth = _scene(radius=5.0, drawn=6.0)
    out = refine_lesion_edges(labels, image, SPACING, NODULE, hosts=(LUNG,), reach_mm=2.0)
    assert np.array_equal(out == NODULE, truth)
    assert set(np.unique(out[(labels == NODULE) & ~truth])) == {LUNG}


def test_it_never_grows_into_a_class_other_than_the_host():
    # a juxta-pleural nodule: the chest wall beside it is as dense, and the network called it background
    image, labels, truth = _scene()
    wall = np.zeros(labels.shape, bool)
    wall[:, :, 23:] = True
    wall &= labels != NODULE
    image[wall] = 40.0
    labels[wall] = 0
    assert (wall & truth).any()  # part of the true nodule lies where the network saw wall
    out = refine_lesion_edges(labels, image, SPACING, NODULE, hosts=(LUNG,), reach_mm=3.0)
    assert not (out[labels == 0] == NODULE).any()
    assert ((out == NODULE) & truth).sum() > ((labels == NODULE) & truth).sum()  # it still grew into lung


def test_a_vessel_touching_the_nodule_is_taken_only_within_reach():
    image, labels, truth = _scene(radius=5.0, drawn=5.0)
    image[10, 20, :] = 30.0  # a vessel along x through the nodule
    out = refine_lesion_edges(labels, image, SPACING, NODULE, hosts=(LUNG,), reach_mm=2.0)
    taken = np.flatnonzero(out[10, 20] == NODULE)
    assert taken.min() >= 20 - 5 - 2 and taken.max() <= 20 + 5 + 2
    assert out[10, 20, 0] == LUNG and out[10, 20, 39] == LUNG


def test_a_dark_lesion_in_a_bright_organ_is_refined_the_same_way():
    image, labels, truth = _scene()
    image = -image  # a hypodense lesion: the contrast sign comes from the data
    out = refine_lesion_edges(labels, image, SPACING, NODULE, hosts=(LUNG,), reach_mm=3.0)
    assert np.array_equal(out == NODULE, truth)


def test_without_host_around_or_contrast_a_lesion_is_left_alone():
    image, labels, _ = _scene()
    flat = np.zeros_like(image)
    assert np.array_equal(refine_lesion_edges(labels, flat, SPACING, NODULE, (LUNG,)), labels)
    alone = np.where(labels == NODULE, NODULE, 0).astype(np.uint8)  # no lung voxels to compare against
    assert np.array_equal(refine_lesion_edges(alone, image, SPACING, NODULE, (LUNG,)), alone)
    with pytest.raises(ValueError, match="level"):
        refine_lesion_edges(labels, image, SPACING, NODULE, (LUNG,), level=1.0)
    with pytest.raises(ValueError, match="reach_mm"):
        refine_lesion_edges(labels, image, SPACING, NODULE, (LUNG,), reach_mm=0)


def test_the_card_turns_it_on_and_the_call_can_turn_it_off():
    image, labels, truth = _scene()
    extra = {"lesions": [NODULE], "lesion_hosts": [LUNG], "lesion_refine": {"reach_mm": 3.0, "level": 0.5}}
    prob = (labels == NODULE).astype(np.float32)
    refined = clean_with_card(labels, prob, SPACING, extra, image=image)
    assert np.array_equal(refined == NODULE, truth)
    assert np.array_equal(clean_with_card(labels, prob, SPACING, extra, image=image, lesion_refine=False), labels)
    assert np.array_equal(clean_with_card(labels, prob, SPACING, extra), labels)  # no image: nothing to refine by
    plain = {k: v for k, v in extra.items() if k != "lesion_refine"}
    assert np.array_equal(clean_with_card(labels, prob, SPACING, plain, image=image), labels)
    again = clean_with_card(labels, prob, SPACING, plain, image=image, lesion_refine={"reach_mm": 3.0})
    assert np.array_equal(again, refined)


def _finding_of(mask, score=0.9):
    """A Finding measured on ``mask`` the way the detector measures one."""
    from napari_medai.postprocess.findings import measure_finding

    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    return measure_finding(mask[box].astype(np.float32) * score, box, score, SPACING, np.diag([*SPACING, 1.0]))


def test_only_components_holding_a_marked_voxel_are_refined():
    image, labels, truth = _scene()
    labels[0:2, 0:3, 0:3] = NODULE  # a second, tiny component in lung far from the nodule
    image[0:3, 0:4, 0:4] = 30.0  # brighter than what was drawn: refinement would grow it
    only = np.zeros(labels.shape, bool)
    only[10, 20, 20] = True  # the nodule's centre
    out = refine_lesion_edges(labels, image, SPACING, NODULE, hosts=(LUNG,), reach_mm=3.0, only=only)
    assert np.array_equal(out[5:] == NODULE, truth[5:])  # the nodule moved to its contour
    assert np.array_equal(out[:3, :5, :5], labels[:3, :5, :5])  # the unmarked one did not
    grown = refine_lesion_edges(labels, image, SPACING, NODULE, hosts=(LUNG,), reach_mm=3.0)
    assert (grown[:3, :5, :5] == NODULE).sum() > (labels[:3, :5, :5] == NODULE).sum()


def test_the_cards_confidence_level_limits_the_refinement_to_sure_components():
    image, labels, truth = _scene()
    labels[0:2, 0:3, 0:3] = NODULE
    image[0:3, 0:4, 0:4] = 30.0
    prob = np.where(labels == NODULE, 0.6, 0.0).astype(np.float32)
    prob[10, 20, 20] = 1.0
    extra = {"lesions": [NODULE], "lesion_hosts": [LUNG], "lesion_confident": 0.99,
             "lesion_refine": {"reach_mm": 3.0, "level": 0.5}}
    out = clean_with_card(labels, prob, SPACING, extra, image=image)
    assert np.array_equal(out[5:] == NODULE, truth[5:])
    assert np.array_equal(out[:3, :5, :5], labels[:3, :5, :5])
    free = clean_with_card(labels, prob, SPACING, extra, image=image, lesion_confident=False)
    assert (free[:3, :5, :5] == NODULE).sum() > (labels[:3, :5, :5] == NODULE).sum()


def test_a_finding_drawn_too_small_is_remeasured_on_the_refined_mask():
    from napari_medai.postprocess.findings import lung_rads_category
    from napari_medai.postprocess.refine import refine_findings

    image, labels, truth = _scene(radius=4.0, drawn=2.5)  # an 8 mm nodule the network drew 5 mm wide
    small = _finding_of(labels == NODULE)
    assert small.lung_rads == "2"
    field = labels > 0
    (big,) = refine_findings([small], image, SPACING, field, reach_mm=3.0)
    whole = _finding_of(truth)
    assert big.volume_ml == pytest.approx(whole.volume_ml) and big.mean_diameter_mm == whole.mean_diameter_mm
    assert big.lung_rads == lung_rads_category(whole.mean_diameter_mm) != "2"
    assert big.center_voxel == small.center_voxel and big.score == small.score  # measured, not moved
    assert (small.outline, big.outline) == ("network", "half-maximum")  # the reports say which
    # bbox and mask still describe each other: painting the finding gives the refined nodule
    from dataclasses import replace

    from napari_medai.postprocess.findings import findings_mask

    assert np.array_equal(findings_mask([replace(big, label=1)], truth.shape) == 1, truth)


def test_refining_findings_grows_only_into_the_field():
    from napari_medai.postprocess.refine import refine_findings

    image, labels, truth = _scene(radius=4.0, drawn=2.5)
    field = np.zeros(labels.shape, bool)  # no organ field around it: nothing to grow into
    field[labels == NODULE] = True
    (same,) = refine_findings([_finding_of(labels == NODULE)], image, SPACING, field, reach_mm=3.0)
    assert same.volume_ml == _finding_of(labels == NODULE).volume_ml
    assert same.outline == "network"  # no lung around it to read the edge from: not refined


def test_a_finding_with_no_contrast_keeps_the_networks_outline_and_says_so():
    from napari_medai.postprocess.findings import measure_finding
    from napari_medai.postprocess.refine import refine_findings

    image, labels, _ = _scene(radius=4.0, drawn=2.5)
    nodule = labels == NODULE
    # as the detector measures it: the mask (p >= 0.5) inside its wider candidate box
    box = tuple(slice(s.start - 2, s.stop + 2) for s in ndimage.find_objects(nodule.astype(np.uint8))[0])
    drawn = measure_finding(nodule[box] * 0.9, box, 0.9, SPACING, np.diag([*SPACING, 1.0]))
    (flat,) = refine_findings([drawn], np.zeros_like(image), SPACING, labels > 0, reach_mm=3.0)
    assert flat.outline == "network" and flat.volume_ml == drawn.volume_ml
    # the box still shrinks to the mask, as for a refined finding
    tight = ndimage.find_objects(nodule.astype(np.uint8))[0]
    assert flat.bbox_voxel == [[s.start for s in tight], [s.stop for s in tight]] != drawn.bbox_voxel
    assert flat.mask.shape == tuple(s.stop - s.start for s in tight)


def test_a_finding_refined_in_one_piece_only_reads_mixed():
    from napari_medai.postprocess.findings import measure_finding
    from napari_medai.postprocess.refine import refine_findings

    image, labels, _ = _scene(radius=4.0, drawn=2.5)
    mask = labels == NODULE
    mask[17:19, 34:37, 34:37] = True  # a second piece of the same finding, in lung of its own HU: no contrast
    image[16:20, 33:38, 33:38] = -880.0
    box = (slice(0, 20), slice(0, 40), slice(0, 40))
    drawn = measure_finding(mask.astype(np.float32), box, 0.9, SPACING, np.diag([*SPACING, 1.0]))
    (both,) = refine_findings([drawn], image, SPACING, np.ones(mask.shape, bool), reach_mm=3.0)
    assert both.outline == "mixed" and both.volume_ml > drawn.volume_ml


def test_a_piece_the_refinement_splits_off_under_the_minimum_size_goes_back_to_the_lung():
    """Moving the edge can split a lesion: a 2 mm³ speck was left and reported as a nodule of its
    own, under the card's 10 mm³ minimum (found by an audit helper)."""
    import json
    from importlib.resources import files

    from scipy import ndimage

    from napari_medai.postprocess.components import clean_with_card

    extra = json.loads((files("napari_medai") / "models" / "weights" / "chest-ct-lung-nodule.json").read_text())["extra"]
    labels = np.ones((30, 30, 40), np.uint8)
    image = np.full(labels.shape, -850.0, np.float32)
    labels[13:18, 13:18, 13:18], image[13:18, 13:18, 13:18] = 2, 40.0  # the nodule
    labels[15, 15, 18:21] = 2  # the network's label runs on
    image[15, 15, 18], image[15, 15, 19:21] = -800.0, 40.0  # through a gap into a 2-voxel speck
    prob = np.where(labels == 2, 0.999, 0.0).astype(np.float32)
    out = clean_with_card(labels, prob, (1.0, 1.0, 1.0), extra, image=image)
    pieces, n = ndimage.label(out == 2, np.ones((3, 3, 3)))
    assert n == 1 and (out[15, 15, 19:21] == 1).all()  # the speck is lung again
