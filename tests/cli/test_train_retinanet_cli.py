"""``medai train retinanet``: refusals and a one-step run on tiny pairs."""

import json

import numpy as np
import pytest
from tiny_pairs import write_nodule_pairs

from napari_medai.cli.main import main
from napari_medai.io import Volume, write_volume


def test_a_missing_folder_or_data_without_nodules_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", "retinanet", "--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    lung = np.zeros((8, 16, 16), np.uint8)
    lung[2:6, 4:12, 4:12] = 1
    write_volume(Volume.from_spacing(np.full(lung.shape, -800, np.int16), (2.0, 1.0, 1.0)), empty / "a_image.nii.gz")
    write_volume(Volume.from_spacing(lung, (2.0, 1.0, 1.0), is_labels=True), empty / "a_label.nii.gz")
    assert main(["train", "retinanet", "--data", str(empty), "--out", str(out)]) == 2
    assert "no nodules" in capsys.readouterr().err
    assert not out.exists()  # it was made before the cases loaded, and left empty


def test_an_unknown_device_is_refused_before_the_run_folder_is_made(tmp_path, capsys):
    """--device was looked at after --out was made: the run folder was left empty."""
    write_nodule_pairs(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", "retinanet", "--data", str(tmp_path / "data"), "--out", str(out), "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err
    assert not out.exists()


def test_one_step_through_the_cli_writes_weights_and_a_summary(tmp_path):
    write_nodule_pairs(tmp_path / "data")
    out = tmp_path / "run"
    rc = main(["train", "retinanet", "--data", str(tmp_path / "data"), "--out", str(out), "--iterations", "1",
               "--batch-size", "2", "--patch", "8", "32", "32", "--threads", "1"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nodules"] == 4 and summary["iterations"] == 1 and summary["bf16"] is False
    assert (out / "final.pt").is_file() and (out / "last.pt").is_file()


@pytest.mark.parametrize("option, value, said", [
    ("--iterations", "0", "--iterations must be at least 1"), ("--batch-size", "0", "--batch-size must be at least 1"),
    ("--threads", "0", "--threads must be at least 1"), ("--lr", "-1", "--lr must be positive"),
    ("--lr", "0", "--lr must be positive")])
def test_bad_numbers_are_refused_before_any_case_loads(tmp_path, capsys, option, value, said):
    """--iterations 0 wrote NaN into summary.json (not JSON); the others failed after loading."""
    out = tmp_path / "run"
    # no --data folder: a check after loading would say that instead
    assert main(["train", "retinanet", "--data", str(tmp_path / "nowhere"), "--out", str(out), option, value]) == 2
    assert said in capsys.readouterr().err
    assert not out.exists()
