"""Smoke tests of the segmentation trainer on tiny synthetic pairs (seconds, tiny UNet)."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medai.errors import InputError
from napari_medai.io import Volume, write_volume
from napari_medai.training.seg_data import chest_targets, find_pairs
from napari_medai.training.segmentation import (
    SegTrainConfig,
    build_unet,
    install_builtin,
    load_matching,
    train_segmentation,
)


def _write_pairs(folder, n=3, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = np.full((12, 24, 24), -800, np.int16)
        lab = np.zeros((12, 24, 24), np.uint8)
        lab[2:10, 4:20, 3:21] = 1
        z, y, x = rng.integers(4, 8), rng.integers(8, 16), rng.integers(8, 16)
        lab[z - 1 : z + 2, y - 2 : y + 2, x - 2 : x + 2] = 2
        img[lab == 0] = 40
        img[lab == 2] = 30
        img = (img + rng.normal(0, 20, img.shape)).astype(np.int16)
        write_volume(Volume.from_spacing(img, (2.0, 1.0, 1.0), modality="CT"), folder / f"case{i}_image.nii.gz")
        write_volume(Volume.from_spacing(lab, (2.0, 1.0, 1.0), is_labels=True), folder / f"case{i}_label.nii.gz")


def _cfg(data, out, **kw):
    base = dict(spacing=(2.0, 1.0, 1.0), roi=(8, 16, 16), channels=(4, 8), strides=(2,), num_res_units=0,
                epochs=2, iters_per_epoch=2, batch_size=2, val_cases=1, threads=1)
    base.update(kw)
    return SegTrainConfig(data=str(data), out=str(out), **base)


def test_training_is_deterministic_and_keeps_best(tmp_path):
    _write_pairs(tmp_path / "data")
    s1 = train_segmentation(_cfg(tmp_path / "data", tmp_path / "a"), log=lambda *_: None)
    s2 = train_segmentation(_cfg(tmp_path / "data", tmp_path / "b"), log=lambda *_: None)
    assert len(s1["history"]) == 2 and set(s1["history"][0]["val_dice"]) == {"lung", "nodule"}
    # the same losses and validation scores, epoch by epoch (only the times differ)
    untimed = [[{k: v for k, v in h.items() if k != "time_s"} for h in s["history"]] for s in (s1, s2)]
    assert untimed[0] == untimed[1]
    w1 = torch.load(tmp_path / "a" / "best.pt", weights_only=True)
    w2 = torch.load(tmp_path / "b" / "best.pt", weights_only=True)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert (tmp_path / "a" / "last.pt").exists() and (tmp_path / "a" / "training.json").exists()


def test_install_writes_card_with_sha256(tmp_path, monkeypatch):
    from napari_medai.models import registry

    _write_pairs(tmp_path / "data")
    cfg = _cfg(tmp_path / "data", tmp_path / "out", epochs=1)
    summary = train_segmentation(cfg, log=lambda *_: None)
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "weights")
    card_path = install_builtin("tiny-seg", cfg, summary, "medai train segmentation ...")
    card = registry.get_card("tiny-seg", folder=tmp_path / "weights")
    assert card_path.exists() and card.sha256 == registry.sha256_of(tmp_path / "weights" / "tiny-seg.pt")
    assert card.class_names == {0: "background", 1: "lung", 2: "nodule"}
    assert card.train_command.startswith("medai train segmentation")
    assert card.training["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_install_can_ship_the_final_epoch_instead_of_the_best(tmp_path, monkeypatch):
    from napari_medai.models import registry

    _write_pairs(tmp_path / "data")
    cfg = _cfg(tmp_path / "data", tmp_path / "out", epochs=2)
    summary = train_segmentation(cfg, log=lambda *_: None)
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "weights")
    install_builtin("tiny-last", cfg, summary, "medai train segmentation ...", checkpoint="last")
    card = registry.get_card("tiny-last", folder=tmp_path / "weights")
    last = torch.load(tmp_path / "out" / "last.pt", weights_only=False)["net"]
    shipped = registry.load_state_dict(card)
    assert all(torch.equal(shipped[k], last[k]) for k in last)
    assert card.scores["checkpoint"] == "last" and card.scores["epoch"] == 2
    assert card.scores["val_dice"] == summary["history"][-1]["val_dice"]
    with pytest.raises(InputError, match="checkpoint must be one of"):
        install_builtin("tiny-x", cfg, summary, "medai ...", checkpoint="middle")


def test_labels_beyond_the_classes_are_refused(tmp_path):
    _write_pairs(tmp_path / "data", n=2)
    with pytest.raises(InputError, match="labels go up to 2"):
        train_segmentation(_cfg(tmp_path / "data", tmp_path / "o", class_names=("bg", "lung"),
                                     class_ratios=(1, 1)), log=lambda *_: None)


def test_the_run_folder_is_made_only_once_the_cases_init_and_device_are_read(tmp_path):
    """A case refused as it loads, --init weights that do not load or a device this machine lacks
    failed after the run folder was made, and left it empty."""
    from napari_medai.errors import MedaiError

    _write_pairs(tmp_path / "data", n=2)
    out = tmp_path / "run"
    for kw, says in (({"class_names": ("bg", "lung"), "class_ratios": (1, 1)}, "labels go up to 2"),
                     ({"init": str(tmp_path / "data")}, "--init .*data"),  # a folder, but no model
                     ({"device": "tpu"}, "unknown device 'tpu'")):
        with pytest.raises(MedaiError, match=says):
            train_segmentation(_cfg(tmp_path / "data", out, **kw), log=lambda *_: None)
        assert not out.exists(), kw


def test_missing_pairs_and_chest_targets(tmp_path):
    with pytest.raises(InputError, match="no image/label pairs"):
        find_pairs(tmp_path)
    lab = np.zeros((1, 9, 9), np.uint8)
    lab[0, 1:8, 1:8] = 1
    lab[0, 4, 4] = 3  # a vessel inside the lung counts as lung field
    lab[0, 2, 2] = 2
    t = chest_targets(lab)
    assert t[0, 4, 4] == 1 and t[0, 2, 2] == 2 and t[0, 0, 0] == 0


def test_component_balanced_indices_weigh_every_lesion_equally():
    from napari_medai.training.seg_data import component_balanced_indices

    target = np.zeros((20, 40, 40), np.uint8)
    target[1:19, 1:39, 1:20] = 1
    target[2:18, 2:30, 22:38] = 2  # a big nodule (thousands of voxels)
    target[5, 35, 35] = 2  # and a one-voxel nodule
    idx = component_balanced_indices(target, 3, per_component=16, seed=3)
    assert len(idx) == 3 and len(idx[0]) == int((target == 0).sum())
    assert np.all(target.ravel()[idx[1]] == 1) and np.all(target.ravel()[idx[2]] == 2)
    small = np.ravel_multi_index((5, 35, 35), target.shape)
    assert (idx[2] == small).sum() == 16 and len(idx[2]) == 32  # half of the nodule centres
    again = component_balanced_indices(target, 3, per_component=16, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(idx, again))
    big_only = component_balanced_indices(target, 3, per_component=16, seed=3, min_voxels=4)
    assert len(big_only[2]) == 16 and small not in big_only[2]  # the fragment is no centre any more


def test_balanced_training_reports_component_recall(tmp_path):
    _write_pairs(tmp_path / "data")
    s = train_segmentation(_cfg(tmp_path / "data", tmp_path / "a", epochs=1, balance_components=(2,)),
                           log=lambda *_: None)
    recall = s["history"][0]["val_component_recall"]
    assert set(recall) == {"nodule"} and 0.0 <= recall["nodule"] <= 1.0


class _BrightIsNodule(torch.nn.Module):
    """Fixed-rule 3-class logits: nodule (2) where the input exceeds 0.75, else background."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), torch.full_like(x, -10.0), 10.0 * (x - 0.75)], dim=1)


def test_validation_recall_is_the_fraction_of_reference_components_found():
    from types import SimpleNamespace

    from napari_medai.training.device import TrainingDevice
    from napari_medai.training.segmentation import _validate

    def case(brightness):
        """One 3x4x4 nodule (label 2) per brightness; the rule finds those brighter than 0.75."""
        image = np.zeros((12, 24, 24), np.float32)
        target = np.zeros((12, 24, 24), np.uint8)
        target[:, :, 20:] = 1  # some lung, never predicted
        for k, value in enumerate(brightness):
            box = (slice(4, 7), slice(2 + 6 * k, 6 + 6 * k), slice(4, 8))
            image[box], target[box] = value, 2
        return SimpleNamespace(image=image, target=target)

    cases = [case([1.0, 0.5, 0.5]), case([0.5, 0.5])]  # 1 of the 5 nodules is found
    cfg = _cfg("unused", "unused", balance_components=(2,))
    dice, recall, _ = _validate(_BrightIsNodule(), cases, cfg, TrainingDevice(torch.device("cpu"), False))
    assert recall == {"nodule": pytest.approx(1 / 5)}
    # the Dice is per case, then averaged: the first case's 1 of 3 equal nodules gives 0.5, the second 0
    assert dice["nodule"] == pytest.approx((0.5 + 0.0) / 2) and dice["lung"] == 0.0


def test_dice_per_crop_changes_the_loss_not_the_interface(tmp_path):
    _write_pairs(tmp_path / "data")
    a = train_segmentation(_cfg(tmp_path / "data", tmp_path / "a", epochs=1), log=lambda *_: None)
    b = train_segmentation(_cfg(tmp_path / "data", tmp_path / "b", epochs=1, dice_per_crop=True), log=lambda *_: None)
    assert a["history"][0]["loss"] != b["history"][0]["loss"]
    assert set(b["history"][0]["val_dice"]) == {"lung", "nodule"}


def test_component_loss_changes_the_loss_and_is_recorded(tmp_path):
    _write_pairs(tmp_path / "data")
    a = train_segmentation(_cfg(tmp_path / "data", tmp_path / "a", epochs=1), log=lambda *_: None)
    b = train_segmentation(_cfg(tmp_path / "data", tmp_path / "b", epochs=1, component_loss=(2,),
                                min_component_voxels=4), log=lambda *_: None)
    assert b["history"][0]["loss"] > a["history"][0]["loss"]  # the extra term adds to the loss
    assert b["config"]["component_loss"] == (2,) and set(b["history"][0]["val_dice"]) == {"lung", "nodule"}


def test_hard_negatives_are_loaded_from_the_raw_labels_and_add_to_the_loss(tmp_path):
    from napari_medai.training.seg_data import load_case

    _write_pairs(tmp_path / "data")
    pairs = find_pairs(tmp_path / "data")
    # raw label value 1 (the "lung" box) as the hard negatives: the mask is that box at model spacing
    case = load_case(*pairs[0], (2.0, 1.0, 1.0), lambda a: a, map_labels=False, negative_values=(1,))
    assert case.negative.shape == case.target.shape
    assert np.array_equal(case.negative > 0, case.target == 1)
    assert load_case(*pairs[0], (2.0, 1.0, 1.0), lambda a: a, map_labels=False).negative is None
    a = train_segmentation(_cfg(tmp_path / "data", tmp_path / "a", epochs=1), log=lambda *_: None)
    b = train_segmentation(_cfg(tmp_path / "data", tmp_path / "b", epochs=1, hard_negatives=(1,)),
                           log=lambda *_: None)
    assert b["history"][0]["loss"] > a["history"][0]["loss"]  # the extra term adds to the loss
    assert b["config"]["hard_negatives"] == (1,) and set(b["history"][0]["val_dice"]) == {"lung", "nodule"}


def test_one_pair_still_keeps_a_best_checkpoint_with_a_card_that_runs(tmp_path):
    from napari_medai import segment
    from napari_medai.io import read_volume

    _write_pairs(tmp_path / "data", n=1)  # no validation case: the score is -loss, often below -1
    summary = train_segmentation(_cfg(tmp_path / "data", tmp_path / "run", epochs=1), log=lambda *_: None)
    assert summary["n_val"] == 0 and summary["best_score"] < 0
    assert (tmp_path / "run" / "best.pt").is_file()
    # the run's card beside its weights: the run is a model at once, without installing it
    image = read_volume(tmp_path / "data" / "case0_image.nii.gz")
    result = segment(image.data, image.spacing, model=str(tmp_path / "run" / "best.pt"))
    assert result.labels.shape == image.data.shape
    assert [c["name"] for _, c in sorted(result.classes.items())] == ["background", "lung", "nodule"]


def test_a_run_with_other_settings_in_the_out_folder_is_refused_not_resumed(tmp_path):
    _write_pairs(tmp_path / "data")
    _write_pairs(tmp_path / "other", seed=1)
    train_segmentation(_cfg(tmp_path / "data", tmp_path / "run", epochs=1), log=lambda *_: None)
    with pytest.raises(InputError, match=r"other settings \(data .*other"):
        train_segmentation(_cfg(tmp_path / "other", tmp_path / "run", epochs=1), log=lambda *_: None)
    with pytest.raises(InputError, match="epochs 1 -> 3"):  # used to crash the LR schedule
        train_segmentation(_cfg(tmp_path / "data", tmp_path / "run", epochs=3), log=lambda *_: None)


def _stopped_in_second_epoch(cfg) -> None:
    """Run ``cfg`` and press Ctrl+C during its second epoch."""
    def ctrl_c(done, total):
        if done == cfg.iters_per_epoch + 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_segmentation(cfg, log=lambda *_: None, progress=ctrl_c)


def test_a_killed_run_resumes_a_complete_one_trains_nothing_and_new_annotations_are_refused(tmp_path):
    import json
    import os

    _write_pairs(tmp_path / "data")
    cfg = _cfg(tmp_path / "data", tmp_path / "run", epochs=2)
    _stopped_in_second_epoch(cfg)
    for file in (tmp_path / "data").iterdir():  # the same data copied again: new times, same bytes
        os.utime(file, (1e9, 1e9))
    logged = []  # the same command resumes a killed run, counting epochs from 1
    summary = train_segmentation(cfg, log=logged.append)
    assert "resumed after epoch 1 of 2" in logged
    best, card = (tmp_path / "run" / "best.pt").read_bytes(), (tmp_path / "run" / "best.json").read_bytes()
    # once complete, the same command trains nothing, leaves the run's files as they are and
    # gives its summary back (so --install-as still installs it, and a pipeline goes on past it);
    # it used to "resume", train nothing and rewrite the card
    logged = []
    again = train_segmentation(cfg, log=logged.append)
    assert any("holds this run complete (all 2 epoch(s) trained" in line for line in logged)
    assert json.loads(json.dumps(again, default=list)) == json.loads(json.dumps(summary, default=list))
    assert (tmp_path / "run" / "best.json").read_bytes() == card
    # a newly annotated case in the same --data: refused, not "resumed" with the old weights
    _write_pairs(tmp_path / "more", n=4)
    for name in ("case3_image.nii.gz", "case3_label.nii.gz"):
        (tmp_path / "data" / name).write_bytes((tmp_path / "more" / name).read_bytes())
    with pytest.raises(InputError, match=r"pairs in .*data changed since the run in .*run started \(added: case3\)"):
        train_segmentation(cfg, log=lambda *_: None)
    # a corrected annotation too (same name, new content)
    for name in ("case3_image.nii.gz", "case3_label.nii.gz"):
        (tmp_path / "data" / name).unlink()
    (tmp_path / "data" / "case1_label.nii.gz").write_bytes((tmp_path / "more" / "case2_label.nii.gz").read_bytes())
    with pytest.raises(InputError, match=r"\(changed: case1\)"):
        train_segmentation(cfg, log=lambda *_: None)
    assert (tmp_path / "run" / "best.pt").read_bytes() == best


def test_out_dot_names_the_runs_card_after_the_current_folder(tmp_path, monkeypatch):
    import json

    from napari_medai.training.segmentation import check_config

    _write_pairs(tmp_path / "data", n=2)
    (tmp_path / "my-run").mkdir()
    monkeypatch.chdir(tmp_path / "my-run")
    train_segmentation(_cfg(tmp_path / "data", ".", epochs=1), log=lambda *_: None)
    assert json.loads((tmp_path / "my-run" / "best.json").read_text())["name"] == "my-run"
    # a folder with no name to give the card: refused before any data is read, not after epoch 1
    with pytest.raises(InputError, match="--out / has no folder name"):
        check_config(_cfg(tmp_path / "missing", "/"))


def test_init_from_a_runs_best_pt_or_last_pt_keeps_its_cards_class_rules(tmp_path):
    from napari_medai.models.card import save_card
    from napari_medai.training.segmentation import _inherited_extra, make_card

    run = tmp_path / "run"
    run.mkdir()
    source = _cfg(tmp_path / "data", run)
    torch.save(build_unet(source).state_dict(), run / "best.pt")
    card = make_card(source, "run")
    rules = {"organs": {"1": 2}, "lesions": [2], "lesion_hosts": [1], "min_lesion_mm3": 10.0}
    card.extra, card.weights = {**rules, "lesion_threshold": 0.3}, "best.pt"
    save_card(card, run / "best.json")
    torch.save({"net": build_unet(source).state_dict(), "opt": {}, "settings": {}}, run / "last.pt")
    for init in ("best.pt", "last.pt", "best.json"):  # a .pt used to give {}: the rules were dropped
        assert _inherited_extra(_cfg(tmp_path / "data", tmp_path / "ft", init=str(run / init))) == rules
    torch.save(build_unet(source).state_dict(), tmp_path / "bare.pt")  # no card: nothing to keep
    assert _inherited_extra(_cfg(tmp_path / "data", tmp_path / "ft", init=str(tmp_path / "bare.pt"))) == {}


def test_a_label_with_an_upper_case_suffix_is_paired(tmp_path):
    _write_pairs(tmp_path / "data", n=2)
    (tmp_path / "data" / "case0_label.nii.gz").rename(tmp_path / "data" / "case0_label.NII.GZ")
    said = []
    assert [(i.name, lab.name) for i, lab in find_pairs(tmp_path / "data", said.append)] == [
        ("case0_image.nii.gz", "case0_label.NII.GZ"), ("case1_image.nii.gz", "case1_label.nii.gz")]
    assert said == []


@pytest.mark.parametrize("change, message", [
    ({"epochs": 0}, "--epochs must be at least 1"), ({"lr": -1.0}, "--lr must be positive"),
    ({"batch_size": 0}, "--batch-size must be at least 1"), ({"spacing": (0.0, 1.0, 1.0)}, "--spacing"),
    ({"roi": (9, 16, 16)}, r"--roi \(9, 16, 16\): each size must be a multiple of 2"),
])
def test_bad_options_are_refused_before_any_data_is_read(tmp_path, change, message):
    with pytest.raises(InputError, match=message):  # the folder does not even exist
        train_segmentation(_cfg(tmp_path / "missing", tmp_path / "run", **change), log=lambda *_: None)
    assert not (tmp_path / "run").exists()


def test_labels_elsewhere_in_space_or_not_class_indices_are_refused(tmp_path):
    from napari_medai.io import read_volume

    _write_pairs(tmp_path / "data", n=1)
    label = read_volume(tmp_path / "data" / "case0_label.nii.gz")
    mirrored = Volume(label.data, label.affine @ np.diag([1.0, 1.0, -1.0, 1.0]), is_labels=True)
    write_volume(mirrored, tmp_path / "data" / "case0_label.nii.gz")
    with pytest.raises(InputError, match="case0_label.nii.gz: the labels lie elsewhere in space"):
        train_segmentation(_cfg(tmp_path / "data", tmp_path / "run"), log=lambda *_: None)

    from napari_medai.training.seg_data import label_values

    # float masks round to the nearest class: a uint8 cast made 0.9999999 background
    np.testing.assert_array_equal(label_values(np.array([0.0, 0.9999999, 1.9999998], np.float32), "f"), [0, 1, 2])
    for bad, why in ((np.array([0.0, 1.5]), "whole numbers"), (np.array([0, 256]), "0-255"),
                     (np.array([-1, 1]), "0-255")):
        with pytest.raises(InputError, match=f"x.nii.gz: .*{why}"):
            label_values(bad, "x.nii.gz")


def test_common_pair_layouts_are_found_and_unmatched_images_named(tmp_path):
    from napari_medai.io.nifti import nifti_stem

    def touch(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_volume(np.zeros((3, 4, 5), np.uint8), path, is_labels=True)

    for name in ("a_image.nii.gz", "a_label.nii", "b_img.nii.gz", "b_seg.nii.gz", "c.nii.gz", "c_label.nii.gz",
                 "lonely_image.nii.gz"):
        touch(tmp_path / "flat" / name)
    said = []
    pairs = find_pairs(tmp_path / "flat", said.append)
    assert [(nifti_stem(i), nifti_stem(lab)) for i, lab in pairs] == [
        ("a_image", "a_label"), ("b_img", "b_seg"), ("c", "c_label")]
    assert "1 image(s) without a label file are left out: lonely_image.nii.gz" in said[0]
    # MSD / nnU-Net, with the macOS ._ copies its archives carry beside every file
    for name in ("imagesTr/case_001_0000.nii.gz", "labelsTr/case_001.nii.gz"):
        touch(tmp_path / "msd" / name)
        (tmp_path / "msd" / name).with_name("._" + Path(name).name).write_bytes(b"\x00\x05\x16\x07")
    assert [(i.name, lab.name) for i, lab in find_pairs(tmp_path / "msd")] == [
        ("case_001_0000.nii.gz", "case_001.nii.gz")]


def test_fine_tuning_to_other_classes_keeps_the_fitting_weights(tmp_path):
    _write_pairs(tmp_path / "data")
    train_segmentation(_cfg(tmp_path / "data", tmp_path / "three", epochs=1), log=lambda *_: None)
    said = []
    # a run's last.pt (weights inside a training state) into a two-class model: the head starts fresh
    cfg = _cfg(tmp_path / "data", tmp_path / "two", epochs=1, init=str(tmp_path / "three" / "last.pt"),
               class_names=("background", "lung"), class_ratios=(1, 1))
    with pytest.raises(InputError, match="go up to 2"):  # the labels still hold nodules: said, not trained
        train_segmentation(cfg, log=said.append)
    assert any("start fresh" in line for line in said) is False  # refused before the network is built
    from napari_medai.training.segmentation import build_unet, load_matching

    net = build_unet(cfg)
    state = torch.load(tmp_path / "three" / "best.pt", weights_only=True)
    load_matching(net, state, "three", said.append)
    assert "start fresh" in said[-1]
    kept = [k for k, v in net.state_dict().items() if k in state and v.shape == state[k].shape]
    assert kept and all(torch.equal(net.state_dict()[k], state[k]) for k in kept)


def test_init_from_a_wrapped_checkpoint_loads_weights_only_and_leaves_the_rng_alone(tmp_path):
    from napari_medai.training.segmentation import _init_weights

    _write_pairs(tmp_path / "data")
    train_segmentation(_cfg(tmp_path / "data", tmp_path / "run", epochs=1), log=lambda *_: None)
    weights = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    torch.save({"model": {f"module.{k}": v for k, v in weights.items()}}, tmp_path / "wrapped.pt")  # DataParallel
    said = []
    net = build_unet(_cfg(tmp_path / "data", tmp_path / "x"))
    load_matching(net, _init_weights(str(tmp_path / "wrapped.pt")), "wrapped.pt", said.append)
    assert said == ["initialised from wrapped.pt"]
    assert all(torch.equal(net.state_dict()[k], weights[k]) for k in weights)
    # a run's own last.pt is taken too (its network part); a foreign pickle is not
    assert set(_init_weights(str(tmp_path / "run" / "last.pt"))) == set(weights)
    import argparse

    torch.save({"net": weights, "opt": {}, "anything": argparse.Namespace(a=1)}, tmp_path / "pickle.pt")
    with pytest.raises(InputError, match="no training run's last.pt"):
        _init_weights(str(tmp_path / "pickle.pt"))
    torch.manual_seed(0)
    _init_weights("chest-ct-lung-nodule")  # builds a network: the global RNG must not move
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1))


@pytest.mark.parametrize("change, said", [
    (dict(roi=(8, 8, 8), channels=(4, 8, 16, 32), strides=(2, 2, 2)), "one voxel at its bottom level"),
    (dict(threads=0), "--threads must be at least 1"),
    (dict(class_ratios=(0, 0, 0)), "--class-ratios"),
    (dict(class_ratios=(-1, 1, 1)), "--class-ratios"),
    (dict(class_ratios=(1, 1)), "--class-ratios"),
    (dict(init="runs/nowhere/best.pt"), "--init runs/nowhere/best.pt does not exist"),
    (dict(init="no-such-model"), "no built-in model called 'no-such-model'"),
])
def test_options_that_failed_after_loading_are_refused_before(tmp_path, change, said):
    """Each of these passed check_config and failed after every case had loaded (instance norm on a
    one-voxel bottom level, RandCropByLabelClassesd, the --init lookup)."""
    from napari_medai.errors import InputError
    from napari_medai.training.segmentation import check_config

    with pytest.raises(InputError, match=re.escape(said)):
        check_config(_cfg(tmp_path / "data", tmp_path / "run", **change))
    check_config(_cfg(tmp_path / "data", tmp_path / "run", roi=(8, 8, 16), channels=(4, 8, 16, 32),
                      strides=(2, 2, 2)))  # two voxels at the bottom are enough


def test_a_run_to_resume_is_not_refused_for_an_init_file_gone_since(tmp_path):
    """A resumed or finished run never loads --init again: a moved init checkpoint blocked it (found by a reviewer)."""
    from napari_medai.training.segmentation import check_config

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"a run's state")
    check_config(_cfg(tmp_path / "data", tmp_path / "run", init="runs/nowhere/best.pt"))
