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
