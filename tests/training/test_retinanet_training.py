"""The RetinaNet trainer (training/retinanet.py) on tiny synthetic pairs and a tiny network."""

import re

import numpy as np
import pytest
import torch

import napari_medai
from tiny_pairs import write_nodule_pairs
from napari_medai.models.registry import get_card, sha256_of
from napari_medai.training.retinanet import (BoxCase, RetinaTrainConfig, install_builtin, nodule_boxes, sample_crop,
                                             train_retinanet)

TINY = {"planes": [8, 8, 16, 16], "fpn_channels": 8, "roi_size": [8, 32, 32], "anchor_shapes": [[2, 4, 4]]}


def test_each_nodule_component_is_one_box_and_fragments_are_not():
    target = np.zeros((10, 20, 20), np.uint8)
    target[1:4, 2:6, 3:8] = 2
    target[6:9, 10:12, 10:13] = 2
    target[9, 19, 19] = 2  # a 1-voxel spicule fragment
    target[0:2, 15:18, 0:3] = 1  # lung is not a nodule
    boxes = nodule_boxes(target, min_voxels=4)
    assert boxes.tolist() == [[1, 2, 3, 4, 6, 8], [6, 10, 10, 9, 12, 13]]
    assert len(nodule_boxes(target, min_voxels=1)) == 3


@pytest.mark.parametrize("seed", range(6))
def test_a_crop_and_its_boxes_stay_together_through_flips(seed):
    image = np.zeros((20, 40, 40), np.float32)
    image[5:9, 10:16, 20:27] = 1.0
    case = BoxCase("c", image, np.array([[5, 10, 20, 9, 16, 27]]), np.array([0]))
    crop, boxes = sample_crop(case, (8, 16, 16), np.random.default_rng(seed), positive=True)
    assert crop.shape == (1, 8, 16, 16) and len(boxes) == 1
    lo, hi = boxes[0, :3].astype(int), boxes[0, 3:].astype(int)
    bright = crop[0] > 0.5  # intensity jitter is at most x1.1 and +-0.05
    inside = np.zeros_like(bright)
    inside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    assert bright.sum() == 4 * 6 * 7  # the whole nodule is in the crop
    assert np.array_equal(bright, inside)  # and its box is exactly where it went


def _cfg(data, out, **kw):
    base = dict(patch=(8, 32, 32), batch_size=2, iterations=2, warmup=1, threads=1, network=dict(TINY),
                checkpoint_every=1)
    base.update(kw)
    return RetinaTrainConfig(data=(str(data),), out=str(out), **base)


def test_the_run_folder_is_made_only_once_the_device_and_the_cases_are_read(tmp_path):
    """A device this machine lacks failed after the run folder was made, and left it empty (data
    without a nodule likewise: tests/cli/test_train_retinanet_cli.py)."""
    from napari_medai.errors import InputError

    write_nodule_pairs(tmp_path / "data")
    out = tmp_path / "run"
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        train_retinanet(_cfg(tmp_path / "data", out, device="tpu"), log=lambda *_: None)
    assert not out.exists()


def test_training_is_deterministic_and_installs_a_detector_that_runs(tmp_path):
    write_nodule_pairs(tmp_path / "data")
    s1 = train_retinanet(_cfg(tmp_path / "data", tmp_path / "a"), log=lambda *_: None)
    train_retinanet(_cfg(tmp_path / "data", tmp_path / "b"), log=lambda *_: None)
    assert s1["nodules"] == 4 and s1["iterations"] == 2 and len(s1["final_losses"]) == 2
    a = torch.load(tmp_path / "a" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "final.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # another seed ends elsewhere: the equality above is not two untouched initialisations
    s3 = train_retinanet(_cfg(tmp_path / "data", tmp_path / "c", seed=1), log=lambda *_: None)
    c = torch.load(tmp_path / "c" / "final.pt", weights_only=True)
    assert s3["iterations"] == 2 and any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())

    weights = tmp_path / "weights"
    # the card keeps every box (score threshold 0): the barely trained detector's scores are
    # about its 0.01 prior, under the default threshold, and boxes must come back to be checked
    cfg = _cfg(tmp_path / "data", tmp_path / "a", network=dict(TINY, score_thresh=0.0))
    card_path = install_builtin("tiny-retina", cfg, s1, "medai train retinanet", folder=weights)
    card = get_card("tiny-retina", folder=weights)
    assert card_path.exists() and card.task == "detection" and card.extra["method"] == "boxes"
    assert card.sha256 == sha256_of(weights / "tiny-retina.pt")
    assert card.network["kwargs"]["score_thresh"] == 0.0
    from napari_medai.models.loading import load_from_card

    loaded = load_from_card(card)
    trained = loaded.network.network.state_dict()
    assert all(torch.equal(trained[k].cpu(), a["network." + k]) for k in trained)  # the trained weights
    volume = np.full((16, 48, 48), -850.0, np.float32)
    volume[4:7, 12:18, 12:18] = 20.0
    findings = napari_medai.detect(volume, (2.0, 1.0, 1.0), model=loaded, max_findings=5)
    assert len(findings) == 5  # an untrained detector may find anything; the path must run, rank and cap
    assert [f.score for f in findings] == sorted((f.score for f in findings), reverse=True)
    for f in findings:
        assert all(0 <= c < n for c, n in zip(f.center_voxel, volume.shape))
        (lo, hi) = np.array(f.bbox_voxel)
        assert np.all(lo >= 0) and np.all(hi <= np.array(volume.shape)) and np.all(hi > lo)


def test_resuming_from_last_checkpoint_ends_where_an_uninterrupted_run_ends(tmp_path):
    write_nodule_pairs(tmp_path / "data")
    train_retinanet(_cfg(tmp_path / "data", tmp_path / "full", iterations=3), log=lambda *_: None)

    class Killed(Exception):
        pass

    def kill_at_step_2(done, total):
        if done == 2:  # before step 2's checkpoint: last.pt holds step 1
            raise Killed

    cut = _cfg(tmp_path / "data", tmp_path / "cut", iterations=3)
    with pytest.raises(Killed):
        train_retinanet(cut, log=lambda *_: None, progress=kill_at_step_2)
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["step"] == 1
    checkpoint = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    logged, steps_run = [], []
    train_retinanet(cut, log=logged.append, progress=lambda done, total: steps_run.append(done))
    assert "resumed at step 1" in logged
    # only the two steps left ran (a restart from scratch would also end where the full run ends)
    assert steps_run == [2, 3]
    assert len(torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["history"]) == 3
    full = torch.load(tmp_path / "full" / "final.pt", weights_only=True)
    resumed = torch.load(tmp_path / "cut" / "final.pt", weights_only=True)
    assert all(torch.equal(full[k], resumed[k]) for k in full)

    # the resumed run starts from the checkpoint's weights: changed ones end elsewhere
    checkpoint["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in checkpoint["model"].items()}
    changed = _cfg(tmp_path / "data", tmp_path / "changed", iterations=3)
    (tmp_path / "changed").mkdir()
    torch.save(checkpoint, tmp_path / "changed" / "last.pt")
    train_retinanet(changed, log=lambda *_: None)
    other = torch.load(tmp_path / "changed" / "final.pt", weights_only=True)
    assert any(not torch.equal(full[k], other[k]) for k in full if full[k].is_floating_point())


def test_a_resume_with_other_settings_or_data_or_a_cut_off_last_pt_is_refused(tmp_path, monkeypatch):
    """last.pt was resumed whatever the settings (its summary then named the new ones), and a cut-off
    one gave a raw RuntimeError; a kill while writing it cut it off."""
    from pathlib import Path

    from napari_medai.errors import InputError

    write_nodule_pairs(tmp_path / "data")
    real_save, saved = torch.save, []

    def killed_on_the_second_checkpoint(obj, path, *a, **k):
        if isinstance(obj, dict) and "optimizer" in obj:
            saved.append(obj["step"])
            if len(saved) == 2:  # part of a file, then the process dies
                Path(path).write_bytes(b"PK\x03\x04 cut off")
                raise KeyboardInterrupt
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", killed_on_the_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_retinanet(_cfg(tmp_path / "data", tmp_path / "run"), log=lambda *_: None)
    monkeypatch.undo()
    last = tmp_path / "run" / "last.pt"
    assert torch.load(last, weights_only=False)["step"] == 1  # the previous checkpoint, whole
    for change, said in ((dict(lr=1e-3), "other settings (lr"), (dict(seed=1), "other settings (seed"),
                         (dict(bf16=True), "other settings (bf16")):
        with pytest.raises(InputError, match=re.escape(said)):
            train_retinanet(_cfg(tmp_path / "data", tmp_path / "run", **change), log=lambda *_: None)
    (tmp_path / "data" / "case1_image.nii.gz").write_bytes((tmp_path / "data" / "case0_image.nii.gz").read_bytes())
    with pytest.raises(InputError, match="changed since the run"):
        train_retinanet(_cfg(tmp_path / "data", tmp_path / "run"), log=lambda *_: None)
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(InputError, match=r"last.pt cannot be read.*delete it"):
        train_retinanet(_cfg(tmp_path / "data", tmp_path / "run"), log=lambda *_: None)
