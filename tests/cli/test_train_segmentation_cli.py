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


def test_an_unknown_device_is_refused_before_any_case_loads_or_the_run_folder_is_made(tmp_path, capsys):
    """--device was looked at once every case had loaded, after --out was made: it was left empty."""
    _seg._write_pairs(tmp_path / "data")
    assert main(_tiny(tmp_path / "data", tmp_path / "out") + ["--device", "tpu"]) == 2
    captured = capsys.readouterr()
    assert "unknown device 'tpu'" in captured.err and "cases at spacing" not in captured.out
    assert not (tmp_path / "out").exists()


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


def _stand_in_phantoms(monkeypatch):
    """``write_phantom_case`` writes a tiny pair per seed (the same bytes for the same seed, as
    the real phantoms) and records the seeds it made, so a test sees whether anything was written."""
    import numpy as np

    from napari_medai.io import Volume, write_volume
    from napari_medai.training import phantom_dataset

    made = []

    def write_phantom_case(seed, folder, **_):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        name = phantom_dataset.case_name(seed)
        image = folder / f"{name}_image.nii.gz"
        if image.exists() and (folder / f"{name}_nodules.json").exists():
            return image
        made.append(seed)
        rng = np.random.default_rng(seed)
        lab = np.zeros((12, 24, 24), np.uint8)
        lab[2:10, 4:20, 3:21] = 1
        lab[5:8, 10:14, 10:14] = 2
        img = (np.choose(lab, [40, -800, 30]) + rng.normal(0, 20, lab.shape)).astype(np.int16)
        write_volume(Volume.from_spacing(lab, (2.0, 1.0, 1.0), is_labels=True), folder / f"{name}_label.nii.gz")
        (folder / f"{name}_nodules.json").write_text("[]")
        write_volume(Volume.from_spacing(img, (2.0, 1.0, 1.0), modality="CT"), image)
        return image

    monkeypatch.setattr(phantom_dataset, "write_phantom_case", write_phantom_case)
    return made


def _listing(folder):
    return sorted((p.name, p.read_bytes()) for p in Path(folder).iterdir()) if Path(folder).exists() else None


def test_more_phantoms_for_a_run_to_resume_are_refused_before_any_is_written(tmp_path, monkeypatch, capsys):
    """--phantoms wrote its new cases into --data before the resume check, so a re-run with a
    larger N by mistake changed the run's data, was refused, and left the cases to delete by hand."""
    made = _stand_in_phantoms(monkeypatch)
    data, out = tmp_path / "data", tmp_path / "out"
    command = _tiny(data, out) + ["--phantom-seed", "1000"]
    assert main(command + ["--phantoms", "2"]) == 0 and made == [1000, 1001]
    before = _listing(data)
    assert main(command + ["--phantoms", "3"]) == 2
    assert made == [1000, 1001] and _listing(data) == before  # case1002 used to be written, then refused
    err = capsys.readouterr().err
    assert "would change the pairs in" in err and "added: case1002" in err and "no phantom was written" in err
    # other settings as well: the trainer's own refusal, made before any phantom too
    assert main(command + ["--phantoms", "3", "--lr", "1e-3"]) == 2
    assert "holds a run with other settings (lr" in capsys.readouterr().err
    assert made == [1000, 1001] and _listing(data) == before
    # the command the run started with still finds it complete
    assert main(command + ["--phantoms", "2"]) == 0
    assert "holds this run complete" in capsys.readouterr().out and _listing(data) == before


def test_a_deleted_phantom_folder_is_made_again_only_for_the_phantoms_the_run_started_with(tmp_path, monkeypatch,
                                                                                          capsys):
    import shutil

    made = _stand_in_phantoms(monkeypatch)
    data, out = tmp_path / "data", tmp_path / "out"
    command = _tiny(data, out) + ["--phantom-seed", "1000"]
    assert main(command + ["--phantoms", "2"]) == 0
    shutil.rmtree(data)
    assert main(command + ["--phantoms", "3"]) == 2  # refused without making --data
    assert not data.exists() and made == [1000, 1001]
    assert "added: case1002" in capsys.readouterr().err
    assert main(command + ["--phantoms", "1"]) == 2  # case1001 would be missing
    assert "missing: case1001" in capsys.readouterr().err and not data.exists()
    assert main(command + ["--phantoms", "2", "--lr", "1e-3"]) == 2
    assert "other settings (lr" in capsys.readouterr().err and not data.exists()
    assert main(command + ["--phantoms", "2"]) == 0  # the same phantoms again: the run is found complete
    assert "holds this run complete" in capsys.readouterr().out and made == [1000, 1001, 1000, 1001]


def test_the_network_shape_is_chosen_on_the_command_line_and_recorded_in_the_card(tmp_path):
    # a full-grid first level (stride 1), as the detector's small-nodule experiments need
    _seg._write_pairs(tmp_path / "data")
    args = _tiny(tmp_path / "data", tmp_path / "out") + ["--channels", "4", "8", "--strides", "1", "--res-units", "1"]
    assert main(args) == 0
    kwargs = json.loads((tmp_path / "out" / "best.json").read_text())["network"]["kwargs"]
    assert (kwargs["channels"], kwargs["strides"], kwargs["num_res_units"]) == ([4, 8], [1], 1)


def test_strides_that_do_not_fit_the_channels_are_refused_before_loading(tmp_path, capsys):
    _seg._write_pairs(tmp_path / "data")
    assert main(_tiny(tmp_path / "data", tmp_path / "out") + ["--channels", "4", "8", "16", "--strides", "2"]) == 2
    assert "one value fewer than --channels" in capsys.readouterr().err
    assert main(_tiny(tmp_path / "data", tmp_path / "out") + ["--channels", "4", "0", "--strides", "2"]) == 2
    assert "at least 1" in capsys.readouterr().err
    # a stride of 4 passed, and the UNet failed mid-run on mismatched tensor sizes
    assert main(_tiny(tmp_path / "data", tmp_path / "out") + ["--channels", "4", "8", "--strides", "4"]) == 2
    assert "--strides must each be 1 (keep the grid) or 2 (halve it), got (4,)" in capsys.readouterr().err
    # a stride of 1 does not halve: 3 halvings for strides 1 2 2 2, so sizes must be multiples of 8
    args = _tiny(tmp_path / "data", tmp_path / "out")
    args[args.index("--roi") + 1:args.index("--roi") + 4] = ["8", "16", "20"]
    assert main(args + ["--channels", "4", "8", "8", "8", "8", "--strides", "1", "2", "2", "2"]) == 2
    assert "multiple of 8 (the UNet halves it 3 times)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
