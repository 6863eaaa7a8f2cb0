"""``fit_detector`` and ``fit_two_stage_detector`` end to end (training.detection), on tiny
stand-in validation phantoms and fixed-rule networks in a temporary weights folder.

The segmentation-based detector's rule (docs/detection.md): the candidate threshold with the
best mean validation FROC, ties to the lowest; the finding masks refined only where a reach
lowers the median diameter error by 0.1 mm, then the shortest reach within 0.1 mm of the best.

Scenes (z, y, x at 2 x 1 x 1 mm): a chest-like block at -150 HU (the body: background for the
rule, nodule probability < 0.001) around lung at -850 HU.  The rule network below calls voxels
under -200 HU lung and over -100 HU nodule, steeply, so a voxel's nodule probability is set by
its HU alone: -108 HU gives 0.24, -109 HU 0.22, -114 HU 0.12, 200 HU 1.0.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fixed_rule_models import (ThresholdSegmenter, classifier_card, install, segmentation_card, stand_in_phantoms,
                              unit)
from napari_medai.models import registry
from napari_medai.training import detection, phantom_dataset

SPACING = (2.0, 1.0, 1.0)
RULE = dict(lung_below=unit(-200), nodule_above=unit(-100), steepness=200.0)
FAINT, FAINTER, BRIDGE = -108.0, -109.0, -114.0
FAINT_NODULE = (7.0, 14.0, 14.0)


def _chest(shape=(16, 48, 48)):
    hu = np.full(shape, -150.0, np.float32)
    labels = np.zeros(shape, np.uint8)
    hu[1:-1, 6:-6, 6:-6] = -850.0
    labels[1:-1, 6:-6, 6:-6] = 1
    return hu, labels


def froc_scan(bridge: bool):
    """A faint nodule (p 0.24) 14 mm beside a bright decoy (p 1.0) and a fainter decoy (p 0.22,
    scored below the nodule, so MONAI's FROC, which leaves out the lowest score, counts the
    nodule).  With ``bridge`` a one-voxel strand at p 0.12 joins the nodule to the bright decoy:
    at a candidate threshold of 0.1 or less they are one component, measured (p >= 0.5) and
    centred on the decoy, so the nodule is missed; at 0.3 or more the nodule is no candidate.
    Only 0.2 finds it.  Without the strand 0.02-0.2 all find it and tie."""
    hu, labels = _chest()
    hu[6:9, 12:17, 12:17], labels[6:9, 12:17, 12:17] = FAINT, 2
    hu[6:9, 12:17, 26:31] = 200.0
    hu[10:13, 28:33, 12:17] = FAINTER
    if bridge:
        hu[7, 14, 17:26] = BRIDGE
    return SimpleNamespace(hu=hu, labels=labels, spacing=SPACING,
                           nodules=[{"center_voxel": list(FAINT_NODULE), "diameter_mm": 5.0}])


def rim_scan(rim: bool):
    """A 200 HU core, 5 voxels a side; with ``rim`` a -300 HU rim one voxel thick that the rule
    calls lung but the half-maximum contour (-325 HU, between core and lung) takes.  The rim's
    in-plane corners lie sqrt(2) mm from the drawn core: 1.0 mm cannot reach them, 1.5 and
    2.0 mm measure the same axial diameter, so the rule keeps 1.5 mm."""
    hu, labels = _chest()
    if rim:
        hu[5:12, 17:24, 17:24], labels[5:12, 17:24, 17:24] = -300.0, 2
    hu[6:11, 18:23, 18:23], labels[6:11, 18:23, 18:23] = 200.0, 2
    return SimpleNamespace(hu=hu, labels=labels, spacing=SPACING,
                           nodules=[{"center_voxel": [8.0, 20.0, 20.0], "diameter_mm": 7.0 if rim else 5.0}])


def empty_scan():
    hu, labels = _chest()
    return SimpleNamespace(hu=hu, labels=labels, spacing=SPACING, nodules=[])


SCANS = {1: lambda: froc_scan(bridge=True), 2: lambda: rim_scan(rim=True),
         3: lambda: froc_scan(bridge=False), 4: lambda: rim_scan(rim=False), 5: empty_scan}


@pytest.fixture
def weights(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    monkeypatch.setattr(registry, "WEIGHTS_DIR", folder)
    return folder


@pytest.fixture
def phantoms(monkeypatch):
    return stand_in_phantoms(monkeypatch, SCANS)


def _seg(folder, name="rule-seg", **extra):
    card = segmentation_card(name, roi_size=(8, 32, 32), **RULE)
    card.extra.update(extra)
    return install(card, folder)


def test_the_nodule_probabilities_are_those_the_scenes_are_built_on():
    net = ThresholdSegmenter(**RULE)
    hu = torch.tensor([FAINT, FAINTER, BRIDGE, -150.0, -850.0, 200.0])
    p = torch.softmax(net(((hu + 1000.0) / 1400.0).reshape(1, 1, -1, 1, 1)), 1)[0, 2, :, 0, 0].numpy()
    assert 0.2 < p[1] < p[0] < 0.3  # faint nodule and fainter decoy: candidates at 0.2, not 0.3
    assert 0.1 < p[2] < 0.2  # the strand: joins at 0.1, not at 0.2
    assert p[3] < 0.02 and p[4] < 0.02 and p[5] > 0.99


def test_a_segmentation_mirrored_at_lesions_gives_the_detector_a_lower_focus_level(weights, phantoms, monkeypatch):
    # the candidates start at 0.02, below the segmentation's level (0.05) that decides where
    # "mirror-lesions" mirrors: the detector is fitted on (and its card asks for) mirroring from
    # half the lowest candidate threshold
    from napari_medai.inference import engine

    _seg(weights, tta="mirror-lesions")
    seen = []

    def spy(model, volume, spacing=None, settings=None, **_):
        seen.append((settings.tta, settings.focus_probability))
        raise RuntimeError("enough")

    monkeypatch.setattr(engine, "run_model", spy)
    with pytest.raises(RuntimeError, match="enough"):
        detection.fit_detector("rule-seg", [1], out_name="tiny-detector", log=lambda *_: None, measure_seeds=[2])
    assert seen == [("mirror-lesions", 0.01)] and min(detection.CANDIDATE_THRESHOLDS) == 0.02


def test_the_fit_takes_the_only_threshold_that_finds_the_nodule_and_refines_masks_drawn_too_small(
        weights, phantoms):
    import napari_medai
    from napari_medai.models.card import load_card
    from napari_medai.models.registry import sha256_of

    seg_path = _seg(weights, tta="mirror")
    logs = []
    card, scores = detection.fit_detector("rule-seg", [1], out_name="tiny-detector", log=logs.append,
                                          measure_seeds=[2])
    assert sorted(phantoms) == [1, 2]  # each phantom made (and run) once
    # the FROC on the validation scan decides: only 0.2 finds the faint nodule
    assert set(scores) == set(detection.CANDIDATE_THRESHOLDS)
    assert scores[0.2]["mean"] > 0
    assert all(scores[t]["mean"] == 0 for t in detection.CANDIDATE_THRESHOLDS if t != 0.2)
    assert card.extra["candidate_threshold"] == 0.2
    # the masks: the network draws the core, the reference is core and rim
    assert card.extra["mask_refine"] == {"reach_mm": 1.5, "level": 0.5}
    measured = card.scores["validation_measurement"]
    assert set(measured) == {"as drawn", "refined 1.0 mm", "refined 1.5 mm", "refined 2.0 mm"}
    assert measured["refined 1.5 mm"]["diameter_abs_mm"] < measured["as drawn"]["diameter_abs_mm"] - 0.1
    assert measured["refined 1.5 mm"]["diameter_abs_mm"] < measured["refined 1.0 mm"]["diameter_abs_mm"] - 0.1
    # the probabilities fitted on are mirrored as the segmentation's are
    assert card.extra["tta"] == "mirror"
    for key, value in detection.DEFAULT_EXTRA.items():
        assert card.extra[key] == value
    # the card: a detector on the segmentation's own weights file, with that file's sha256
    assert card.task == "detection" and card.name == "tiny-detector"
    assert card.weights == "rule-seg.pt" and card.sha256 == sha256_of(weights / "rule-seg.pt")
    assert card.network == load_card(seg_path).network and card.classes == load_card(seg_path).classes
    assert card.training["seeds"] == [1] and card.training["measurement_seeds"] == [2]
    assert card.training["candidate_thresholds_tried"] == list(detection.CANDIDATE_THRESHOLDS)
    assert card.scores["validation_froc_mean"] == scores[0.2]["mean"]
    assert card.train_command == "medai train detection --from rule-seg --seeds 1 2"
    assert logs[-1] == f"wrote {weights / 'tiny-detector.json'}"
    # installed: the card detects with the fitted threshold, the faint nodule a finding of its own
    installed = weights / "tiny-detector.json"
    assert load_card(installed).extra == card.extra
    found = napari_medai.detect(froc_scan(bridge=True).hu, SPACING, model=str(installed), max_findings=None)
    faint = [f for f in found if np.allclose(f.center_voxel, FAINT_NODULE, atol=0.01)]
    assert len(faint) == 1 and 0.2 < faint[0].score < 0.3
    assert faint[0].volume_ml == pytest.approx(3 * 5 * 5 * 2.0 / 1000)  # the nodule alone, no strand


def test_ties_go_to_the_lowest_threshold_and_masks_drawn_right_stay_as_drawn(weights, phantoms):
    _seg(weights)
    card, scores = detection.fit_detector("rule-seg", [3], measure_seeds=[4], install=False,
                                          log=lambda *_: None)
    tied = [t for t in detection.CANDIDATE_THRESHOLDS if t <= 0.2]
    assert len({scores[t]["mean"] for t in tied}) == 1 and scores[0.2]["mean"] > scores[0.3]["mean"]
    assert card.extra["candidate_threshold"] == 0.02  # "more candidates, same ranking"
    assert "mask_refine" not in card.extra  # no reach beats the masks as drawn
    assert "tta" not in card.extra  # the segmentation card does not mirror
    assert not (weights / "lung-nodule-detection.json").exists()  # install=False writes nothing


def test_the_card_of_a_fit_on_lesion_mirrored_probabilities_names_its_focus_level(weights, phantoms):
    _seg(weights, tta="mirror-lesions")
    card, _ = detection.fit_detector("rule-seg", [3], measure_seeds=[4], install=False, log=lambda *_: None)
    assert card.extra["tta"] == "mirror-lesions" and card.extra["focus_probability"] == 0.01
    assert card.extra["focus_probability"] < card.extra["candidate_threshold"]
    # a segmentation that mirrors from lower still: the detector never mirrors less than it
    _seg(weights, tta="mirror-lesions", focus_probability=0.005)
    card, _ = detection.fit_detector("rule-seg", [3], measure_seeds=[4], install=False, log=lambda *_: None)
    assert card.extra["focus_probability"] == 0.005


def test_an_unknown_segmentation_model_is_refused_before_any_phantom_is_made(weights, phantoms):
    from napari_medai.errors import ModelError

    _seg(weights)
    with pytest.raises(ModelError, match="no built-in model called 'no-such-model'"):
        detection.fit_detector("no-such-model", [1], measure_seeds=[2], log=lambda *_: None)
    assert phantoms == []


def test_no_fitting_seeds_are_refused_before_any_phantom_is_made(weights, phantoms):
    from napari_medai.errors import MedaiError

    _seg(weights)
    with pytest.raises((MedaiError, ValueError), match="seed"):
        detection.fit_detector("rule-seg", [], measure_seeds=[2], log=lambda *_: None)
    assert phantoms == []


def test_phantoms_without_a_nodule_are_refused_and_no_card_is_written(weights, phantoms):
    from napari_medai.errors import InputError

    _seg(weights)
    with pytest.raises(InputError, match="holds a nodule, so the candidate threshold cannot be fitted"):
        detection.fit_detector("rule-seg", [5], measure_seeds=[2], log=lambda *_: None)
    with pytest.raises(InputError, match="holds a nodule, so the measurement cannot be fitted"):
        detection.fit_detector("rule-seg", [1], measure_seeds=[5], log=lambda *_: None)
    assert not (weights / "lung-nodule-detection.json").exists()


def test_a_segmentation_card_path_is_refused_before_any_phantom_is_made(weights, phantoms):
    from napari_medai.errors import ModelError

    path = _seg(weights)
    with pytest.raises(ModelError):
        detection.fit_detector(str(path), [1], measure_seeds=[2], install=False, log=lambda *_: None)
    assert phantoms == []


# ---- two stages -------------------------------------------------------------------------------
def two_stage_scene():
    """1 mm voxels, lung (-850 HU) in a -400 HU body: A, a small bright nodule (200 HU); B, a
    bright rod (a vessel, 200 HU); C, a small faint nodule (-100 HU).  The first pass (nodule
    above 0 HU) finds A and B, the candidate weights (above -300 HU) A, B and C; the classifier
    accepts blobs that fill little of their patch (A, C) and rejects the rod."""
    hu = np.full((16, 52, 52), -400.0, np.float32)
    hu[:, 6:46, 6:46] = -850.0
    hu[4:7, 11:14, 11:14] = 200.0  # A
    hu[4:7, 31:34, 8:44] = 200.0  # B
    hu[11:14, 21:24, 26:29] = -100.0  # C
    nodules = [{"center_voxel": [5.0, 12.0, 12.0], "diameter_mm": 3.0},
               {"center_voxel": [12.0, 22.0, 27.0], "diameter_mm": 3.0}]
    return SimpleNamespace(hu=hu, spacing=(1.0, 1.0, 1.0), nodules=nodules, labels=None)


@pytest.fixture
def two_stage(weights, tmp_path, monkeypatch):
    made = []

    def phantom_for(seed, **_):
        made.append(seed)
        return two_stage_scene()

    monkeypatch.setattr(phantom_dataset, "phantom_for", phantom_for)
    install(segmentation_card("rule-first-pass", roi_size=(8, 32, 32), nodule_above=unit(0), steepness=50.0),
            weights)
    install(classifier_card("rule-classifier"), weights)
    candidate = tmp_path / "candidates.pt"  # a "high-recall run" of the first pass's network
    torch.save(ThresholdSegmenter(nodule_above=unit(-300)).state_dict(), candidate)
    return SimpleNamespace(candidate=candidate, made=made)


def test_the_two_stage_fit_scores_by_the_classifier_and_ships_the_candidate_weights(weights, two_stage):
    import napari_medai
    from napari_medai.models.registry import sha256_of

    logs = []
    card, result = detection.fit_two_stage_detector("rule-first-pass", str(two_stage.candidate),
                                                    "rule-classifier", [1, 2], out_name="tiny-two-stage",
                                                    log=logs.append)
    assert two_stage.made == [1, 2]
    # both nodules outrank the vessel at every false-positive rate (by peak probability the
    # vessel, 200 HU, would outrank the faint nodule C)
    assert result["targets"] == 4 and result["scans"] == 2
    assert result["mean"] == 1.0 and set(result["sensitivity"].values()) == {1.0}
    assert card.scores["validation_froc_mean"] == 1.0
    assert card.extra["classifier"] == "rule-classifier" and card.extra["first_pass"] == "rule-first-pass"
    assert card.extra["first_pass_score"] == "classifier"
    assert card.extra["candidate_threshold"] == 0.5  # the classifier card's
    assert card.training["seeds"] == [1, 2] and card.training["candidate_weights"] == str(two_stage.candidate)
    assert "--candidate-weights" in card.train_command and "--seeds 1 3" in card.train_command
    # installed: the candidate weights are copied beside the card and checksummed
    shipped = weights / "tiny-two-stage.pt"
    assert card.weights == shipped.name and card.sha256 == sha256_of(shipped) == sha256_of(two_stage.candidate)
    assert (weights / "tiny-two-stage.json").is_file()
    assert logs[-1] == f"wrote {weights / 'tiny-two-stage.json'}"
    found = napari_medai.detect(two_stage_scene().hu, (1.0, 1.0, 1.0), model=str(weights / "tiny-two-stage.json"),
                                max_findings=None)
    centres = [tuple(f.center_voxel) for f in found]
    assert (12.0, 22.0, 27.0) in centres  # C: only the candidate weights see it
    assert found[-1].center_voxel[1] > 30 and found[-1].score < 0.01  # B, the vessel, last


def test_the_two_stage_fit_refuses_a_classifier_that_is_not_one(weights, two_stage):
    from napari_medai.errors import ModelError

    with pytest.raises(ModelError, match="not a classifier"):
        detection.fit_two_stage_detector("rule-first-pass", str(two_stage.candidate), "rule-first-pass", [1],
                                         out_name="tiny-two-stage", log=lambda *_: None)
    assert not (weights / "tiny-two-stage.json").exists() and not (weights / "tiny-two-stage.pt").exists()


def test_the_two_stage_fit_refuses_no_seeds_with_a_clear_message(weights, two_stage):
    from napari_medai.errors import MedaiError

    with pytest.raises((MedaiError, ValueError), match="seed"):
        detection.fit_two_stage_detector("rule-first-pass", str(two_stage.candidate), "rule-classifier", [],
                                         log=lambda *_: None)


# ---- through the CLI (medai train detection) ---------------------------------------------------
def test_the_cli_passes_its_seeds_and_name_and_prints_the_choice(weights, phantoms, capsys):
    import json

    from napari_medai.cli.main import main

    _seg(weights)
    assert main(["train", "detection", "--from", "rule-seg", "--seeds", "1", "2", "--measure-seeds", "2", "3",
                 "--name", "cli-detector"]) == 0
    assert sorted(phantoms) == [1, 2]
    card = json.loads((weights / "cli-detector.json").read_text())
    assert card["training"]["seeds"] == [1] and card["training"]["measurement_seeds"] == [2]
    assert card["extra"]["candidate_threshold"] == 0.2 and card["extra"]["mask_refine"]["reach_mm"] == 1.5
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == (f"cli-detector: candidate threshold 0.2, validation mean FROC "
                    f"{card['scores']['validation_froc_mean']:.3f}, finding masks refined within 1.5 mm")


def test_the_cli_fits_two_stages_with_the_first_pass_score_asked_for(weights, two_stage, capsys):
    import json

    from napari_medai.cli.main import main

    assert main(["train", "detection", "--from", "rule-first-pass", "--candidate-weights", str(two_stage.candidate),
                 "--classifier", "rule-classifier", "--first-pass-score", "max", "--seeds", "1", "2",
                 "--name", "cli-two-stage"]) == 0
    assert two_stage.made == [1]
    card = json.loads((weights / "cli-two-stage.json").read_text())
    assert card["extra"]["first_pass_score"] == "max" and card["training"]["seeds"] == [1]
    assert capsys.readouterr().out.splitlines()[-1] == "cli-two-stage: two stages, validation mean FROC 1.000"


@pytest.fixture
def devices(monkeypatch):
    """The device each network run (``run_model``) is asked for, in order."""
    from napari_medai.inference import engine

    asked, real = [], engine.select_device

    def select_device(preference="auto", spatial_dims=3):
        asked.append(str(preference))
        return real(preference, spatial_dims)

    monkeypatch.setattr(engine, "select_device", select_device)
    return asked


def test_the_cli_runs_the_network_on_the_device_asked_for(weights, phantoms, devices):
    from napari_medai.cli.main import main

    _seg(weights)
    assert main(["train", "detection", "--from", "rule-seg", "--seeds", "1", "2", "--measure-seeds", "2", "3",
                 "--name", "cli-detector", "--device", "cpu"]) == 0
    assert sorted(phantoms) == [1, 2] and devices == ["cpu", "cpu"]  # not "auto": the option reaches each run


def test_the_cli_runs_both_stages_on_the_device_asked_for(weights, two_stage, devices):
    from napari_medai.cli.main import main

    assert main(["train", "detection", "--from", "rule-first-pass", "--candidate-weights", str(two_stage.candidate),
                 "--classifier", "rule-classifier", "--seeds", "1", "2", "--name", "cli-two-stage",
                 "--device", "cpu"]) == 0
    assert two_stage.made == [1] and devices and set(devices) == {"cpu"}


@pytest.mark.parametrize("two_stages", [False, True])
def test_the_cli_refuses_a_device_this_machine_lacks_before_any_phantom(weights, phantoms, two_stage, monkeypatch,
                                                                       capsys, two_stages):
    from napari_medai.cli.main import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _seg(weights)
    extra = (["--candidate-weights", str(two_stage.candidate), "--classifier", "rule-classifier"] if two_stages
             else [])
    rc = main(["train", "detection", "--from", "rule-first-pass" if two_stages else "rule-seg", "--seeds", "1", "2",
               "--name", "cli-gpu", "--device", "cuda", *extra])
    assert rc == 2 and "a CUDA GPU was requested but none is available" in capsys.readouterr().err
    assert phantoms == [] and two_stage.made == [] and not (weights / "cli-gpu.json").exists()
