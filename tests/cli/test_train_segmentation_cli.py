"""``medai train segmentation`` argument checks and a tiny run with component-balanced crops."""

import importlib.util
import json
from pathlib import Path

from napari_medai.cli.main import main

_spec = importlib.util.spec_from_file_location(
    "seg_train_tests", Path(__file__).resolve().parents[1] / "training" / "test_segmentation_training.py")
_seg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_seg)


def _tiny(data, out):
    return ["train", "segmentation", "--data", str(data), "--out", str(out), "--epochs", "1",
            "--iters-per-epoch", "1", "--roi", "8", "16", "16", "--threads", "1"]


def test_balance_components_must_name_foreground_classes(tmp_path, capsys):
    _seg._write_pairs(tmp_path / "data")
    assert main(_tiny(tmp_path / "data", tmp_path / "out") + ["--balance-components", "0"]) == 2
    assert "not foreground classes" in capsys.readouterr().err
    assert main(_tiny(tmp_path / "data", tmp_path / "out") + ["--balance-components", "3"]) == 2
    assert not (tmp_path / "out" / "best.pt").exists()


def test_balanced_run_records_nodule_recall(tmp_path):
    _seg._write_pairs(tmp_path / "data", n=6)
    assert main(_tiny(tmp_path / "data", tmp_path / "out") + ["--balance-components", "2"]) == 0
    history = json.loads((tmp_path / "out" / "training.json").read_text())["history"]
    assert "nodule" in history[0]["val_component_recall"]


def test_an_mr_run_takes_each_images_range_and_says_so_in_its_card(tmp_path, capsys):
    import numpy as np

    from napari_medai.io import Volume, write_volume

    (tmp_path / "mr").mkdir()
    for i in range(2):  # MR-like values: a -1000..400 HU window would make both classes 1.0
        lab = np.zeros((12, 24, 24), np.uint8)
        lab[2:10, 4:20, 4:20], lab[5:8, 10:14, 10:14] = 1, 2
        img = np.choose(lab, [200.0, 600.0, 1200.0]).astype(np.float32)
        write_volume(Volume.from_spacing(img, (2.0, 1.0, 1.0), modality="MR"), tmp_path / "mr" / f"c{i}_image.nii.gz")
        write_volume(Volume.from_spacing(lab, (2.0, 1.0, 1.0), is_labels=True), tmp_path / "mr" / f"c{i}_label.nii.gz")
    assert main(_tiny(tmp_path / "mr", tmp_path / "out") + ["--modality", "MR"]) == 0
    card = json.loads((tmp_path / "out" / "best.json").read_text())
    assert card["modality"] == "MR" and card["intensity"]["kind"] == "percentile"
    assert "medai segment IN OUT --model" in capsys.readouterr().out


def test_a_bad_install_name_is_refused_before_training(tmp_path, capsys):
    _seg._write_pairs(tmp_path / "data")
    assert main(_tiny(tmp_path / "data", tmp_path / "out") + ["--install-as", "my model.pt"]) == 2
    assert "--install-as 'my model.pt'" in capsys.readouterr().err and not (tmp_path / "out").exists()
