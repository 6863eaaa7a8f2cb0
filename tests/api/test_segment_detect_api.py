"""``napari_medai.segment`` / ``detect`` with fixed-rule models: checkable labels and findings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixed_rule_models import blob_volume, detection_card, expected_labels, install, segmentation_card

import napari_medai
from napari_medai.postprocess.report import findings_to_json

SPACING = (2.0, 1.0, 1.0)
# Three blobs in a lung-like background, brightest first: 200 HU, 0 HU, -200 HU.
BLOBS = ((4, 8, 8, 2, 200.0), (10, 20, 20, 2, 0.0), (12, 6, 25, 1, -200.0))
JSON_KEYS = {"center_voxel", "center_mm", "bbox_voxel", "diameter_mm", "volume_ml", "score", "lung_rads"}


@pytest.fixture
def seg_model(tmp_path):
    return str(install(segmentation_card(), tmp_path))


@pytest.fixture
def det_model(tmp_path):
    return str(install(detection_card(), tmp_path))


def test_segment_labels_follow_the_rule_with_the_cards_classes(seg_model):
    volume = blob_volume(blobs=BLOBS)
    result = napari_medai.segment(volume, SPACING, model=seg_model)
    np.testing.assert_array_equal(result.labels, expected_labels(volume))
    assert {i: c["name"] for i, c in result.classes.items()} == {0: "background", 1: "lung", 2: "nodule"}
    assert result.classes[2]["color"] == "#e6194b"
    nodule = next(row for row in result.volumes if row["name"] == "nodule")
    voxels = 5 ** 3 + 5 ** 3 + 3 ** 3
    assert nodule["voxels"] == voxels and nodule["volume_ml"] == pytest.approx(voxels * 2.0 / 1000)
    assert result.lesion_probability.shape == volume.shape
    assert result.lesion_probability[4, 8, 8] > 0.9 and result.lesion_probability[0, 0, 0] < 0.05
    labels, classes = result  # the documented unpacking
    assert labels is result.labels and classes is result.classes


def test_segment_resamples_to_the_card_spacing_and_lands_on_the_input_grid(tmp_path):
    model = str(install(segmentation_card(name="coarse", spacing=(4.0, 2.0, 2.0)), tmp_path))
    volume = blob_volume(shape=(16, 32, 32), blobs=((8, 16, 16, 4, 200.0),))
    labels = napari_medai.segment(volume, SPACING, model=model).labels
    assert labels.shape == volume.shape
    assert labels[8, 16, 16] == 2 and labels[8, 13:20, 13:20].min() == 2  # the blob's core
    assert labels[0, 0, 0] == 1 and labels[8, 2, 2] == 1


def test_the_calls_minimum_lesion_size_overrides_the_cards(tmp_path):
    card = segmentation_card(name="min-size")
    card.extra["min_lesion_mm3"] = 100.0  # the small blob (27 voxels, 54 mm³) goes, 250 mm³ stay
    model = str(install(card, tmp_path))
    volume = blob_volume(blobs=((4, 8, 8, 2, 200.0), (12, 20, 20, 1, 200.0)))
    by_card = napari_medai.segment(volume, SPACING, model=model).labels
    assert by_card[4, 8, 8] == 2 and by_card[12, 20, 20] == 0
    assert (by_card == 2).sum() == 125
    kept = napari_medai.segment(volume, SPACING, model=model, min_lesion_mm3=0.0).labels
    assert kept[12, 20, 20] == 2 and (kept == 2).sum() == 125 + 27
    raw = napari_medai.segment(volume, SPACING, model=model, postprocess=False).labels
    np.testing.assert_array_equal(raw, expected_labels(volume))


def test_organs_keep_their_largest_components(tmp_path):
    card = segmentation_card(name="organs")
    card.extra["organs"] = {"1": 1}
    model = str(install(card, tmp_path))
    volume = blob_volume(blobs=())
    volume[:, :, 24:26] = -400.0  # a wall (background class) cuts off a small lung part
    labels = napari_medai.segment(volume, SPACING, model=model).labels
    assert (labels[:, :, :24] == 1).all()
    assert (labels[:, :, 26:] == 0).all()


def test_detect_ranks_findings_by_score_with_the_json_keys(det_model):
    volume = blob_volume(blobs=BLOBS)
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-40.0, 10.0, 20.0)
    findings = napari_medai.detect(volume, SPACING, model=det_model, affine=affine)
    assert [f.center_voxel for f in findings] == [[4.0, 8.0, 8.0], [10.0, 20.0, 20.0], [12.0, 6.0, 25.0]]
    scores = [f.score for f in findings]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0.5
    assert [f.label for f in findings] == [1, 2, 3]
    top = findings[0]
    np.testing.assert_allclose(top.center_mm, [4 * 2.0 - 40.0, 8.0 + 10.0, 8.0 + 20.0])
    assert top.bbox_voxel == [[2, 6, 6], [7, 11, 11]]
    assert top.volume_ml == pytest.approx(125 * 2.0 / 1000)
    # a 5 mm cube: calipers lie along its diagonals (6.0 mm with the corners rounded), so 3
    assert (top.diameter_mm, top.short_axis_mm, top.lung_rads) == (6.0, 6.0, "3")
    records = json.loads(findings_to_json(findings))
    assert [r["rank"] for r in records] == [1, 2, 3]
    assert JSON_KEYS <= set(records[0])


def test_detect_reads_each_findings_attenuation_from_the_ct(tmp_path):
    from fixed_rule_models import unit

    # a rule that also takes ground glass (-500 HU) as nodule, as a network trained on it would
    model = str(install(detection_card(name="rule-det-ggo", nodule_above=unit(-650)), tmp_path))
    # cubes of ground glass (11 voxels), ground glass (13) around a solid core (7), solid (9)
    volume = blob_volume(shape=(20, 48, 48), blobs=((5, 12, 12, 5, -500.0), (13, 34, 34, 6, -500.0),
                                                    (13, 34, 34, 3, 200.0), (5, 36, 10, 4, 60.0)))
    found = {tuple(np.rint(f.center_voxel).astype(int)): f for f in napari_medai.detect(volume, SPACING, model=model)}
    glass, part, solid = found[(5, 12, 12)], found[(13, 34, 34)], found[(5, 36, 10)]
    assert (glass.attenuation, glass.solid_diameter_mm, glass.lung_rads_by_attenuation) == ("ground-glass", 0.0, "2")
    assert glass.lung_rads == "4A"  # its size alone would say 4A
    assert part.attenuation == "part-solid" and 6.5 <= part.solid_diameter_mm < 8.0  # the 7 mm core
    assert part.lung_rads == "4B" and part.lung_rads_by_attenuation == "4A"
    assert solid.attenuation == "solid" and solid.lung_rads_by_attenuation == solid.lung_rads == "4A"
    records = json.loads(findings_to_json(list(found.values())))
    assert {"attenuation", "solid_diameter_mm", "lung_rads_by_attenuation"} <= set(records[0])


def test_findings_of_a_detector_for_other_than_ct_get_no_attenuation(det_model):
    from napari_medai.api import _with_attenuation
    from napari_medai.models import load_model

    card = load_model(det_model).card
    findings = napari_medai.detect(blob_volume(blobs=BLOBS), SPACING, model=det_model)
    assert all(f.attenuation == "solid" for f in findings)  # 200, 0 and -200 HU blobs
    for f in findings:
        f.attenuation, f.lung_rads_by_attenuation = "", ""
    card.modality = "MR"
    assert all(f.attenuation == "" for f in _with_attenuation(card, findings, blob_volume(blobs=BLOBS), SPACING))


def test_detect_score_threshold_and_max_findings(det_model):
    volume = blob_volume(blobs=BLOBS)
    all_scores = [f.score for f in napari_medai.detect(volume, SPACING, model=det_model)]
    threshold = (all_scores[1] + all_scores[2]) / 2
    kept = napari_medai.detect(volume, SPACING, model=det_model, score_threshold=threshold)
    assert [f.score for f in kept] == all_scores[:2]
    assert len(napari_medai.detect(volume, SPACING, model=det_model, max_findings=1)) == 1
    assert len(napari_medai.detect(volume, SPACING, model=det_model, max_findings=2.0)) == 2  # a whole float
    from napari_medai.errors import InputError

    for bad in ("3", -1, 1.5, True):
        with pytest.raises(InputError, match="max_findings must be a whole number"):
            napari_medai.detect(volume, SPACING, model=det_model, max_findings=bad)


def test_a_denoising_model_is_refused_for_segmentation_and_detection():
    from napari_medai.errors import ModelError

    volume = blob_volume(blobs=BLOBS)
    for call, use in ((napari_medai.segment, "segmentation"), (napari_medai.detect, "detection")):
        with pytest.raises(ModelError, match=f"is a denoising model, not a {use} model"):
            call(volume, SPACING, model="ct-lowdose-denoising")


def test_detect_reports_progress_and_cancel_leaves_nothing(det_model):
    from napari_medai.errors import Cancelled
    from napari_medai.inference import CancelToken

    volume = blob_volume(blobs=BLOBS)
    seen = []
    napari_medai.detect(volume, SPACING, model=det_model, progress=lambda done, total: seen.append((done, total)))
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] > 0
    token = CancelToken()

    def cancel_after_first(done, total):
        if done:
            token.cancel()

    with pytest.raises(Cancelled):
        napari_medai.detect(volume, SPACING, model=det_model, progress=cancel_after_first, cancel=token)


def test_the_cards_lesion_threshold_recovers_faint_lesions(tmp_path):
    # a -350 HU blob: nodule probability ~0.34 under the rule, so the argmax calls it background
    volume = blob_volume(blobs=((8, 16, 16, 2, -350.0),))
    plain = str(install(segmentation_card(name="argmax-only"), tmp_path))
    assert napari_medai.segment(volume, SPACING, model=plain).labels[8, 16, 16] == 0
    card = segmentation_card(name="with-threshold")
    card.extra["lesion_threshold"] = 0.3
    model = str(install(card, tmp_path))
    result = napari_medai.segment(volume, SPACING, model=model)
    assert 0.3 < result.lesion_probability[8, 16, 16] < 0.5
    assert (result.labels[6:11, 14:19, 14:19] == 2).all()
    assert result.labels[0, 0, 0] == 1  # the background "lung" is untouched
    # the raw output (postprocess=False) stays the plain argmax
    assert napari_medai.segment(volume, SPACING, model=model, postprocess=False).labels[8, 16, 16] == 0


def _patient_under_a_blanket():
    """Outside air (-1000) above a body that fills the rest of the field of view (-400 HU, the
    rule model's background) holding a lung (-850) with a nodule (200), under a thin blanket
    whose trapped air (rows 5-9) is as dark as lung, with a bright fleck in it."""
    volume = np.full((12, 64, 64), -1000.0, np.float32)
    volume[:, 10:, :] = -400.0
    volume[:, 22:46, 16:48] = -850.0
    volume[4:8, 32:36, 30:34] = 200.0  # nodule in the lung
    volume[:, 3:5, 2:62] = -400.0  # blanket
    volume[4:7, 6:8, 20:23] = 200.0  # a bright fleck in the air under it
    return volume


def test_inside_body_removes_lung_and_lesions_outside_the_patient(tmp_path):
    card = segmentation_card(name="body")
    card.extra["inside_body"] = [1, 2]
    model = str(install(card, tmp_path))
    volume = _patient_under_a_blanket()
    labels = napari_medai.segment(volume, SPACING, model=model).labels
    lung = np.s_[:, 22:46, 16:48]
    assert (labels[lung][volume[lung] < -500] == 1).all()  # the lung stays
    assert labels[5, 33, 31] == 2  # and its nodule
    assert not labels[:, 5:10].any()  # the air under the blanket is no lung, its fleck no nodule
    plain = napari_medai.segment(volume, SPACING, model=str(install(segmentation_card(name="plain"), tmp_path)))
    assert (plain.labels[:, 5:10] == 1).any() and (plain.labels[:, 5:10] == 2).any()  # without the card's rule it was


def test_detection_field_excludes_outside_the_body(tmp_path):
    card = detection_card(name="det-body")
    card.extra.update(within_classes=[1], margin_mm=5.0, inside_body=True, candidate_threshold=0.4)
    volume = _patient_under_a_blanket()
    found = napari_medai.detect(volume, SPACING, model=str(install(card, tmp_path)))
    assert len(found) == 1 and found[0].center_voxel[1] > 20  # only the nodule in the lung
    card.extra["inside_body"] = False
    card.name = "det-nobody"
    found_all = napari_medai.detect(volume, SPACING, model=str(install(card, tmp_path)))
    assert any(f.center_voxel[1] < 10 for f in found_all)


def _nodule_with_a_rim():
    """A 200 HU core (5 voxels wide) with a -300 HU rim one voxel thick in lung (-850 HU): a rule
    that calls voxels above -100 HU nodule and below -200 HU lung draws the core and calls the rim
    lung; the half-maximum contour between core and lung (-325 HU) takes the rim too."""
    volume = np.full((16, 40, 40), -850.0, np.float32)
    volume[5:12, 17:24, 17:24] = -300.0
    volume[6:11, 18:23, 18:23] = 200.0
    return volume


def test_the_cards_edge_refinement_moves_segmented_lesion_edges_to_the_half_maximum(tmp_path):
    from fixed_rule_models import unit

    volume = _nodule_with_a_rim()
    card = segmentation_card(name="core-only", lung_below=unit(-200), nodule_above=unit(-100))
    card.extra.update(lesion_hosts=[1])
    plain = napari_medai.segment(volume, SPACING, model=str(install(card, tmp_path))).labels
    assert (plain == 2).sum() == 5 * 5 * 5
    card.name, card.extra["lesion_refine"] = "edges", {"reach_mm": 2.5, "level": 0.5}
    refined = napari_medai.segment(volume, SPACING, model=str(install(card, tmp_path))).labels
    assert np.array_equal(refined == 2, volume > -500)  # core and rim
    assert np.array_equal(refined[volume < -500], plain[volume < -500])  # the lung elsewhere untouched


def test_the_detectors_mask_refinement_remeasures_each_finding(tmp_path):
    from fixed_rule_models import unit

    volume = _nodule_with_a_rim()
    card = detection_card(name="core-det", lung_below=unit(-200), nodule_above=unit(-100))
    (core,) = napari_medai.detect(volume, SPACING, model=str(install(card, tmp_path)))
    card.name, card.extra["mask_refine"] = "rim-det", {"reach_mm": 2.5, "level": 0.5}
    (whole,) = napari_medai.detect(volume, SPACING, model=str(install(card, tmp_path)))
    assert core.volume_ml == pytest.approx(125 * 2.0 / 1000)
    assert whole.volume_ml == pytest.approx((volume > -500).sum() * 2.0 / 1000)
    assert whole.mean_diameter_mm > core.mean_diameter_mm
    assert whole.center_voxel == core.center_voxel and whole.score == core.score
    (drawn,) = napari_medai.detect(volume, SPACING, model=str(tmp_path / "rim-det.json"), refine_masks=False)
    assert drawn.volume_ml == core.volume_ml  # the call can keep the masks as the network draws them


def test_settings_as_a_dict_and_bad_calls_get_clear_messages(seg_model, det_model):
    from napari_medai.errors import InputError

    volume = blob_volume(blobs=BLOBS)
    as_dict = napari_medai.segment(volume, SPACING, model=seg_model, settings={"precision": "fp32", "tta": "off"})
    np.testing.assert_array_equal(as_dict.labels, expected_labels(volume))  # as denoise() takes them
    with pytest.raises(InputError, match=r"unknown inference setting\(s\) \['colour'\]"):
        napari_medai.segment(volume, SPACING, model=seg_model, settings={"colour": "red"})
    for call, model in ((napari_medai.segment, seg_model), (napari_medai.detect, det_model)):
        with pytest.raises(InputError, match="voxel spacing is needed"):
            call(volume, None, model=model)
    with pytest.raises(InputError, match="affine must be a 4x4 matrix"):
        napari_medai.detect(volume, SPACING, model=det_model, affine=np.eye(3))
    for bad in (-1.0, float("nan")):
        with pytest.raises(InputError, match="minimum lesion size must be 0"):
            napari_medai.segment(volume, SPACING, model=seg_model, min_lesion_mm3=bad)


def test_a_detector_card_segments_with_its_inside_body_flag(tmp_path):
    # the shipped detector card says inside_body: true (a segmentation card lists classes): its
    # field, within_classes and the probability channel, is kept inside the body, as detect() does
    card = detection_card(name="det-seg")
    card.extra.update(within_classes=[1], inside_body=True)
    volume = _patient_under_a_blanket()
    labels = napari_medai.segment(volume, SPACING, model=str(install(card, tmp_path))).labels
    assert labels[5, 33, 31] == 2 and (labels[:, 22:46, 16:48][volume[:, 22:46, 16:48] < -500] == 1).all()
    assert not labels[:, 5:10].any()  # the blanket's air is no lung, its fleck no nodule
    from napari_medai.postprocess.components import inside_body_classes

    assert inside_body_classes({"inside_body": False, "within_classes": [1]}) == []
    assert inside_body_classes({"inside_body": [1, 2]}) == [1, 2]


def test_a_box_detector_is_refused_for_segmentation(tmp_path):
    from napari_medai.errors import ModelError

    card = detection_card(name="boxes")
    card.extra["method"] = "boxes"  # as a RetinaNet bundle's card: findings, no class probabilities
    with pytest.raises(ModelError, match="'boxes' is a box detector: it gives findings, not labels"):
        napari_medai.segment(blob_volume(blobs=BLOBS), SPACING, model=str(install(card, tmp_path)))


def test_a_singleton_channel_axis_is_dropped_before_the_clean_up(tmp_path):
    card = segmentation_card(name="body-1")
    card.extra["inside_body"] = [1, 2]  # the clean-up reads the image: it must see the model's grid
    model = str(install(card, tmp_path))
    volume = _patient_under_a_blanket()
    plain = napari_medai.segment(volume, SPACING, model=model).labels
    det = detection_card(name="det-1")
    det.extra.update(within_classes=[1], inside_body=True, candidate_threshold=0.4)
    det = str(install(det, tmp_path))
    found = [f.center_voxel for f in napari_medai.detect(volume, SPACING, model=det)]
    for given in (volume[None], volume[..., None]):
        np.testing.assert_array_equal(napari_medai.segment(given, SPACING, model=model).labels, plain)
        assert [f.center_voxel for f in napari_medai.detect(given, SPACING, model=det)] == found


@pytest.mark.parametrize("bad", [float("nan"), -0.1, 1.5, "0.5", None, True])
def test_a_score_threshold_that_is_no_score_is_refused_before_a_model_loads(bad):
    from napari_medai.errors import InputError

    with pytest.raises(InputError, match="score_threshold must be a score between 0 and 1"):
        napari_medai.detect(np.zeros((4, 8, 8)), SPACING, model="no-such-model", score_threshold=bad)


def test_a_2d_model_on_a_slice_gives_labels_on_the_slices_grid(tmp_path):
    """A (y, x) slice for a 2D model: labels, lesion probability and outline centres are (y, x),
    as the slice was given (they used to come back as (1, y, x))."""
    from dataclasses import replace

    from napari_medai.errors import InputError

    card = replace(segmentation_card(name="rule-seg-2d"), spatial_dims=2, roi_size=(32, 32))
    model = str(install(card, tmp_path))
    one = blob_volume(shape=(3, 32, 32), blobs=((1, 10, 12, 1, 200.0),))[1]
    result = napari_medai.segment(one, SPACING, model=model)
    assert result.labels.shape == result.lesion_probability.shape == (32, 32)
    np.testing.assert_array_equal(result.labels, expected_labels(one))
    nodule = next(row for row in result.volumes if row["name"] == "nodule")
    assert nodule["voxels"] == 9 and nodule["volume_ml"] == pytest.approx(9 * 2.0 / 1000)  # 2 mm thick
    assert [row["center_voxel"] for row in result.lesion_outlines] == [(10, 12)]
    with pytest.raises(InputError, match="slice thickness"):
        napari_medai.segment(one, (1.0, 1.0), model=model)


def test_a_3d_model_on_a_slice_says_it_needs_a_volume(seg_model):
    """A (y, x) slice for a 3D model was padded to (1, y, x) and refused as "too small" (found by a
    reviewer); the model's own words name what it needs."""
    from napari_medai.errors import ModelError

    with pytest.raises(ModelError, match=r"expects a 3D volume \(z, y, x\), the image has 2 dimension"):
        napari_medai.segment(blob_volume()[4], SPACING, model=seg_model)
