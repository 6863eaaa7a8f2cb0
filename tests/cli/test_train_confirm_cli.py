"""``medai train confirm`` end to end: fixed-rule first pass, candidate network and classifier
in a temporary weights folder, fitted on tiny stand-in validation phantoms.

Scene (1 mm voxels, lung at -850 HU; as tests/api/test_two_stage.py): A, a small bright nodule
(200 HU); B, a bright rod (a vessel, 200 HU); C, a small faint nodule (-100 HU).  The first pass
calls everything above 0 HU a nodule (A and B), the candidate network everything above -300 HU
(A, B, C); the classifier accepts blobs that fill little of their patch (A, C), not the rod.
The documented rule (training/confirm.py): the best setting goes into ``extra["confirm"]`` only
where it beats the first pass alone by 0.005 mean nodule Dice; otherwise the card gets none.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from fixed_rule_models import (classifier_card, detection_card, install, segmentation_card, stand_in_phantoms,
                              unit)
from napari_medai.cli.main import main
from napari_medai.models import registry
from napari_medai.training.confirm import THRESHOLDS

A = (slice(4, 7), slice(5, 8), slice(5, 8))
B = (slice(4, 7), slice(25, 28), slice(2, 38))
C = (slice(11, 14), slice(15, 18), slice(20, 23))


def scene(vessel_and_faint_nodule: bool):
    """Phantom labels: 1 lung, 2 nodule, 3 vessel."""
    hu = np.full((16, 40, 40), -850.0, np.float32)
    labels = np.ones(hu.shape, np.uint8)
    hu[A], labels[A] = 200.0, 2
    if vessel_and_faint_nodule:
        hu[B], labels[B] = 200.0, 3
        hu[C], labels[C] = -100.0, 2
    return SimpleNamespace(hu=hu, labels=labels, spacing=(1.0, 1.0, 1.0))


SCANS = {1: lambda: scene(True), 2: lambda: scene(False)}


@pytest.fixture
def made(monkeypatch):
    return stand_in_phantoms(monkeypatch, SCANS)


@pytest.fixture
def weights(tmp_path, monkeypatch, made):
    folder = tmp_path / "weights"
    monkeypatch.setattr(registry, "WEIGHTS_DIR", folder)
    install(classifier_card("rule-classifier"), folder)
    det = detection_card("rule-two-stage", roi_size=(8, 32, 32), nodule_above=unit(-300))
    det.extra.update(classifier="rule-classifier", candidate_threshold=0.5)
    install(det, folder)
    seg = segmentation_card("rule-first-pass", roi_size=(8, 32, 32), nodule_above=unit(0))
    seg.extra.update(lesion_hosts=[1], confirm={"detector": "old-detector", "threshold": 0.9, "drop_rejected": False})
    seg.scores = {"benchmark": {"nodule_dice": 0.5}}
    install(seg, folder)
    return folder


def _confirm(*seeds, extra=()):
    return main(["train", "confirm", "--model", "rule-first-pass", "--detector", "rule-two-stage",
                 "--seeds", *map(str, seeds), *extra])


def test_the_second_opinion_is_switched_on_when_it_adds_a_missed_nodule_and_drops_a_vessel(weights, made, capsys):
    import napari_medai

    card_path = weights / "rule-first-pass.json"
    assert _confirm(1, 2) == 0
    assert made == [1]
    card = json.loads(card_path.read_text())
    confirm = card["extra"]["confirm"]
    # only dropping the rejected rod (and adding C) makes the nodules exact
    assert confirm["detector"] == "rule-two-stage" and confirm["drop_rejected"] is True
    assert confirm["threshold"] in THRESHOLDS
    fit = card["scores"]["confirm_fit"]
    assert fit["seeds"] == [1] and fit["cases_with_nodules"] == 1
    table = fit["mean_nodule_dice"]
    pred, truth = 27 + 3 * 3 * 36, 27 + 27  # first pass: A and the rod; reference: A and C
    assert table["first pass"] == pytest.approx(2 * 27 / (pred + truth), abs=1e-4)
    assert table[f"threshold {confirm['threshold']}, drop True"] == 1.0 == max(table.values())
    assert all(v < 1.0 for k, v in table.items() if k.endswith("drop False"))  # keeping the rod costs Dice
    assert card["scores"]["benchmark"] == {"nodule_dice": 0.5}  # the rest of the card is kept
    assert "second stage on" in capsys.readouterr().out
    # the card segments with it: C added, the rod given back to the lung
    labels = napari_medai.segment(scene(True).hu, (1.0, 1.0, 1.0), model=str(card_path)).labels
    assert (labels[A] == 2).all() and (labels[C] == 2).all() and (labels[B] == 1).all()
    assert (labels == 2).sum() == 54


def test_no_second_stage_when_the_first_pass_alone_is_as_good(weights, capsys):
    card_path = weights / "rule-first-pass.json"
    assert _confirm(2, 3) == 0
    card = json.loads(card_path.read_text())
    assert "confirm" not in card["extra"]  # the stale setting is gone too: the card keeps its speed
    assert card["extra"]["lesion_hosts"] == [1] and card["extra"]["lesions"] == [2]
    fit = card["scores"]["confirm_fit"]
    assert fit["seeds"] == [2] and fit["mean_nodule_dice"]["first pass"] == 1.0
    assert "no second stage" in capsys.readouterr().out


def test_dry_run_prints_the_scores_and_leaves_the_card(weights, capsys):
    card_path = weights / "rule-first-pass.json"
    before = card_path.read_text()
    assert _confirm(1, 2, extra=["--dry-run"]) == 0
    assert card_path.read_text() == before
    out = capsys.readouterr().out
    assert "mean nodule Dice" in out and "second stage on" in out and "wrote" not in out


def test_bad_arguments_exit_2_with_a_message_and_leave_the_card(weights, made, capsys):
    card_path = weights / "rule-first-pass.json"
    before = card_path.read_text()
    with pytest.raises(SystemExit) as exc:
        main(["train", "confirm", "--model", "rule-first-pass", "--seeds", "1"])
    assert exc.value.code == 2 and "--seeds" in capsys.readouterr().err
    assert main(["train", "confirm", "--model", "rule-first-pass", "--detector", "no-such-detector",
                 "--seeds", "1", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medai train: error: ") and "no built-in model called 'no-such-detector'" in err
    assert card_path.read_text() == before and made == []


@pytest.mark.parametrize("model, detector", [("rule-first-pass", "rule-plain-detector"),
                                             ("rule-plain-detector", "rule-two-stage")])
def test_models_of_the_wrong_kind_are_refused_with_a_message(weights, capsys, model, detector):
    install(detection_card("rule-plain-detector"), weights)
    assert main(["train", "confirm", "--model", model, "--detector", detector, "--seeds", "1", "2"]) == 2
    assert capsys.readouterr().err.startswith("medai train: error: ")


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")
@pytest.mark.parametrize("seeds", [(5, 5), (3, 1)])
def test_seeds_without_a_nodule_are_refused_and_leave_the_card(weights, seeds):
    card_path = weights / "rule-first-pass.json"
    before = card_path.read_text()
    assert _confirm(*seeds) == 2
    assert card_path.read_text() == before


def test_the_networks_run_on_the_device_asked_for(weights, made, monkeypatch):
    """The segmentation and candidate networks (run_model) and the classifier (score_candidates)."""
    from napari_medai.inference import device, engine

    asked = {"run_model": [], "classifier": []}

    def spy(module, key):
        real = module.select_device

        def select_device(preference="auto", spatial_dims=3):
            asked[key].append(str(preference))
            return real(preference, spatial_dims)

        monkeypatch.setattr(module, "select_device", select_device)

    spy(engine, "run_model")
    spy(device, "classifier")
    assert _confirm(1, 2, extra=["--dry-run", "--device", "cpu"]) == 0
    assert made == [1] and asked["run_model"] == ["cpu", "cpu"]  # first pass, candidates: not on "auto"
    assert asked["classifier"] and set(asked["classifier"]) == {"cpu"}


def test_a_device_this_machine_lacks_is_refused_before_any_phantom(weights, made, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    card_path = weights / "rule-first-pass.json"
    before = card_path.read_text()
    assert _confirm(1, 2, extra=["--device", "cuda"]) == 2
    assert "a CUDA GPU was requested but none is available" in capsys.readouterr().err
    assert made == [] and card_path.read_text() == before


def test_a_card_given_by_path_is_written_back_there_not_into_the_weights_folder(weights, tmp_path):
    """A run's card named like a built-in one (its --out folder's name) used to be written into the
    weights folder under that name: the built-in card replaced, pointing at a best.pt not there."""
    import shutil

    run = tmp_path / "runs" / "rule-first-pass"
    run.mkdir(parents=True)
    shutil.copy(weights / "rule-first-pass.pt", run / "best.pt")
    card = json.loads((weights / "rule-first-pass.json").read_text())
    (run / "best.json").write_text(json.dumps({**card, "weights": "best.pt"}))
    shipped = (weights / "rule-first-pass.json").read_text()
    assert main(["train", "confirm", "--model", str(run / "best.json"), "--detector", "rule-two-stage",
                 "--seeds", "1", "2"]) == 0
    assert (weights / "rule-first-pass.json").read_text() == shipped
    assert sorted(p.name for p in weights.glob("*.json")) == ["rule-classifier.json", "rule-first-pass.json",
                                                              "rule-two-stage.json"]
    fitted = json.loads((run / "best.json").read_text())
    assert fitted["weights"] == "best.pt" and fitted["extra"]["confirm"]["detector"] == "rule-two-stage"
