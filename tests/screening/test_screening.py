"""``napari_medai.screening.screen`` with fixed-rule models on a two-lung toy chest."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from fixed_rule_models import detection_card, install, segmentation_card
from fixed_rule_models import two_lung_chest as toy_chest

import napari_medai
import napari_medai.inference as inference
from napari_medai.errors import InputError
from napari_medai.models.card import save_card
from napari_medai.postprocess.findings import Finding
from napari_medai.screening import screen, screening_markdown, screening_record

SPACING = (2.0, 1.0, 1.0)  # world = voxel x spacing: S grows with z, L with x


@pytest.fixture
def shared_models(tmp_path):
    """A segmentation card and a detection card on the same weights file, as the built-ins."""
    seg_path = install(segmentation_card(name="rule-seg"), tmp_path)
    seg = json.loads(seg_path.read_text())
    det = detection_card(name="rule-det")
    det.weights, det.sha256 = seg["weights"], seg["sha256"]
    det_path = save_card(det, tmp_path / "rule-det.json")
    return str(det_path), str(seg_path)


def _count_runs(monkeypatch):
    calls = []
    real = inference.run_model

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "run_model", counting)
    return calls


def test_findings_get_side_zone_and_segmented_volume(shared_models):
    det, seg = shared_models
    result = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    assert len(result.findings) == 2
    by_side = {s.side: s for s in result.findings}
    # the 11-voxel blob in the left lung's top slices, the 3-voxel one low in the right lung
    assert by_side["left"].zone == "upper" and by_side["right"].zone == "lower"
    assert by_side["left"].finding.lung_rads == "4A" and by_side["right"].finding.lung_rads == "2"
    assert by_side["left"].segmented_volume_ml == pytest.approx(11 ** 3 * 2.0 / 1000)
    assert by_side["right"].segmented_volume_ml == pytest.approx(3 ** 3 * 2.0 / 1000)
    assert result.category == "4A"
    lung_voxels = 26 * 30 * 24 - 11 ** 3  # the left box less its blob
    assert result.lung_volumes_ml["left"] == pytest.approx(lung_voxels * 2.0 / 1000)
    assert result.lung_volumes_ml["right"] == pytest.approx((26 * 30 * 24 - 3 ** 3) * 2.0 / 1000)
    assert result.labels.shape == (30, 40, 60)
    # the 11-voxel cube spans 22 mm along the body on 2 mm slices, 11 mm across (14.5 mm along
    # the diagonal the calipers take): measure it coronally
    elongated, drawn = result.notes
    assert "(20 mm along the body axis, 14.5 mm axial long axis) is longer craniocaudally" in elongated
    # neither toy card refines: both are measured on the network's outline, and the small one is noted
    small = 1 + [s.side for s in result.findings].index("right")
    assert drawn.startswith(f"finding {small} is measured (at least in part) on the network's outline as drawn")
    assert "-57 % as drawn, -9 % on the half-maximum edge" in drawn
    assert {s.finding.outline for s in result.findings} == {"network"}
    assert {s.segmented_outline for s in result.findings} == {"network"}
    assert [row["outline"] for row in result.lesion_outlines] == ["network", "network"]


def test_one_network_run_feeds_both_and_matches_the_separate_calls(shared_models, monkeypatch):
    det, seg = shared_models
    volume = toy_chest()
    calls = _count_runs(monkeypatch)
    result = screen(volume, SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    assert len(calls) == 1 and "detect + segment (one network run)" in result.times_s
    alone = napari_medai.detect(volume, SPACING, model=det, score_threshold=0.5, max_findings=20)
    labels = napari_medai.segment(volume, SPACING, model=seg).labels
    np.testing.assert_array_equal(result.labels, labels)
    assert [s.finding.to_dict() for s in result.findings] == [f.to_dict() for f in alone]


def test_full_mirroring_for_the_detector_serves_a_segmentation_mirrored_at_lesions(shared_models, monkeypatch):
    # the detector's candidates start below the level that limits "mirror-lesions": the one shared
    # run mirrors every window, and the report says so for both steps
    det, seg = shared_models
    for path, tta in ((det, "mirror"), (seg, "mirror-lesions")):
        card = json.loads(open(path).read())
        card["extra"]["tta"] = tta
        open(path, "w").write(json.dumps(card))
    seen = []
    real = inference.run_model

    def spy(model, volume, spacing=None, settings=None, **kwargs):
        seen.append(settings.tta)
        return real(model, volume, spacing, settings, **kwargs)

    monkeypatch.setattr(inference, "run_model", spy)
    volume = toy_chest()
    result = screen(volume, SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    assert seen == ["mirror"]
    assert result.models["detect"]["tta"] == "mirror" and result.models["segment"]["tta"] == "mirror"
    alone = napari_medai.detect(volume, SPACING, model=det, score_threshold=0.5, max_findings=20)
    assert [s.finding.to_dict() for s in result.findings] == [f.to_dict() for f in alone]
    # asked for explicitly, both steps run it
    seen.clear()
    result = screen(volume, SPACING, detector=det, segmenter=seg, score_threshold=0.5,
                    settings=inference.InferenceSettings(tta="mirror-lesions"))
    assert seen == ["mirror-lesions"] and result.models["segment"]["tta"] == "mirror-lesions"
    # the other way round: a segmentation card asking for full mirroring gets it
    for path, tta in ((det, "mirror-lesions"), (seg, "mirror")):
        card = json.loads(open(path).read())
        card["extra"]["tta"] = tta
        open(path, "w").write(json.dumps(card))
    seen.clear()
    result = screen(volume, SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    assert seen == ["mirror"] and result.models["segment"]["tta"] == result.models["detect"]["tta"] == "mirror"


def test_one_run_mirrors_from_the_lower_of_the_two_cards_focus_levels(shared_models, monkeypatch):
    # the built-in detector mirrors from 0.01, the segmentation from its default 0.05: the one
    # shared run takes 0.01, so the findings are the detector's own, and the report says so
    det, seg = shared_models
    for path, extra in ((det, {"tta": "mirror-lesions", "focus_probability": 0.01}), (seg, {"tta": "mirror-lesions"})):
        card = json.loads(open(path).read())
        card["extra"].update(extra)
        open(path, "w").write(json.dumps(card))
    seen = []
    real = inference.run_model

    def spy(model, volume, spacing=None, settings=None, **kwargs):
        seen.append((settings.tta, settings.focus_probability))
        return real(model, volume, spacing, settings, **kwargs)

    monkeypatch.setattr(inference, "run_model", spy)
    volume = toy_chest()
    result = screen(volume, SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    assert seen == [("mirror-lesions", 0.01)]
    for step in ("detect", "segment"):
        assert result.models[step]["tta"] == "mirror-lesions" and result.models[step]["focus_probability"] == 0.01
    assert "mirroring mirror-lesions from p >= 0.01" in screening_markdown(result)
    alone = napari_medai.detect(volume, SPACING, model=det, score_threshold=0.5, max_findings=20)
    assert [s.finding.to_dict() for s in result.findings] == [f.to_dict() for f in alone]
    # asked for in the settings, that level serves both
    seen.clear()
    result = screen(volume, SPACING, detector=det, segmenter=seg, score_threshold=0.5,
                    settings=inference.InferenceSettings(focus_probability=0.2))
    assert seen == [("mirror-lesions", 0.2)] and result.models["segment"]["focus_probability"] == 0.2


def test_a_cards_bad_focus_level_is_refused_before_the_denoiser_runs(tmp_path, monkeypatch):
    import napari_medai.denoising as denoising
    from napari_medai.errors import ModelError

    card = detection_card(name="bad-focus-det")
    card.extra.update({"tta": "mirror-lesions", "focus_probability": 0})
    det = str(install(card, tmp_path))
    seg = str(install(segmentation_card(name="other-seg"), tmp_path))  # other weights: two runs
    monkeypatch.setattr(denoising, "denoise", lambda *a, **k: pytest.fail("the denoiser ran"))
    with pytest.raises(ModelError, match="focus_probability"):
        screen(toy_chest(), SPACING, detector=det, segmenter=seg, denoise=True)


def test_different_weights_run_twice(tmp_path, monkeypatch):
    det = str(install(detection_card(name="other-det"), tmp_path))
    seg = str(install(segmentation_card(name="other-seg"), tmp_path))
    calls = _count_runs(monkeypatch)
    result = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    assert len(calls) == 2 and set(result.times_s) == {"detect", "segment"}
    assert len(result.findings) == 2


def test_the_world_affine_decides_the_side(shared_models):
    """Mirrored left-right in the array, the same patient: the affine's L axis says which is which."""
    det, seg = shared_models
    volume = toy_chest()[:, :, ::-1].copy()  # the 4A blob now sits at small x
    affine = np.diag([2.0, 1.0, -1.0, 1.0])  # ... where L is large: x runs from the patient's left
    result = screen(volume, SPACING, affine, detector=det, segmenter=seg, score_threshold=0.5)
    big = max(result.findings, key=lambda s: s.finding.volume_ml)
    assert big.side == "left" and big.zone == "upper"


def test_no_finding_is_category_1_and_one_lung_gets_no_side(shared_models):
    det, seg = shared_models
    empty = screen(toy_chest(blobs=()), SPACING, detector=det, segmenter=seg)
    assert empty.findings == [] and empty.category == "1"
    text = screening_markdown(empty)
    # Lung-RADS 1 is a reader's negative read: the software's silence is said to be no such thing
    assert "**No nodule reported by the software**" in text and "This is not a negative screen" in text
    assert "Limits: research software, not a medical device" in text
    record = json.loads(json.dumps(screening_record(empty)))
    assert record["limits"][0].startswith("research software") and record["headline_category"] is None
    assert "does not rule out nodules under 6 mm" in screening_markdown(empty)
    one = screen(toy_chest(blobs=((21, 20, 15, 5, 200.0),), lungs=("right",)), SPACING, detector=det,
                 segmenter=seg, score_threshold=0.5)
    assert [(s.side, s.zone) for s in one.findings] == [("", "")]
    assert set(one.lung_volumes_ml) == {"lungs"} and "two lungs" in one.notes[0]


def test_a_single_lung_with_a_sliver_beside_it_gets_no_side(shared_models):
    """One lung plus a few face-disconnected voxels of lung class (a pneumonectomy, a collapsed
    lung, a crop): the sliver used to become "the other lung" and send findings to the wrong side."""
    det, seg = shared_models
    volume = toy_chest(blobs=((21, 20, 15, 5, 200.0),), lungs=("right",))
    volume[10:12, 20:22, 50:52] = -850.0  # 8 voxels far from the right lung, where the left would be
    result = screen(volume, SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    assert [(s.side, s.zone) for s in result.findings] == [("", "")]
    assert set(result.lung_volumes_ml) == {"lungs"} and any("two lungs" in n for n in result.notes)


def test_report_record_and_markdown_carry_the_fields(shared_models):
    det, seg = shared_models
    result = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    record = json.loads(json.dumps(screening_record(result, "toy.nii.gz")))
    assert record["highest_size_category"] == "4A" and record["source"] == "toy.nii.gz"
    assert record["highest_category_by_attenuation"] == "4A"  # both 200 HU blobs read solid
    first = record["findings"][0]
    assert {"rank", "slice", "side", "zone", "segmented_volume_ml", "center_mm", "diameter_mm", "volume_ml",
            "lung_rads", "score", "attenuation", "solid_diameter_mm", "lung_rads_by_attenuation"} <= set(first)
    assert [f["attenuation"] for f in record["findings"]] == ["solid", "solid"]
    assert first["rank"] == 1 and first["slice"] == int(np.floor(first["center_voxel"][0] + 0.5))
    assert record["models"]["segment"]["sha256"] == record["models"]["detect"]["sha256"] != ""
    text = screening_markdown(result, "toy.nii.gz")
    assert "decision support, not a diagnosis" in text
    # every finding's attenuation was read: the headline is the category by type, size alone after it
    assert "**Highest Lung-RADS category (v2022, baseline screen, by each nodule's attenuation) among the " \
        "reported findings: 4A**" in text and "By size alone, as if every nodule were solid: 4A." in text
    assert record["headline_category"] == "4A" and "napari's slider" in record["slice_convention"]
    s_mm, p_mm, l_mm = first["center_mm"]
    assert first["center_lps_mm"] == [round(l_mm, 2), round(p_mm, 2), round(s_mm, 2)]  # DICOM (x, y, z)
    # the slice with its S position, both axes and the volume in mm3 as Lung-RADS gives them
    f = result.findings[0].finding
    assert (f"| {first['slice']} ({s_mm:.1f}) | {f.diameter_mm:.1f} | {f.short_axis_mm:.1f} | "
            f"{f.mean_diameter_mm:.1f} | {f.volume_ml * 1000:.0f} |") in text
    assert "| 1 |" in text and "| 2 |" in text and "rule-seg" in text
    assert "| 4A | solid: 4A |" in text and "*Attenuation*: read from the CT" in text
    # the toy segmentation does not refine: each segmented volume is marked as the network's outline
    seg_mm3 = result.findings[0].segmented_volume_ml * 1000
    assert f"| {seg_mm3:.0f}‡ |" in text and "‡ *segmented* volume not (all) on the CT's half-maximum edge" in text
    assert first["outline"] == first["segmented_outline"] == "network"
    assert [row["outline"] for row in record["segmented_lesions"]] == ["network", "network"]


def test_bad_input_is_refused_before_any_model_runs(shared_models, monkeypatch):
    det, seg = shared_models
    calls = _count_runs(monkeypatch)
    with pytest.raises(InputError, match="3D"):
        screen(np.zeros((40, 60), np.float32), SPACING[1:], detector=det, segmenter=seg)
    with pytest.raises(InputError, match="4x4"):
        screen(toy_chest(), SPACING, np.eye(3), detector=det, segmenter=seg)
    # a NaN affine crashed placing the findings ("cannot convert float NaN to integer"), a singular one
    # put every voxel at one point
    with pytest.raises(InputError, match="NaN or infinite"):
        screen(toy_chest(), SPACING, np.full((4, 4), np.nan), detector=det, segmenter=seg)
    with pytest.raises(InputError, match="singular"):
        screen(toy_chest(), SPACING, np.zeros((4, 4)), detector=det, segmenter=seg)
    with pytest.raises(InputError, match="constant"):
        screen(np.full((30, 40, 60), -850.0, np.float32), SPACING, detector=det, segmenter=seg)
    with pytest.raises(InputError, match="spacing"):
        screen(toy_chest(), (2.0, 1.0), detector=det, segmenter=seg)
    with pytest.raises(InputError, match="spacing"):
        screen(toy_chest(), (2.0, 1.0, -1.0), detector=det, segmenter=seg)
    assert calls == []


def test_a_scan_without_aerated_lungs_is_refused_not_reported_as_category_1(shared_models):
    """Lungs filled with soft tissue (a CT that is no chest CT, or lungs the model missed): no
    report whose "no finding, category 1" would read as a negative screen."""
    det, seg = shared_models
    airless = toy_chest(blobs=())
    airless[airless == -850.0] = 40.0
    airless[14, 20, 10] = -850.0  # one lung voxel, so the rule's lung class is not empty
    with pytest.raises(InputError, match="no aerated lungs found: the segmentation labelled 0.0 mL as lung"):
        screen(airless, SPACING, detector=det, segmenter=seg)
    # a scan whose lungs fill a few per cent of it (lung bases at the top of an abdomen CT) is screened
    bases = toy_chest(blobs=())
    bases[6:28] = 40.0
    result = screen(bases, SPACING, detector=det, segmenter=seg)
    assert 0.01 < sum(result.lung_volumes_ml.values()) / (bases.size * np.prod(SPACING) / 1000) < 0.2


def test_denoise_first_feeds_the_models_the_denoised_volume(shared_models):
    """The shipped CT denoiser (small: seconds on this toy) runs first; the models read its output."""
    det, seg = shared_models
    rng = np.random.default_rng(0)
    noisy = toy_chest() + rng.normal(0.0, 40.0, (30, 40, 60)).astype(np.float32)
    result = screen(noisy, SPACING, detector=det, segmenter=seg, score_threshold=0.5, denoise=True)
    assert result.denoised is not None and result.denoised.shape == noisy.shape
    assert np.std(result.denoised - toy_chest()) < np.std(noisy - toy_chest())  # it removed noise
    assert result.models["denoise"]["name"] == "ct-lowdose-denoising" and "denoise" in result.times_s
    again = screen(result.denoised, SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    np.testing.assert_array_equal(result.labels, again.labels)
    assert [s.to_dict() for s in result.findings] == [s.to_dict() for s in again.findings]
    assert "The models read the denoised volume." in screening_markdown(result)


def test_a_finding_on_the_first_or_last_slice_gets_a_note(shared_models):
    det, seg = shared_models
    inside = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    assert not any("first or last slice" in note for note in inside.notes)
    # a blob over slices 0-2 (the scan starts inside it) and the usual one well inside
    cut = screen(toy_chest(blobs=((21, 20, 45, 5, 200.0), (1, 20, 15, 1, 200.0))), SPACING, detector=det,
                 segmenter=seg, score_threshold=0.5)
    ranks = [r for r, s in enumerate(cut.findings, start=1) if s.finding.bbox_voxel[0][0] == 0]
    assert len(ranks) == 1 and len(cut.findings) == 2
    notes = [note for note in cut.notes if "first or last slice" in note]
    assert notes == [f"finding {ranks[0]} touches the scan's first or last slice: it may continue beyond the scan, "
                     "so the size may be underestimated, and the network saw nothing past that slice to tell a "
                     "nodule from a vessel"]
    assert f"Note: {notes[0]}." in screening_markdown(cut)
    assert notes[0] in screening_record(cut)["notes"]


def test_edge_findings_are_those_whose_box_reaches_either_end():
    from types import SimpleNamespace

    from napari_medai.postprocess.report import edge_findings

    box = lambda z0, z1: SimpleNamespace(bbox_voxel=[[z0, 0, 0], [z1, 5, 5]])  # noqa: E731
    assert edge_findings([box(3, 6), box(0, 2), box(27, 30), box(26, 29)], 30) == [2, 3]


def test_a_finding_at_the_side_of_the_field_of_view_gets_its_own_note():
    """A nodule cut off in-plane is undersized as one cut by the first slice is (a 10 mm sphere at
    x = 0 measured 7.9 mm, Lung-RADS 3 for 4A); only the first or last slice used to be noted."""
    from types import SimpleNamespace

    from napari_medai.postprocess.report import edge_findings, edge_notes, field_edge_note, findings_markdown

    box = lambda lo, hi: SimpleNamespace(bbox_voxel=[lo, hi])  # noqa: E731
    found = [box([3, 5, 5], [6, 9, 9]), box([3, 0, 5], [6, 4, 9]), box([3, 5, 60], [6, 9, 64]),
             box([0, 5, 5], [2, 9, 9])]
    assert edge_findings(found, (30, 64, 64), axes=(1, 2)) == [2, 3]
    assert edge_findings(found, (30, 64, 64)) == [4]  # the first or last slice only, as before
    note = field_edge_note(found, (30, 64, 64))
    assert note == ("findings 2, 3 touch the edge of the image's field of view: they may continue beyond the image, "
                    "so the size may be underestimated")
    assert field_edge_note(found[:1], (30, 64, 64)) is None and edge_notes(found[:1], (30, 64, 64)) == []
    notes = edge_notes(found, (30, 64, 64))
    assert len(notes) == 2 and notes[0].startswith("finding 4 touches the scan's first or last slice") and notes[1] == note
    with_scores = [Finding(center_voxel=[4, 2, 7], center_mm=[8, 2, 7], bbox_voxel=[[3, 0, 5], [6, 4, 9]],
                           diameter_mm=7.2, short_axis_mm=5.1, mean_diameter_mm=6.2, volume_ml=0.1, score=0.9,
                           lung_rads="3")]
    assert "Note: finding 1 touches the edge of the image's field of view" in findings_markdown(
        with_scores, shape=(30, 64, 64))


def _with_operating_point(card_path: str, threshold: float) -> str:
    data = json.loads(open(card_path).read())
    data["extra"]["operating_point"] = {"score_threshold": threshold, "fp_per_scan": 1.0}
    with open(card_path, "w") as f:
        json.dump(data, f)
    return card_path


def test_the_default_threshold_is_the_detectors_operating_point(shared_models):
    det, seg = shared_models
    volume = toy_chest()
    scores = sorted(f.finding.score for f in screen(volume, SPACING, detector=det, segmenter=seg,
                                                   score_threshold=0.0).findings)
    low, high = scores[0], scores[-1]  # a faint candidate and the two blobs
    assert low < 0.5 < high
    # without an operating point on the card: 0.5, and no note about it
    plain = screen(volume, SPACING, detector=det, segmenter=seg)
    assert plain.score_threshold == 0.5 and not any("operating point" in n for n in plain.notes)
    assert len(plain.findings) == 2
    # an operating point below the faint candidate lists it too, and the report says why
    _with_operating_point(det, round(low - 0.01, 2))
    result = screen(volume, SPACING, detector=det, segmenter=seg)
    assert result.score_threshold == round(low - 0.01, 2) and len(result.findings) == 3
    assert any("operating point" in n for n in result.notes)
    assert "operating point" in screening_markdown(result)
    # one above the blobs lists nothing
    _with_operating_point(det, round(high + 0.01, 2))
    assert screen(volume, SPACING, detector=det, segmenter=seg).findings == []
    # an explicit threshold wins over the card's; set to the operating point (as the widgets do) it gets the note
    other = screen(volume, SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    assert len(other.findings) == 2 and not any("operating point" in n for n in other.notes)
    same = screen(volume, SPACING, detector=det, segmenter=seg, score_threshold=round(high + 0.01, 2))
    assert any("operating point" in n for n in same.notes)


def test_the_readers_review_sets_the_categories_and_is_written_everywhere(shared_models, tmp_path):
    from napari_medai.io import Volume
    from napari_medai.screening import with_review, write_screening

    det, seg = shared_models
    result = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    assert [s.finding.lung_rads for s in result.findings] == ["4A", "2"]
    # rejecting the 4A finding leaves the 2 one; the result itself is not changed
    reviewed = with_review(result, ["rejected", ""])
    assert reviewed.categories_after_review() == ("2", "2") and result.review == []
    assert (reviewed.category, reviewed.findings) == (result.category, result.findings)
    record = screening_record(reviewed, "toy")
    assert record["highest_size_category"] == "4A" and record["highest_size_category_after_review"] == "2"
    assert record["highest_category_by_attenuation_after_review"] == "2"
    assert record["reader_review"] == {"accepted": 0, "rejected": 1, "not_reviewed": 1, "added": 0}
    assert [f["review"] for f in record["findings"]] == ["rejected", ""]
    text = screening_markdown(reviewed, "toy")
    assert ("**Highest Lung-RADS category (v2022, baseline screen, by each nodule's attenuation) after the "
            "reader's review: 2**") in text and "Before the review: 4A." in text
    assert "By size alone, as if every nodule were solid: 2 after the review (4A before)." in text
    assert "accepted 0, rejected 1 and left 1 not reviewed" in text
    assert "| solid: 4A | rejected |" in text and "| solid: 2 | not reviewed |" in text
    assert "Limit: the built-in models miss" in text  # category 2 after the review
    # an unreviewed finding still counts: accepting the 2 one and leaving the 4A one unreviewed keeps 4A
    assert with_review(result, ["", "accepted"]).categories_after_review() == ("4A", "4A")
    # no review: the report reads as before, without a reader column
    plain = screening_markdown(result, "toy")
    assert "reader" not in plain.split("Limits:")[0] and screening_record(result)["highest_size_category_after_review"] == "4A"
    with pytest.raises(InputError, match="one per finding"):
        with_review(result, ["rejected"])
    # medai screen's files: findings.csv gets the review column, the key image caption the state
    volume = Volume(toy_chest(), np.diag([*SPACING, 1.0]), modality="CT")
    write_screening(reviewed, volume, "toy", tmp_path)
    csv_lines = (tmp_path / "findings.csv").read_text().splitlines()
    assert csv_lines[0].endswith(",review") and csv_lines[1].endswith(",rejected") and csv_lines[2].endswith(",")
    assert "Lung-RADS 4A, rejected by the reader)" in (tmp_path / "report.md").read_text()


def test_a_list_cut_by_max_findings_says_so_in_the_report(shared_models):
    """Two findings reach the threshold: a cap of one lists the first and says more scored
    above it (the unlisted one could hold a higher category); a cap of two says nothing."""
    det, seg = shared_models
    both = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5, max_findings=2)
    assert len(both.findings) == 2 and not any("more findings scored" in n for n in both.notes)
    cut = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5, max_findings=1)
    assert [s.finding.to_dict() for s in cut.findings] == [both.findings[0].finding.to_dict()]
    note = "more findings scored 0.5 or more than the 1 listed"
    assert any(n.startswith(note) for n in cut.notes)
    text, record = screening_markdown(cut, "toy"), screening_record(cut)
    assert note in text and any(n.startswith(note) for n in record["notes"])
    # the headline's count is of the listed findings, not the whole list; the record flags it
    assert "(the 1 highest-scoring finding listed of more with score ≥ 0.5: see the note on max_findings)" in text
    assert record["findings_capped"] is True and screening_record(both)["findings_capped"] is False
    assert "(2 findings with score ≥ 0.5)" in screening_markdown(both, "toy")
    everything = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5, max_findings=None)
    assert len(everything.findings) == 2 and not any("more findings scored" in n for n in everything.notes)


def test_an_added_nodule_is_placed_in_the_frame_the_scan_was_screened_in(shared_models):
    """docs/screening.md's recipe measures the nodule without the affine: its centre was then in
    the spacing's frame, compared with lungs in the scan's (here mirrored left-right), and the
    nodule went to the other lung."""
    from napari_medai.postprocess.seeded import nodule_at
    from napari_medai.screening import with_added_finding

    det, seg = shared_models
    mirrored = np.diag([*SPACING, 1.0])
    mirrored[2, 2], mirrored[2, 3] = -SPACING[2], 100.0  # L = 100 - x: the toy's right lung is on the left
    result = screen(toy_chest(), SPACING, mirrored, detector=det, segmenter=seg, score_threshold=0.5, max_findings=1)
    without = with_added_finding(result, nodule_at(toy_chest(), SPACING, (5, 20, 15)), SPACING).findings[-1]
    given = nodule_at(toy_chest(), SPACING, (5, 20, 15), affine=mirrored)
    with_it = with_added_finding(result, given, SPACING, mirrored).findings[-1]
    assert without.side == with_it.side == "left"
    assert without.finding.center_mm == with_it.finding.center_mm == given.center_mm
    assert given.center_mm[2] == pytest.approx(100.0 - given.center_voxel[2])
    with pytest.raises(InputError, match="not the one the scan was screened with"):
        with_added_finding(result, given, SPACING, np.diag([*SPACING, 1.0]))
    # an affine of another voxel size than the spacing is refused before any model runs
    with pytest.raises(InputError, match="is not the spacing given"):
        screen(toy_chest(), SPACING, np.eye(4), detector=det, segmenter=seg)
    with pytest.raises(InputError, match="is not the spacing given"):
        napari_medai.detect(toy_chest(), SPACING, model=det, affine=np.eye(4))


def test_a_nodule_the_reader_adds_is_placed_and_counted_after_the_review_only(shared_models):
    from napari_medai.postprocess.seeded import nodule_at
    from napari_medai.screening import with_added_finding, with_review

    det, seg = shared_models
    result = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5, max_findings=1)
    assert [s.finding.lung_rads for s in result.findings] == ["4A"]
    small = nodule_at(toy_chest(), SPACING, (5, 20, 15))  # the 3-voxel blob the detector did not list
    added = with_added_finding(result, small, SPACING)
    placed = added.findings[-1]
    assert (placed.side, placed.zone) == ("right", "lower") and placed.finding.added_by_reader
    # placed from the lungs screen() kept, the same as from the label map read again
    assert set(result.lung_sides) == {"right", "left"}
    again = with_added_finding(replace(result, lung_sides=None), small, SPACING).findings[-1]
    assert (again.side, again.zone, again.segmented_volume_ml) == (placed.side, placed.zone,
                                                                    placed.segmented_volume_ml)
    assert placed.segmented_volume_ml == pytest.approx(3 ** 3 * 2.0 / 1000)
    assert added.review == ["", "accepted"] and added.category == "4A"  # the detector's category stays
    # rejecting the detector's 4A finding leaves the reader's 2
    assert with_review(added, ["rejected", "accepted"]).categories_after_review()[0] == "2"
    # rejecting the reader's own nodule takes it out and says so; the counts are the detector's
    withdrawn = with_review(added, ["", "rejected"])
    text = screening_markdown(withdrawn, "toy")
    assert "| reader |" in text and "| added, rejected |" in text and "the reader added 1 nodule" in text
    assert screening_record(withdrawn)["reader_review"] == {"accepted": 0, "rejected": 0, "not_reviewed": 1,
                                                             "added": 1}


def test_a_reader_nodule_on_a_scan_the_detector_left_empty_gets_its_attenuation_line(shared_models):
    from napari_medai.postprocess.seeded import nodule_at
    from napari_medai.screening import with_added_finding

    det, seg = shared_models
    empty = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=1.0)
    assert empty.findings == [] and empty.category_by_attenuation == "1"
    assert "With the attenuation read from the CT" not in screening_markdown(empty)  # nothing to read
    nodule = nodule_at(toy_chest(), SPACING, (21, 20, 45))  # the 4A blob, not listed here
    added = with_added_finding(empty, nodule, SPACING)
    by_attenuation = added.categories_after_review()[1]
    assert by_attenuation == nodule.lung_rads_by_attenuation != ""
    # report.md says what report.json says
    assert f"**Highest Lung-RADS category (v2022, baseline screen, by each nodule's attenuation) after the reader's review: {by_attenuation}**" in screening_markdown(added)
    assert screening_record(added)["highest_category_by_attenuation_after_review"] == by_attenuation
    # the detector reported nothing: that is no category before the review, in either file
    assert "Before the review: no finding reported." in screening_markdown(added)
    record = screening_record(added)
    assert record["headline_category"] is None and record["headline_category_after_review"] == by_attenuation


def test_a_review_that_rejects_every_finding_gives_no_category(shared_models):
    from napari_medai.screening import with_review

    det, seg = shared_models
    result = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    rejected = with_review(result, ["rejected"] * len(result.findings))
    text = screening_markdown(rejected, "toy")
    assert "after the reader's review: none kept (Lung-RADS 1 needs a reader who has read the scan)**" in text
    assert "Before the review: 4A." in text and "By size alone" not in text
    record = screening_record(rejected)
    assert record["headline_category"] == "4A" and record["headline_category_after_review"] is None


def test_lungs_cut_by_the_scan_are_noted():
    from napari_medai.screening import lung_coverage_note, lungs_cut_at

    labels = np.zeros((10, 40, 40), np.uint8)
    labels[2:8, 5:35, 5:35] = 1  # whole lungs: nothing on the end slices
    assert lungs_cut_at(labels, 1, (2.0, 1.0, 1.0)) == ""
    labels[0, 5:35, 5:35] = 1  # 9 cm2 of lung on the first slice: the bases were not scanned
    where = lungs_cut_at(labels, 1, (2.0, 1.0, 1.0))
    assert where == "first slice (9 cm² of lung on it)"
    note = lung_coverage_note(where)
    assert "reach the scan's first slice (9 cm² of lung on it)" in note and "Lung-RADS 0" in note
    labels[-1, 10:12, 10:12] = 1  # a few pixels of lung on the last slice are no cut
    assert "last" not in lungs_cut_at(labels, 1, (2.0, 1.0, 1.0))


def test_lungs_cut_by_the_scan_put_lung_rads_0_beside_the_headline(shared_models):
    """Lung-RADS 0 is for an exam where part of the lungs cannot be evaluated: it was only in the
    notes at the report's end, under a headline category that read as the whole exam's."""
    det, seg = shared_models
    volume = toy_chest()
    result = screen(volume, SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    assert result.lungs_cut == "" and "Lung-RADS 0" not in screening_markdown(result)
    assert screening_record(result)["lungs_cut"] is None
    lungs = np.flatnonzero([np.any(result.labels[z] == 1) for z in range(volume.shape[0])])
    cut = screen(volume[lungs[0] + 2:], SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    assert cut.lungs_cut.startswith("first slice (")
    text = screening_markdown(cut)
    assert "**Lung-RADS 0 (incomplete) may apply: the lungs reach the scan's first slice (" in text
    assert "any category here is of the scanned part only.**" in text
    assert screening_record(cut)["lungs_cut"] == cut.lungs_cut


def test_the_headline_is_the_category_by_type_where_it_differs_from_size(shared_models):
    from dataclasses import replace

    det, seg = shared_models
    result = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    # the 4A finding read as ground glass: Lung-RADS 2 under 30 mm, whatever its size category
    glass = [replace(s, finding=replace(s.finding, attenuation="ground-glass", lung_rads_by_attenuation="2"))
             for s in result.findings]
    typed = replace(result, findings=glass, category_by_attenuation="2")
    text = screening_markdown(typed)
    assert "**Highest Lung-RADS category (v2022, baseline screen, by each nodule's attenuation) among the " \
        "reported findings: 2**" in text and "By size alone, as if every nodule were solid: 4A." in text
    assert "Limit: the built-in models miss" in text  # the category shown is 2
    record = screening_record(typed)
    assert record["headline_category"] == "2" and record["highest_size_category"] == "4A"


def test_write_screening_refuses_a_bare_array_with_one_sentence(shared_models, tmp_path):
    from napari_medai.screening import write_screening

    det, seg = shared_models
    volume = toy_chest()
    result = screen(volume, SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    with pytest.raises(InputError, match="needs the screened scan as a Volume"):
        write_screening(result, volume, "toy", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_write_screening_never_writes_over_its_scan(shared_models, tmp_path):
    from napari_medai.io import read_volume, write_volume
    from napari_medai.screening import write_screening

    det, seg = shared_models
    result = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    out = tmp_path / "report"
    out.mkdir()
    for name in ("segmentation.nii.gz", "denoised.nii.gz"):  # the scan saved under a report file's name
        scan = write_volume(toy_chest(), out / name, affine=np.diag([*SPACING, 1.0]), modality="CT")
        before = scan.read_bytes()
        with pytest.raises(InputError, match=f"is the input itself: the report's {name} .* would replace the scan"):
            write_screening(result, read_volume(scan), name, out)
        assert scan.read_bytes() == before and not (out / "report.md").exists()
        scan.unlink()


def test_write_screening_removes_a_previous_runs_denoised_image(shared_models, tmp_path):
    from napari_medai.io import read_volume, write_volume
    from napari_medai.screening import write_screening

    det, seg = shared_models
    result = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    out = tmp_path / "report"
    # a --denoise run, then one without, into the same folder: the old denoised image goes
    volume = read_volume(write_volume(toy_chest(), tmp_path / "ct.nii.gz", affine=np.diag([*SPACING, 1.0]),
                                      modality="CT"))
    write_screening(replace(result, denoised=toy_chest()), volume, "ct.nii.gz", out)
    assert (out / "denoised.nii.gz").is_file()
    write_screening(result, volume, "ct.nii.gz", out)
    assert not (out / "denoised.nii.gz").exists() and (out / "segmentation.nii.gz").is_file()


def _ct(tmp_path):
    from napari_medai.io import read_volume, write_volume

    return read_volume(write_volume(toy_chest(), tmp_path / "ct.nii.gz", affine=np.diag([*SPACING, 1.0]),
                                    modality="CT"))


def test_a_file_no_screening_wrote_is_refused_and_left_alone(shared_models, tmp_path):
    import re

    from napari_medai.io import write_volume
    from napari_medai.screening import check_out_dir, write_screening

    det, seg = shared_models
    result = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    volume = _ct(tmp_path)
    for k, name in enumerate(["segmentation.nii.gz", "denoised.nii.gz", "report.md", "findings.csv", "report.json",
                              "key_images/finding_03.png"]):
        out = tmp_path / f"report{k}"
        (out / "key_images").mkdir(parents=True)
        if name == "segmentation.nii.gz":  # a reader's hand-corrected segmentation, put where the report goes
            mine = write_volume(np.ones((30, 40, 60), np.uint8), out / name, is_labels=True)
        else:
            mine = out / name
            # a JSON of another program may list "files" too: that does not make the folder a report's
            mine.write_text('{"my": "own notes", "files": {"report.md": null, "findings.csv": null}}')
        before = mine.read_bytes()
        message = re.escape(f"{mine} is not a file of an earlier screening report") + ".*choose another folder"
        with pytest.raises(InputError, match=message):
            check_out_dir("ct.nii.gz", out)  # what medai screen and batch ask before any model runs
        with pytest.raises(InputError, match=message):
            write_screening(result, volume, "ct.nii.gz", out)
        assert mine.read_bytes() == before
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == sorted({"key_images", name})


def test_a_rerun_replaces_its_own_files_but_not_one_changed_since(shared_models, tmp_path):
    from napari_medai.io import write_volume
    from napari_medai.screening import write_screening

    det, seg = shared_models
    result = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    volume, out = _ct(tmp_path), tmp_path / "report"
    write_screening(result, volume, "ct.nii.gz", out)
    files = json.loads((out / "report.json").read_text())["files"]
    assert sorted(files) == ["findings.csv", "key_images/finding_01.png", "key_images/finding_02.png", "report.md",
                             "segmentation.nii.gz"]
    # a re-run into the same folder, with one finding less: its own files are replaced or removed
    write_screening(replace(result, findings=result.findings[:1]), volume, "ct.nii.gz", out)
    assert sorted(p.name for p in (out / "key_images").iterdir()) == ["finding_01.png"]
    # the reader corrects the segmentation and saves it over the report's: the next run keeps it
    corrected = write_volume(np.zeros((30, 40, 60), np.uint8), out / "segmentation.nii.gz", is_labels=True)
    before = corrected.read_bytes()
    with pytest.raises(InputError, match="segmentation.nii.gz was changed after the screening report"):
        write_screening(result, volume, "ct.nii.gz", out)
    assert corrected.read_bytes() == before


def test_a_run_that_fails_halfway_leaves_the_earlier_report_as_it_was(shared_models, tmp_path, full_disk,
                                                                      monkeypatch):
    """A full disk at segmentation.nii.gz (after the key images, report.md and findings.csv) left
    the new report.md beside the earlier segmentation, one key image fewer, under a report.json
    that said the run had not finished."""
    from napari_medai.screening import write_screening

    det, seg = shared_models
    result = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    volume, out = _ct(tmp_path), tmp_path / "report"
    write_screening(result, volume, "ct.nii.gz", out)

    def files():
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    before = files()
    assert "key_images/finding_02.png" in before
    reviewed = replace(result, findings=result.findings[:1], review=["rejected"])  # every file changes
    full_disk("segmentation.nii.gz")
    with pytest.raises(InputError, match=f"cannot write {out / 'segmentation.nii.gz'}: .*No space left on device"):
        write_screening(reviewed, volume, "ct.nii.gz", out)
    assert files() == before  # each file as it was, none removed, no temporary
    monkeypatch.undo()  # space again: the next run replaces that report
    write_screening(reviewed, volume, "ct.nii.gz", out)
    assert "rejected by the reader" in (out / "report.md").read_text()
    assert sorted(p.name for p in (out / "key_images").iterdir()) == ["finding_01.png"]
    assert sorted(json.loads((out / "report.json").read_text())["files"]) == [
        "findings.csv", "key_images/finding_01.png", "report.md", "segmentation.nii.gz"]


def test_a_folder_from_before_report_json_listed_its_files_is_still_rewritten(shared_models, tmp_path):
    from napari_medai.screening import write_screening

    det, seg = shared_models
    result = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    volume, out = _ct(tmp_path), tmp_path / "report"
    write_screening(result, volume, "ct.nii.gz", out)
    old = json.loads((out / "report.json").read_text())
    del old["files"]  # as earlier versions wrote it: their files go by name
    (out / "report.json").write_text(json.dumps(old))
    (out / "denoised.nii.gz").write_bytes(b"not this report's: it says denoised false")
    with pytest.raises(InputError, match="denoised.nii.gz is not a file of an earlier screening report"):
        write_screening(result, volume, "ct.nii.gz", out)
    (out / "denoised.nii.gz").unlink()
    write_screening(result, volume, "ct.nii.gz", out)


@pytest.mark.parametrize("bad", [float("nan"), 1.5, -1.0, "0.5"])
def test_a_score_threshold_that_is_no_score_is_refused_before_any_model_runs(shared_models, monkeypatch, bad):
    det, seg = shared_models
    calls = _count_runs(monkeypatch)
    with pytest.raises(InputError, match="score_threshold must be a score between 0 and 1"):
        screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=bad)
    assert calls == []


def test_a_singleton_channel_axis_is_dropped_as_segment_and_detect_drop_it(shared_models):
    det, seg = shared_models
    plain = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    given = screen(toy_chest()[None], SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    np.testing.assert_array_equal(given.labels, plain.labels)
    assert [s.to_dict() for s in given.findings] == [s.to_dict() for s in plain.findings]


def test_a_report_folder_that_is_the_dicom_series_folder_itself_is_refused(tmp_path):
    from napari_medai.screening import check_out_dir

    series = tmp_path / "pat2"
    series.mkdir()
    (series / "IM0001").write_bytes(b"slice")
    with pytest.raises(InputError, match="is the DICOM series folder being screened"):
        check_out_dir(series, tmp_path / "." / "pat2")
    check_out_dir(series, series / "report")  # a folder inside it is the user's choice, and writes no slice
    check_out_dir(series, tmp_path / "pat2_report")


def test_a_report_write_that_fails_leaves_the_earlier_report_whole(shared_models, tmp_path, monkeypatch):
    """report.md, findings.csv and report.json were written in place: a full disk midway left a
    cut-off report beside the earlier run's files."""
    from napari_medai.io import Volume, atomic
    from napari_medai.screening import write_screening

    det, seg = shared_models
    result = screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5)
    volume = Volume(toy_chest(), np.diag([*SPACING, 1.0]), modality="CT")
    write_screening(result, volume, "toy", tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in ("report.md", "findings.csv")}
    real = atomic.replace_atomically

    def disk_full_on_the_report(path, save, suffix=""):
        if str(path).endswith("report.md"):
            return real(path, lambda tmp: (tmp.write_text("# cut"), (_ for _ in ()).throw(OSError("disk full"))),
                        suffix)
        return real(path, save, suffix)

    monkeypatch.setattr(atomic, "replace_atomically", disk_full_on_the_report)
    with pytest.raises(InputError, match="disk full"):
        write_screening(result, volume, "toy", tmp_path)
    assert (tmp_path / "report.md").read_bytes() == before["report.md"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_findings_segmented_volume_names_the_outline_of_the_components_it_overlaps():
    """One finding over a refined and an unrefined component reads "mixed"; components touching
    only diagonally are one component, as the segmentation counts them."""
    from napari_medai.postprocess.components import lesion_outlines
    from napari_medai.postprocess.findings import Finding
    from napari_medai.screening import _lesion_components

    labels = np.zeros((8, 12, 12), np.uint8)
    labels[1:3, 1:3, 1:3] = 2  # refined
    labels[3, 3, 3] = 2  # diagonal to it: the same 26-connected component
    labels[1:3, 6:8, 6:8] = 2  # left as drawn
    refined = np.zeros(labels.shape, bool)
    refined[1:3, 1:3, 1:3] = refined[3, 3, 3] = True
    rows = lesion_outlines(labels, None, (1.0, 1.0, 1.0), 2, refined)
    segmented = _lesion_components(labels, 2, 0.001, rows)

    def finding(lo, hi) -> Finding:
        return Finding(center_voxel=[0, 0, 0], center_mm=[0, 0, 0], bbox_voxel=[lo, hi], diameter_mm=1,
                       short_axis_mm=1, mean_diameter_mm=1, volume_ml=0, score=1, lung_rads="2",
                       mask=np.ones(np.subtract(hi, lo), bool))

    assert segmented(finding([1, 1, 1], [2, 2, 2])) == (pytest.approx(0.009), "half-maximum")
    assert segmented(finding([1, 6, 6], [2, 7, 7])) == (pytest.approx(0.008), "network")
    assert segmented(finding([1, 1, 1], [3, 8, 8])) == (pytest.approx(0.017), "mixed")
    assert segmented(finding([5, 9, 9], [7, 11, 11])) == (0.0, "")
    # a component the run did not list (a reader's nodule added to the labels since) is not known
    labels[5:7, 9:11, 9:11] = 2
    edited = _lesion_components(labels, 2, 0.001, rows)
    assert edited(finding([5, 9, 9], [7, 11, 11])) == (pytest.approx(0.008), "unknown")
    assert edited(finding([1, 6, 6], [7, 11, 11]))[1] == "mixed"  # network and unknown
    assert _lesion_components(labels, None, 0.001)(finding([1, 1, 1], [2, 2, 2])) == (0.0, "")


def test_a_report_that_may_list_no_finding_is_refused_before_any_model_runs(shared_models):
    # max_findings=0 headed the report "No nodule reported by the software" over a 4A finding
    det, seg = shared_models
    with pytest.raises(InputError, match="max_findings must be 1 or more for a screening report"):
        screen(toy_chest(), SPACING, detector=det, segmenter=seg, score_threshold=0.5, max_findings=0)


def test_screen_warns_once_about_a_spacing_given_as_x_y_z(monkeypatch):
    """With the built-in models screen() runs one network and calls neither detect() nor segment(),
    where the warning was: the main pipeline resampled along the wrong axes without a word (a
    reviewer's finding).  Inside screen(), detect() and segment() do not warn again."""
    import warnings

    from napari_medai import api

    def stop(*args, **kwargs):
        raise RuntimeError("stop before the models")

    monkeypatch.setattr(api, "_model", stop)
    with pytest.warns(UserWarning, match=r"is read as \(z, y, x\) mm") as caught, pytest.raises(RuntimeError):
        screen(toy_chest(), (0.7, 0.7, 5.0))
    assert len([w for w in caught if "is read as" in str(w.message)]) == 1
    with api.spacing_warned(), warnings.catch_warnings():
        warnings.simplefilter("error")
        api.warn_if_spacing_reversed((0.7, 0.7, 5.0))


def test_screen_with_two_networks_warns_once_about_the_spacing(monkeypatch, shared_models):
    """Where the detector and the segmentation are two networks, screen() calls detect() and
    segment(), whose own check stays silent inside it."""
    import napari_medai.screening as screening
    from napari_medai import api

    def detect_then_stop(volume, spacing, *args, **kwargs):
        api.warn_if_spacing_reversed(spacing)  # what detect() checks first
        raise RuntimeError("stop after the detector's check")

    monkeypatch.setattr(screening, "_one_network", lambda *a: False)
    monkeypatch.setattr(api, "detect", detect_then_stop)
    det, seg = shared_models
    with pytest.warns(UserWarning, match="is read as") as caught, pytest.raises(RuntimeError, match="stop after"):
        screen(toy_chest(), (0.7, 0.7, 5.0), detector=det, segmenter=seg)
    assert len([w for w in caught if "is read as" in str(w.message)]) == 1
