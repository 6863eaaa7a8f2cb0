"""``--install-as NAME`` of ``medai train segmentation`` and ``medai train lesion-threshold``:
an installed name is written over only with ``--replace`` (the shipped chest-ct-lung-nodule.pt is
shared by two other cards, which stop loading when it changes), and the run says which cards."""

import importlib.util
import re
from pathlib import Path

import pytest

from napari_medai.cli.main import main
from napari_medai.errors import ModelError
from napari_medai.models import registry
from napari_medai.models.card import load_card, save_card

_spec = importlib.util.spec_from_file_location(
    "seg_train_tests", Path(__file__).resolve().parents[1] / "training" / "test_segmentation_training.py")
_seg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_seg)

ROOT = Path(__file__).resolve().parents[2]


def _tiny(data, out):
    return ["train", "segmentation", "--data", str(data), "--out", str(out), "--epochs", "1",
            "--iters-per-epoch", "1", "--roi", "8", "16", "16", "--threads", "1"]


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """A weights folder with model ``base`` and a variant card ``base-edges`` sharing base.pt."""
    from napari_medai.training.segmentation import SegTrainConfig, build_unet, make_card

    folder = tmp_path / "weights"
    monkeypatch.setattr(registry, "WEIGHTS_DIR", folder)
    cfg = SegTrainConfig(data="unused", out="unused", roi=(8, 16, 16))
    registry.save_builtin(make_card(cfg, "base"), build_unet(cfg), folder=folder)
    variant = load_card(folder / "base.json")
    variant.name = "base-edges"
    variant.train_command = ("medai train segmentation ...; then medai train lesion-threshold --model base "
                             "--try-refinement --install-as base-edges")
    save_card(variant, folder / "base-edges.json")
    return folder


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_an_installed_name_is_refused_before_training_without_replace(tmp_path, weights, capsys):
    _seg._write_pairs(tmp_path / "data")
    before = _files(weights)
    assert main(_tiny(tmp_path / "data", tmp_path / "out") + ["--install-as", "base"]) == 2
    err = capsys.readouterr().err
    assert "--install-as base" in err and "already installed" in err and "--replace" in err
    assert not (tmp_path / "out").exists()  # refused before any training
    assert _files(weights) == before


def test_replace_names_the_cards_that_share_the_weights_and_writes_over_them(tmp_path, weights, capsys):
    _seg._write_pairs(tmp_path / "data")
    assert main(_tiny(tmp_path / "data", tmp_path / "out") + ["--install-as", "base", "--replace"]) == 0
    out = capsys.readouterr().out
    # said before the training's first line
    warning = out.index("base-edges")
    assert warning < out.index("training and")
    assert "medai train lesion-threshold --model base --try-refinement --install-as base-edges --replace" in out
    card = registry.get_card("base", folder=weights)
    assert card.sha256 == registry.sha256_of(weights / "base.pt")
    with pytest.raises(ModelError, match="sha256 does not match"):  # as the warning said
        registry.load_state_dict(registry.get_card("base-edges", folder=weights))


def test_the_shipped_cards_sharing_weights_come_with_their_refit_commands(capsys):
    from napari_medai.cli._common import check_install_name

    check_install_name("chest-ct-lung-nodule", replace=True)  # the real weights folder: read only
    out = capsys.readouterr().out
    assert "chest-ct-lung-nodule-argmax" in out and "lung-nodule-detection" in out
    assert "medai train detection --from chest-ct-lung-nodule" in out
    assert "medai train operating-point --model lung-nodule-detection" in out


def test_save_builtin_never_replaces_weights_another_card_uses(weights):
    from napari_medai.training.segmentation import SegTrainConfig, build_unet, make_card

    cfg = SegTrainConfig(data="unused", out="unused", roi=(8, 16, 16))
    before = (weights / "base.pt").read_bytes()
    with pytest.raises(ModelError, match="base-edges"):
        registry.save_builtin(make_card(cfg, "base"), build_unet(cfg), folder=weights)
    assert (weights / "base.pt").read_bytes() == before
    registry.save_builtin(make_card(cfg, "base"), build_unet(cfg), folder=weights, replace=True)
    assert registry.get_card("base", folder=weights).sha256 == registry.sha256_of(weights / "base.pt")


def test_lesion_threshold_refuses_an_installed_name_before_the_model_loads(weights, monkeypatch, capsys):
    from napari_medai.training import lesion_threshold

    calls = []
    monkeypatch.setattr(lesion_threshold, "fit_lesion_threshold", lambda *a, **k: calls.append(k))
    assert main(["train", "lesion-threshold", "--model", "base", "--install-as", "base-edges"]) == 2
    assert "--replace" in capsys.readouterr().err and calls == []
    # a dry run writes no card: nothing to refuse
    assert main(["train", "lesion-threshold", "--model", "base", "--install-as", "base-edges", "--dry-run"]) == 0
    assert main(["train", "lesion-threshold", "--model", "base", "--install-as", "base-edges", "--replace"]) == 0
    assert [k["install_as"] for k in calls] == ["base-edges", "base-edges"]


def test_the_retraining_script_replaces_the_names_it_reinstalls():
    """scripts/train_models.sh installs over the shipped names: each such command needs --replace."""
    shipped = {p.stem for p in (ROOT / "src" / "napari_medai" / "models" / "weights").glob("*.json")}
    script = (ROOT / "scripts" / "train_models.sh").read_text()
    commands = re.sub(r"\\\n\s*", " ", script).splitlines()
    installs = [line for line in commands if re.search(r"--install-as (\S+)", line)
                and re.search(r"--install-as (\S+)", line).group(1) in shipped]
    assert len(installs) == 2 and all("--replace" in line for line in installs)


@pytest.mark.parametrize("command", [["train", "retinanet"], ["train", "nodule-classifier"]])
def test_the_box_detector_and_classifier_commands_refuse_an_installed_name_too(tmp_path, weights, capsys,
                                                                               command):
    before = _files(weights)
    args = command + ["--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "out"), "--install-as", "base"]
    assert main(args) == 2  # before any data is read: the folder given does not even exist
    assert "already installed" in capsys.readouterr().err and _files(weights) == before
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, replace, weights_written", [
    (["segmentation", "--data", "{tmp}/data", "--out", "{tmp}/out"], False, True),
    (["segmentation", "--data", "{tmp}/data", "--out", "{tmp}/out", "--replace"], True, True),
    (["retinanet", "--data", "{tmp}/data", "--out", "{tmp}/out"], False, True),
    (["nodule-classifier", "--data", "{tmp}/data", "--out", "{tmp}/out"], False, True),
    (["lesion-threshold", "--model", "base", "--seeds", "1", "2"], False, False),
    (["lesion-threshold", "--model", "base", "--seeds", "1", "2", "--dry-run"], True, False),
    (["lesion-threshold", "--model", "base", "--seeds", "1", "2", "--replace"], True, False),
])
def test_every_training_command_checks_install_as_through_one_helper_before_its_work(
        tmp_path, monkeypatch, capsys, command, replace, weights_written):
    """cli._common.check_install_as: the --install-as guard the training commands each used to
    repeat; lesion-threshold passes replace=--replace or --dry-run and weights=False."""
    from napari_medai.cli import _common
    from napari_medai.errors import InputError

    calls = []

    def check_install_as(args, replace=None, weights=True):
        calls.append((args.install_as, args.replace if replace is None else replace, weights))
        raise InputError("stopped at the install-name check")

    monkeypatch.setattr(_common, "check_install_as", check_install_as)
    argv = ["train", *(a.replace("{tmp}", str(tmp_path)) for a in command), "--install-as", "mine"]
    assert main(argv) == 2
    assert "stopped at the install-name check" in capsys.readouterr().err
    assert calls == [("mine", replace, weights_written)]
    assert not (tmp_path / "out").exists()  # before any data is read or any training


def test_check_install_as_does_nothing_without_the_option_and_refuses_an_installed_name(weights):
    from types import SimpleNamespace

    from napari_medai.cli._common import check_install_as
    from napari_medai.errors import InputError

    check_install_as(SimpleNamespace(install_as=None, replace=False))
    check_install_as(SimpleNamespace(install_as="new-name", replace=False))
    with pytest.raises(InputError, match="already installed"):
        check_install_as(SimpleNamespace(install_as="base", replace=False))
    check_install_as(SimpleNamespace(install_as="base", replace=True))
    check_install_as(SimpleNamespace(install_as="base", replace=False), replace=True, weights=False)
    with pytest.raises(InputError, match="use letters"):
        check_install_as(SimpleNamespace(install_as="../up", replace=True))


def _shared(folder, name):
    """``name`` installed in ``folder`` with a second card ``name-variant`` sharing its weights."""
    from fixed_rule_models import install, segmentation_card

    install(segmentation_card(name), folder)
    variant = load_card(folder / f"{name}.json")
    variant.name = f"{name}-variant"
    save_card(variant, folder / f"{name}-variant.json")


def _fake_retinanet(cfg, log=print, progress=None):
    """Stands in for the training: final.pt of an untrained detector and the summary's keys."""
    import torch

    from napari_medai.training import retinanet

    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    torch.save(retinanet.build_detector(cfg).state_dict(), Path(cfg.out) / "final.pt")
    return {"cases": ["a"], "nodules": 1, "iterations": 1, "train_seconds": 0.0, "final_losses": [0, 0],
            "device": "cpu", "bf16": False}


def _fake_classifier(cfg, log=print, progress=None):
    """Stands in for the training: best.pt, card.json and history.json of an untrained classifier."""
    import json

    import torch

    from napari_medai.models.networks import build_network
    from napari_medai.training import candidate_classifier as cc

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    card = cc.make_classifier_card(cfg)
    torch.save(build_network(card).state_dict(), out / "best.pt")
    save_card(card, out / "card.json")
    summary = {"config": {}, "best_val_mean_sensitivity": 0.5, "best_val_auc": 0.5, "time_s": 0}
    (out / "history.json").write_text(json.dumps(summary))
    return summary


@pytest.mark.parametrize("task", ["retinanet", "nodule-classifier"])
def test_replace_reaches_the_install_of_the_retinanet_and_the_classifier(task, tmp_path, monkeypatch):
    """--replace passed the early check but not the install: the install failed after the training."""
    from napari_medai.training import candidate_classifier, retinanet

    folder = tmp_path / "weights"
    monkeypatch.setattr(registry, "WEIGHTS_DIR", folder)
    _shared(folder, "mine")
    monkeypatch.setattr(retinanet, "train_retinanet", _fake_retinanet)
    monkeypatch.setattr(candidate_classifier, "train_classifier", _fake_classifier)
    args = ["train", task, "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--install-as", "mine"]
    assert main(args) == 2  # refused early without --replace
    assert main(args + ["--replace"]) == 0
    assert registry.get_card("mine", folder=folder).sha256 == registry.sha256_of(folder / "mine.pt")
    with pytest.raises(ModelError, match="sha256 does not match"):
        registry.load_state_dict(registry.get_card("mine-variant", folder=folder))
