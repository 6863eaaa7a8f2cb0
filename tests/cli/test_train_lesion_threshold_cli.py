"""``medai train lesion-threshold`` end to end: a fixed-rule segmentation card in a temporary
weights folder, fitted on tiny stand-in validation phantoms whose answer is known.

The rule network calls voxels under -200 HU lung and over -100 HU nodule, steeply, so a voxel's
nodule probability follows its HU alone: -105 HU gives 0.33 (background wins the argmax).
The documented rule (training/lesion_threshold.py): the highest threshold within 0.005 mean
Dice of the best; mirroring and edge refinement only for a gain of 0.005, then the shortest reach.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fixed_rule_models import ThresholdSegmenter, install, segmentation_card, stand_in_phantoms, unit
from napari_medai.cli.main import main
from napari_medai.models import registry

RULE = dict(lung_below=unit(-200), nodule_above=unit(-100), steepness=200.0)
FAINT_HU = -105.0


def _lung(shape):
    return np.full(shape, -850.0, np.float32), np.ones(shape, np.uint8)  # phantom labels: 1 lung


def faint_nodule_scan():
    """A 3 x 4 x 4 nodule at p 0.33: only thresholds 0.3 and below label it."""
    hu, labels = _lung((16, 32, 32))
    hu[6:9, 12:16, 12:16], labels[6:9, 12:16, 12:16] = FAINT_HU, 2
    return SimpleNamespace(hu=hu, labels=labels, spacing=(2.0, 1.0, 1.0))


def no_nodule_scan():
    hu, labels = _lung((16, 32, 32))
    return SimpleNamespace(hu=hu, labels=labels, spacing=(2.0, 1.0, 1.0))


def rim_scan():
    """1 mm voxels: a 200 HU core, 5 voxels a side, in a -300 HU rim one voxel thick (the
    reference is both).  The rule draws the core and calls the rim lung; the half-maximum contour
    (-325 HU) takes the rim.  The rim's faces lie 1 mm from the core, its edges sqrt(2), its
    corners sqrt(3): Dice 0.89 at 1.0 mm, 0.99 at 1.5 mm, 1.0 only at 2.0 mm."""
    hu, labels = _lung((20, 24, 24))
    hu[7:14, 9:16, 9:16], labels[7:14, 9:16, 9:16] = -300.0, 2
    hu[8:13, 10:15, 10:15] = 200.0
    return SimpleNamespace(hu=hu, labels=labels, spacing=(1.0, 1.0, 1.0))


def rim_and_unsure_scan():
    """``rim_scan``'s nodule and, 14 mm away, a false positive the rule is unsure of: a 3-voxel
    cube at -90 HU (nodule p 0.81 < 0.9) in a one-voxel -300 HU ring that the rule calls lung
    and the half-maximum contour (-470 HU) would take.  The reference calls both lung."""
    hu, labels = _lung((20, 24, 48))
    hu[7:14, 9:16, 9:16], labels[7:14, 9:16, 9:16] = -300.0, 2
    hu[8:13, 10:15, 10:15] = 200.0
    hu[9:14, 10:15, 29:34] = -300.0
    hu[10:13, 11:14, 30:33] = -90.0
    return SimpleNamespace(hu=hu, labels=labels, spacing=(1.0, 1.0, 1.0))


SCANS = {1: faint_nodule_scan, 2: no_nodule_scan, 3: rim_scan, 5: rim_and_unsure_scan}


@pytest.fixture
def made(monkeypatch):
    """The seeds of the stand-in phantoms made, in order."""
    return stand_in_phantoms(monkeypatch, SCANS)


@pytest.fixture
def weights(tmp_path, monkeypatch, made):
    folder = tmp_path / "weights"
    monkeypatch.setattr(registry, "WEIGHTS_DIR", folder)
    return folder


def _install(folder, name="rule-seg", **extra):
    card = segmentation_card(name, roi_size=(8, 32, 32), **RULE)
    card.extra.update(extra)
    card.scores = {"benchmark": {"nodule_dice": 0.5}}
    return install(card, folder)


def test_the_faint_nodules_probability_lies_between_the_thresholds_0_3_and_0_4():
    x = torch.tensor([(FAINT_HU + 1000.0) / 1400.0]).reshape(1, 1, 1, 1, 1)
    p = torch.softmax(ThresholdSegmenter(**RULE)(x), 1)[0, :, 0, 0, 0]
    assert 0.3 < float(p[2]) < 0.4 and int(p.argmax()) == 0


def test_the_fit_takes_the_threshold_that_finds_the_faint_nodule_and_drops_mirroring_that_gains_nothing(
        weights, made, capsys):
    card_path = _install(weights, tta="mirror")
    weights_before = (weights / "rule-seg.pt").read_bytes()
    assert main(["train", "lesion-threshold", "--model", "rule-seg", "--seeds", "1", "3"]) == 0
    assert sorted(set(made)) == [1, 2]
    card = json.loads(card_path.read_text())
    # 0.5 and 0.4 miss the nodule (Dice 0), 0.3 and below find exactly it (Dice 1): the highest wins
    assert card["extra"]["lesion_threshold"] == 0.3
    # a voxel-wise rule scores the same mirrored: four times the time for nothing is switched off
    assert card["extra"]["tta"] == "off"
    assert "lesion_refine" not in card["extra"]
    fit = card["scores"]["lesion_threshold_fit"]
    assert fit["seeds"] == [1, 2] and fit["cases_with_nodules"] == 1  # the scan without a nodule is skipped
    for mirroring in ("off", "mirror-lesions"):  # the default choices
        assert fit["mean_nodule_dice"][mirroring] == {"0.5": 0.0, "0.4": 0.0, "0.3": 1.0, "0.2": 1.0,
                                                      "0.15": 1.0, "0.1": 1.0}
    assert fit["chosen"] == {"tta": "off", "lesion_threshold": 0.3, "lesion_refine_reach_mm": None,
                             "lesion_confident": None}
    assert "lesion_confident" not in card["extra"]
    # the rest of the card is the model's own: same weights, same benchmark figures
    assert (weights / "rule-seg.pt").read_bytes() == weights_before
    assert card["sha256"] and card["weights"] == "rule-seg.pt"
    assert card["scores"]["benchmark"] == {"nodule_dice": 0.5}
    out = capsys.readouterr().out
    assert "chosen: mirroring off, lesion threshold 0.3" in out and f"wrote {card_path}" in out


def test_try_refinement_switches_on_the_only_reach_that_takes_the_whole_rim(weights):
    card_path = _install(weights, lesion_hosts=[1])
    assert main(["train", "lesion-threshold", "--model", "rule-seg", "--seeds", "3", "4", "--mirroring", "off",
                 "--try-refinement"]) == 0
    card = json.loads(card_path.read_text())
    assert card["extra"]["lesion_refine"] == {"reach_mm": 2.0, "level": 0.5}
    assert card["extra"]["lesion_threshold"] == 0.5  # every threshold draws the same core: the highest
    fit = card["scores"]["lesion_threshold_fit"]
    assert set(fit["mean_nodule_dice"]) == {"off"}  # only the mirroring asked for was run
    refined = fit["mean_nodule_dice_refined"]["off"]
    assert set(refined) == {"1.0", "1.5", "2.0"}
    core, whole = 5 ** 3, 7 ** 3
    assert fit["mean_nodule_dice"]["off"]["0.5"] == pytest.approx(2 * core / (core + whole), abs=1e-4)
    assert refined["1.0"]["0.5"] == pytest.approx(2 * (core + 6 * 25) / (core + 6 * 25 + whole), abs=1e-4)
    assert refined["1.5"]["0.5"] == pytest.approx(2 * (whole - 8) / (2 * whole - 8), abs=1e-4)
    assert refined["2.0"]["0.5"] == 1.0
    assert fit["chosen"]["lesion_refine_reach_mm"] == 2.0


def test_try_confidence_refines_only_the_nodule_the_network_is_sure_of(weights):
    # --thresholds 0.5 keeps the argmax.  Unlimited, the refinement takes the rim and also grows
    # the unsure false positive into its ring; limited to p >= 0.9 or 0.99 it leaves that alone.
    card_path = _install(weights, lesion_hosts=[1])
    assert main(["train", "lesion-threshold", "--model", "rule-seg", "--seeds", "5", "6", "--mirroring", "off",
                 "--try-refinement", "--try-confidence", "--thresholds", "0.5"]) == 0
    card = json.loads(card_path.read_text())
    assert card["extra"]["lesion_threshold"] == 0.5 and card["extra"]["lesion_confident"] == 0.99
    assert card["extra"]["lesion_refine"] == {"reach_mm": 2.0, "level": 0.5}
    fit = card["scores"]["lesion_threshold_fit"]
    assert set(fit["mean_nodule_dice"]["off"]) == {"0.5"}  # only the threshold asked for
    gated = fit["mean_nodule_dice_confident"]["off"]
    assert set(gated) == {"0.9", "0.99"} and set(gated["0.99"]) == {"none", "1.0", "1.5", "2.0"}
    whole, blob, ring = 7 ** 3, 3 ** 3, 5 ** 3 - 3 ** 3
    assert gated["0.99"]["2.0"]["0.5"] == pytest.approx(2 * whole / (2 * whole + blob), abs=1e-4)
    unlimited = fit["mean_nodule_dice_refined"]["off"]["2.0"]["0.5"]
    assert unlimited == pytest.approx(2 * whole / (2 * whole + blob + ring), abs=1e-4)
    assert gated["0.9"]["2.0"]["0.5"] == gated["0.99"]["2.0"]["0.5"]  # p 0.81: below both levels
    assert fit["chosen"]["lesion_confident"] == 0.99
    assert fit["command"].endswith("--mirroring off --thresholds 0.5 --try-refinement --try-confidence")


def test_thresholds_above_one_half_exit_2_and_leave_the_card(weights, capsys):
    card_path = _install(weights)
    before = card_path.read_text()
    assert main(["train", "lesion-threshold", "--model", "rule-seg", "--seeds", "1", "2", "--thresholds", "0.6"]) == 2
    assert "(0, 0.5]" in capsys.readouterr().err
    assert card_path.read_text() == before


def test_dry_run_leaves_the_card_and_a_single_mirroring_choice_is_taken_as_given(weights, capsys):
    card_path = _install(weights)
    before = card_path.read_text()
    assert main(["train", "lesion-threshold", "--model", "rule-seg", "--seeds", "1", "2", "--dry-run"]) == 0
    assert card_path.read_text() == before
    assert "chosen: mirroring off, lesion threshold 0.3" in capsys.readouterr().out
    assert main(["train", "lesion-threshold", "--model", "rule-seg", "--seeds", "1", "2", "--mirroring",
                 "mirror"]) == 0
    card = json.loads(card_path.read_text())
    assert card["extra"]["tta"] == "mirror" and card["extra"]["lesion_threshold"] == 0.3
    assert set(card["scores"]["lesion_threshold_fit"]["mean_nodule_dice"]) == {"mirror"}


def test_bad_arguments_exit_2_with_a_message_and_leave_the_card(weights, made, capsys):
    card_path = _install(weights)
    before = card_path.read_text()
    with pytest.raises(SystemExit) as exc:
        main(["train", "lesion-threshold", "--model", "rule-seg", "--mirroring", "sideways"])
    assert exc.value.code == 2 and "invalid choice: 'sideways'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "lesion-threshold", "--model", "rule-seg", "--seeds", "1"])
    assert exc.value.code == 2 and "--seeds" in capsys.readouterr().err
    assert main(["train", "lesion-threshold", "--model", "no-such-model", "--seeds", "1", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medai train: error: ") and "no built-in model called 'no-such-model'" in err
    assert card_path.read_text() == before and made == []


def test_a_model_without_a_lesion_class_is_refused_with_a_message(weights, capsys):
    from fixed_rule_models import detection_card

    install(detection_card("rule-det"), weights)  # a detector card lists no extra["lesions"]
    assert main(["train", "lesion-threshold", "--model", "rule-det", "--seeds", "1", "2"]) == 2
    assert "names no lesion class" in capsys.readouterr().err


@pytest.mark.parametrize("seeds", [("5", "5"), ("3", "1"), ("2", "3")])
def test_seeds_without_a_nodule_are_refused_and_leave_the_card(weights, capsys, seeds):
    card_path = _install(weights, tta="mirror", lesion_threshold=0.3)
    before = card_path.read_text()
    assert main(["train", "lesion-threshold", "--model", "rule-seg", "--seeds", *seeds]) == 2
    assert card_path.read_text() == before


def test_an_install_name_that_is_no_file_name_is_refused(weights, capsys):
    _install(weights)
    rc = main(["train", "lesion-threshold", "--model", "rule-seg", "--seeds", "1", "2", "--mirroring", "off",
               "--install-as", "../escaped"])
    assert rc == 2 and not (weights.parent / "escaped.json").exists()


def test_the_network_runs_on_the_device_asked_for(weights, made, monkeypatch):
    from napari_medai.inference import engine

    asked, real = [], engine.select_device

    def select_device(preference="auto", spatial_dims=3):  # where run_model puts the network
        asked.append(str(preference))
        return real(preference, spatial_dims)

    monkeypatch.setattr(engine, "select_device", select_device)
    _install(weights)
    assert main(["train", "lesion-threshold", "--model", "rule-seg", "--seeds", "1", "2", "--dry-run",
                 "--device", "cpu"]) == 0
    assert made == [1] and asked == ["cpu", "cpu"]  # mirroring off and on, not on "auto"


def test_a_device_this_machine_lacks_is_refused_before_any_phantom(weights, made, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    card_path = _install(weights)
    before = card_path.read_text()
    assert main(["train", "lesion-threshold", "--model", "rule-seg", "--seeds", "1", "2", "--device", "cuda"]) == 2
    assert "a CUDA GPU was requested but none is available" in capsys.readouterr().err
    assert made == [] and card_path.read_text() == before
