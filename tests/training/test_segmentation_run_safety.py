"""Segmentation training: which cases validate and how a checkpoint is scored, the --modality
check of the training images, and what a killed run leaves behind (tiny synthetic pairs)."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_medai.errors import InputError
from napari_medai.io import Volume, write_volume
from napari_medai.training.segmentation import train_segmentation

_spec = importlib.util.spec_from_file_location(
    "seg_train_tests", Path(__file__).resolve().parent / "test_segmentation_training.py")
_seg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_seg)
_write_pairs, _cfg, _stopped_in_second_epoch = _seg._write_pairs, _seg._cfg, _seg._stopped_in_second_epoch


def _empty_labels(folder, *cases):
    """Overwrite these cases' label files with all-background labels."""
    for case in cases:
        write_volume(Volume.from_spacing(np.zeros((12, 24, 24), np.uint8), (2.0, 1.0, 1.0), is_labels=True),
                     folder / f"{case}_label.nii.gz")


# --- validation cases and the checkpoint score ---------------------------------------------------

def test_classes_absent_from_every_validation_case_do_not_count():
    from napari_medai.training.device import TrainingDevice
    from napari_medai.training.segmentation import _score, _validate

    image = np.zeros((12, 24, 24), np.float32)
    target = np.zeros((12, 24, 24), np.uint8)
    image[4:7, 4:8, 4:8], target[4:7, 4:8, 4:8] = 1.0, 2  # a nodule the rule finds; no lung anywhere
    cfg = _cfg("unused", "unused")
    dice, recall, *_ = _validate(_seg._BrightIsNodule(), [SimpleNamespace(image=image, target=target, name="c")],
                                 cfg, TrainingDevice(torch.device("cpu"), False))
    # MONAI's mean of an all-NaN (absent) class is 0: it used to pull this perfect score to 0.5
    assert dice == {"nodule": 1.0} and _score(dice, recall) == 1.0


def test_validation_cases_are_chosen_among_those_with_foreground(tmp_path):
    _write_pairs(tmp_path / "data")
    _empty_labels(tmp_path / "data", "case0")  # alphabetically first: it used to be the validation case
    logged = []
    s = train_segmentation(_cfg(tmp_path / "data", tmp_path / "run", epochs=1), log=logged.append)
    assert "validation case(s): case1" in logged
    assert s["n_val"] == 1 and set(s["history"][0]["val_dice"]) == {"lung", "nodule"}


def test_without_foreground_in_validation_the_score_is_the_validation_loss(tmp_path):
    _write_pairs(tmp_path / "data")
    # case2, the only case with foreground, stays in training: the validation case holds none
    _empty_labels(tmp_path / "data", "case0", "case1")
    logged = []
    s = train_segmentation(_cfg(tmp_path / "data", tmp_path / "run", epochs=2), log=logged.append)
    assert any("validation loss" in line for line in logged)
    losses = [h["val_loss"] for h in s["history"]]
    assert all(v > 0 for v in losses)
    # a Dice of 0 every epoch kept epoch 1 whatever followed
    assert s["best_score"] == pytest.approx(-min(losses))


# --- the images against --modality -----------------------------------------------------------------

def _pairs(folder, values, modality, n=2):
    """Two pairs whose background, lung and nodule have these intensities."""
    folder.mkdir(parents=True)
    for i in range(n):
        lab = np.zeros((12, 24, 24), np.uint8)
        lab[2:10, 4:20, 4:20], lab[5:8, 10:14, 10:14] = 1, 2
        img = np.choose(lab, values).astype(np.float32)
        write_volume(Volume.from_spacing(img, (2.0, 1.0, 1.0), modality=modality), folder / f"c{i}_image.nii.gz")
        write_volume(Volume.from_spacing(lab, (2.0, 1.0, 1.0), is_labels=True), folder / f"c{i}_label.nii.gz")


def test_mr_images_are_refused_for_a_ct_run_before_training(tmp_path):
    _pairs(tmp_path / "mr", [200.0, 600.0, 1200.0], "MR")  # no value below 0
    with pytest.raises(InputError, match=r"c0_image.nii.gz: .*--modality MR"):
        train_segmentation(_cfg(tmp_path / "mr", tmp_path / "run"), log=lambda *_: None)
    assert not (tmp_path / "run" / "best.pt").exists()


def test_ct_images_in_a_deep_learning_scale_are_refused_for_a_ct_run_and_said_so(tmp_path):
    _pairs(tmp_path / "scaled", [-1.0, -0.85, 0.03], "CT")  # HU/1000: below 0, but no HU
    with pytest.raises(InputError, match=r"c0_image.nii.gz: .*span too little for Hounsfield units.*in HU"):
        train_segmentation(_cfg(tmp_path / "scaled", tmp_path / "run"), log=lambda *_: None)


def test_ct_images_are_refused_for_an_mr_run(tmp_path):
    _pairs(tmp_path / "ct", [-1000.0, -850.0, 30.0], "CT")  # air in HU
    with pytest.raises(InputError, match=r"c0_image.nii.gz: .*--modality CT"):
        train_segmentation(_cfg(tmp_path / "ct", tmp_path / "run", modality="MR", intensity="percentile"),
                           log=lambda *_: None)


# --- interruption ----------------------------------------------------------------------------------

def test_an_interrupted_run_leaves_best_pt_with_its_card(tmp_path):
    from napari_medai.models.registry import sha256_of

    _write_pairs(tmp_path / "data")
    cfg = _cfg(tmp_path / "data", tmp_path / "run", epochs=3)
    _stopped_in_second_epoch(cfg)
    card = tmp_path / "run" / "best.json"
    assert card.is_file() and not (tmp_path / "run" / "training.json").exists()
    import json

    assert json.loads(card.read_text())["sha256"] == sha256_of(tmp_path / "run" / "best.pt")


def test_a_kill_while_writing_last_pt_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    _write_pairs(tmp_path / "data")
    real_save, states = torch.save, []

    def killed_on_the_second_state(obj, path, *a, **k):
        if isinstance(obj, dict) and "opt" in obj:
            states.append(obj["epoch"])
            if len(states) == 2:  # half a file, then the process dies
                Path(path).write_bytes(b"PK\x03\x04 cut off")
                raise KeyboardInterrupt
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", killed_on_the_second_state)
    with pytest.raises(KeyboardInterrupt):
        train_segmentation(_cfg(tmp_path / "data", tmp_path / "run", epochs=2), log=lambda *_: None)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["epoch"] == 0


def test_a_cut_off_last_pt_is_said_in_one_line_not_a_traceback(tmp_path):
    _write_pairs(tmp_path / "data")
    cfg = _cfg(tmp_path / "data", tmp_path / "run", epochs=1)
    train_segmentation(cfg, log=lambda *_: None)
    last = tmp_path / "run" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(InputError, match=r"last.pt cannot be read.*delete it.*another --out") as exc:
        train_segmentation(cfg, log=lambda *_: None)
    assert "\n" not in str(exc.value)


def test_a_training_image_in_hu_x10_is_refused_for_what_it_is_not_for_its_span():
    """The Hounsfield-scale rules (HU x 10) refuse it at inference; training said its values
    "span too little", which a range of -20000 to 4800 does not."""
    from napari_medai.training.seg_data import check_image_modality

    rng = np.random.default_rng(0)
    hu_x10 = (rng.normal(-700, 300, (12, 24, 24)) * 10).astype(np.float32)
    with pytest.raises(InputError) as refused:
        check_image_modality(hu_x10, "CT", "c0_image.nii.gz")
    assert "span too little" not in str(refused.value)
    assert "wrong rescale (e.g. HU x 10)" in str(refused.value)


def test_a_run_killed_between_its_last_pt_and_training_json_is_finished(tmp_path, monkeypatch, capsys):
    """The final last.pt written, then a kill before training.json: the run could never be finished
    (KeyError 'time_s' building its card, then in the command's last line)."""
    import json

    from napari_medai.cli.main import main
    from napari_medai.models import registry

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "weights")
    _write_pairs(tmp_path / "data")
    run = tmp_path / "run"
    command = ["train", "segmentation", "--data", str(tmp_path / "data"), "--out", str(run), "--epochs", "1",
               "--iters-per-epoch", "1", "--roi", "8", "16", "16", "--threads", "1"]
    assert main(command) == 0
    first = json.loads((run / "training.json").read_text())
    (run / "training.json").unlink()
    assert main(command + ["--install-as", "finished"]) == 0
    again = json.loads((run / "training.json").read_text())
    assert {k: again[k] for k in ("n_train", "n_val", "bf16", "device")} == \
        {k: first[k] for k in ("n_train", "n_val", "bf16", "device")} and again["time_s"] > 0
    assert registry.get_card("finished").training["n_train"] == first["n_train"]
    # a last.pt written before it recorded them: finished all the same, without the figures it lacks
    state = torch.load(run / "last.pt", weights_only=False)
    torch.save({k: v for k, v in state.items() if k not in ("time_s", "n_train", "n_val", "bf16", "device")},
               run / "last.pt")
    (run / "training.json").unlink()
    capsys.readouterr()
    assert main(command + ["--install-as", "finished-old", "--replace"]) == 0
    assert "best validation score" in capsys.readouterr().out
    assert registry.get_card("finished-old").training["time_s"] is None


def test_a_run_resumes_only_in_the_precision_it_started_in(tmp_path):
    """bf16 autocast is not bit-reproducible: a run started in it and resumed in fp32 (or the
    reverse) is neither run.  A last.pt from before the precision was recorded resumes as it did."""
    _write_pairs(tmp_path / "data")
    train_segmentation(_cfg(tmp_path / "data", tmp_path / "run", epochs=1), log=lambda *_: None)
    with pytest.raises(InputError, match=r"other settings \(bf16 True -> False\)"):
        train_segmentation(_cfg(tmp_path / "data", tmp_path / "run", epochs=1, bf16=False), log=lambda *_: None)
    last = tmp_path / "run" / "last.pt"
    state = torch.load(last, weights_only=False)
    del state["settings"]["bf16"]
    torch.save(state, last)
    logged = []
    train_segmentation(_cfg(tmp_path / "data", tmp_path / "run", epochs=1, bf16=False), log=logged.append)
    assert any("holds this run complete" in line for line in logged)
