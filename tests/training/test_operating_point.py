"""Fitting a detector's default score threshold on validation scans (training.operating_point)."""

import json
from types import SimpleNamespace

import pytest
from fixed_rule_models import blob_volume, detection_card, install

import napari_medai
import napari_medai.training.phantom_dataset as phantom_dataset
from napari_medai.cli.main import main

SPACING = (2.0, 1.0, 1.0)
# Three stand-in validation scans: nodules are the listed blobs, decoys the rest.  The fixed-rule
# detector scores a blob by its brightness, so the decoys at 150 HU outrank the faint nodule at 20 HU.
SCANS = {
    1: dict(nodules=[(4, 8, 8)], blobs=((4, 8, 8, 2, 300.0), (12, 22, 22, 1, 150.0))),
    2: dict(nodules=[], blobs=((8, 20, 10, 1, 150.0),)),
    3: dict(nodules=[(10, 20, 20)], blobs=((10, 20, 20, 2, 20.0),)),
}


@pytest.fixture
def stand_in_phantoms(monkeypatch):
    def phantom_for(seed, **_):
        scan = SCANS[seed]
        nodules = [{"center_voxel": list(map(float, c)), "diameter_mm": 5.0} for c in scan["nodules"]]
        return SimpleNamespace(hu=blob_volume(blobs=scan["blobs"]), spacing=SPACING, nodules=nodules)

    monkeypatch.setattr(phantom_dataset, "phantom_for", phantom_for)


def _scores(card_path):
    return {seed: [f.score for f in napari_medai.detect(blob_volume(blobs=s["blobs"]), SPACING, model=card_path)]
            for seed, s in SCANS.items()}


def test_the_fit_writes_a_threshold_that_keeps_the_false_positive_budget(tmp_path, stand_in_phantoms):
    from napari_medai.training.operating_point import fit_operating_point

    card_path = install(detection_card(name="op-det"), tmp_path)
    scores = _scores(str(card_path))
    decoy, faint, bright = scores[2][0], scores[3][0], max(scores[1])
    assert faint < decoy < bright  # the faint nodule ranks below both decoys

    # no false positive allowed: above both decoys, so only the bright nodule stays
    op = fit_operating_point(str(card_path), seeds=[1, 2, 3], fp_per_scan=0.0, log=lambda *_: None)
    card = json.loads(card_path.read_text())
    assert card["extra"]["operating_point"] == {"score_threshold": op["score_threshold"], "fp_per_scan": 0.0}
    assert decoy < op["score_threshold"] <= bright
    assert op["fp_per_scan"] == 0.0 and op["lesions_found"] == 1 and op["lesions"] == 2
    assert card["scores"]["operating_point_fit"]["seeds"] == [1, 2, 3]
    assert "medai train operating-point" in card["scores"]["operating_point_fit"]["command"]
    assert card["weights"] and card["sha256"]  # the rest of the card is kept

    # one a scan (3 in all) covers both decoys: the faint nodule is found too
    op = fit_operating_point(str(card_path), seeds=[1, 2, 3], fp_per_scan=1.0, log=lambda *_: None)
    assert op["score_threshold"] <= faint and op["lesions_found"] == 2


def test_the_cli_dry_run_prints_and_leaves_the_card(tmp_path, stand_in_phantoms, capsys):
    card_path = install(detection_card(name="op-dry"), tmp_path)
    before = card_path.read_text()
    assert main(["train", "operating-point", "--model", str(card_path), "--seeds", "1", "4", "--dry-run"]) == 0
    assert "operating point at <= 1 false positive(s) per scan" in capsys.readouterr().out
    assert card_path.read_text() == before
    assert main(["train", "operating-point", "--model", str(card_path), "--seeds", "3", "1"]) == 2
    assert main(["train", "operating-point", "--model", str(card_path), "--fp-per-scan", "-1"]) == 2


def test_a_segmentation_card_is_refused(tmp_path):
    from fixed_rule_models import segmentation_card

    from napari_medai.training.operating_point import fit_operating_point

    seg = install(segmentation_card(name="not-a-detector"), tmp_path)
    with pytest.raises(ValueError, match="not a detector"):
        fit_operating_point(str(seg), seeds=[1], rows=[])


def test_the_cli_runs_the_detector_on_the_device_asked_for(tmp_path, stand_in_phantoms, monkeypatch):
    from napari_medai.inference import engine

    asked, real = [], engine.select_device

    def select_device(preference="auto", spatial_dims=3):  # where run_model puts the network
        asked.append(str(preference))
        return real(preference, spatial_dims)

    monkeypatch.setattr(engine, "select_device", select_device)
    card_path = install(detection_card(name="op-cpu"), tmp_path)
    assert main(["train", "operating-point", "--model", str(card_path), "--seeds", "1", "4", "--dry-run",
                 "--device", "cpu"]) == 0
    assert asked == ["cpu", "cpu", "cpu"]  # one run a scan, not on "auto"


def test_the_cli_refuses_a_device_this_machine_lacks_before_any_phantom(tmp_path, monkeypatch, capsys):
    import torch

    made = []
    monkeypatch.setattr(phantom_dataset, "phantom_for", lambda seed, **_: made.append(seed))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    card_path = install(detection_card(name="op-gpu"), tmp_path)
    before = card_path.read_text()
    assert main(["train", "operating-point", "--model", str(card_path), "--seeds", "1", "4",
                 "--device", "cuda"]) == 2
    assert "a CUDA GPU was requested but none is available" in capsys.readouterr().err
    assert made == [] and card_path.read_text() == before


def test_no_threshold_within_the_budget_is_said_and_the_card_kept(tmp_path):
    import numpy as np

    from napari_medai.errors import ModelError
    from napari_medai.metrics import target_mask
    from napari_medai.training.operating_point import fit_operating_point

    card_path = install(detection_card(name="op-saturated"), tmp_path)
    before = card_path.read_text()
    mask = target_mask((10, 30, 30), SPACING, [(5, 10, 10)], [6.0])
    rows = [([1.0, 1.0, 0.8], [(5, 25, 25), (5, 3, 3), (5, 10, 10)], mask, []),
            ([0.5], [(5, 25, 25)], np.zeros_like(mask), [])]  # two false positives at the top score
    with pytest.raises(ModelError, match="'op-saturated' on phantoms 1-2: no score threshold keeps the false positives"):
        fit_operating_point(str(card_path), seeds=[1, 2], fp_per_scan=0.5, rows=rows, log=lambda *_: None)
    assert card_path.read_text() == before
