"""``medai train denoising`` end to end on tiny data: the training sources (pydicom-data and
phantom CT pairs, Colin27 / MNI152 MR) are replaced by tiny arrays and the generator by a tiny
one, so a two-step run writes its checkpoints, weights and model card in about a second.
Training itself (determinism, resuming, loss weights) is tested in tests/training."""

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

import napari_medai.models.denoising_nets as nets
import napari_medai.training.denoising_data as dd
from napari_medai.cli.main import main
from napari_medai.models.registry import sha256_of

TINY = {"spatial_dims": 2, "channels": [4, 8], "strides": [2], "num_res_units": 0, "features": 4}


@pytest.fixture
def sources(monkeypatch):
    """Tiny CT pairs and MR volumes in place of the real training data; records each load."""
    loads = []

    def ct_pairs(seed=0, progress=print, **_):
        loads.append(("CT", seed))
        rng = np.random.default_rng(seed)
        clean = dd.ct_normalise(np.full((40, 40), 40.0) + rng.normal(0.0, 5.0, (40, 40)))
        noisy = (clean + rng.normal(0.0, 0.02, clean.shape)).astype(np.float32)
        return [(clean, noisy), (clean[::-1].copy(), noisy[::-1].copy())]

    def mr_source(split, **_):
        loads.append(("MR", split))
        volume = np.random.default_rng(0).uniform(0.2, 1.0, (5, 40, 40)).astype(np.float32)
        return dd.MRSource([volume], [(0, z) for z in range(1, 4)])

    monkeypatch.setattr(dd, "ct_pairs", ct_pairs)
    monkeypatch.setattr(dd, "mr_source", mr_source)
    monkeypatch.setattr(nets, "GENERATOR_KWARGS", dict(TINY))
    return loads


def _run(monkeypatch, *argv):
    """``medai train denoising ARGV`` as the console script runs it (sys.argv set too)."""
    argv = ["train", "denoising", *argv]
    monkeypatch.setattr(sys, "argv", ["medai", *argv])
    return main(argv), ["medai", *argv]


def test_a_ct_run_writes_checkpoints_weights_and_a_card_and_a_rerun_reuses_its_pairs(
        tmp_path, monkeypatch, sources, capsys):
    import napari_medai

    out = tmp_path / "ct run"  # a space: the recorded command must quote it
    rc, command = _run(monkeypatch, "--modality", "ct", "--out", str(out), "--steps", "2", "--warmup-steps", "1",
                       "--batch", "2", "--patch", "32", "--device", "cpu")
    assert rc == 0 and sources == [("CT", 0)]
    for name in ("ct-lowdose-denoising.pt", "ct-lowdose-denoising.json", "last.pt", "warmup.pt", "ct_pairs.npz"):
        assert (out / name).is_file(), name
    card = json.loads((out / "ct-lowdose-denoising.json").read_text())
    assert card["name"] == "ct-lowdose-denoising" and card["task"] == "denoising" and card["modality"] == "CT"
    assert card["weights"] == "ct-lowdose-denoising.pt"
    assert card["sha256"] == sha256_of(out / "ct-lowdose-denoising.pt")
    assert card["in_channels"] == 1 and card["roi_size"] == [32, 32] and card["spatial_dims"] == 2
    assert card["intensity"]["kind"] == "ct_window" and card["intensity"]["clip"] is False
    assert card["network"]["kwargs"] == {k: v for k, v in TINY.items() if k != "spatial_dims"}
    training = card["training"]
    assert training["steps"] == 2 and training["warmup_steps"] == 1 and training["adversarial"] is True
    assert training["batch"] == 2 and training["patch"] == 32 and training["seed"] == 0
    assert training["device"] == "cpu" and training["history"][-1]["step"] == 2
    # the command, quoted so it can be rerun, with the network options it left at their defaults named
    assert shlex.split(card["train_command"]) == command + ["--dims", "2", "--first-stride", "2", "--head-channels", "0"]
    out_text = capsys.readouterr().out
    assert f"wrote {out}/ct-lowdose-denoising.pt and .json" in out_text
    # the card and weights load and denoise, on the input's own grid
    noisy = (np.full((3, 40, 40), 40.0) + np.random.default_rng(1).normal(0, 30, (3, 40, 40))).astype(np.float32)
    denoised = napari_medai.denoise(noisy, (2.0, 1.0, 1.0), model=str(out / "ct-lowdose-denoising.json"))
    assert denoised.shape == noisy.shape and np.isfinite(denoised).all()
    assert not np.allclose(denoised, noisy)  # trained: the zero-initialised head no longer passes it through
    # the same command again: the run's checkpoint is at its end and the simulated pairs are reused
    weights = (out / "ct-lowdose-denoising.pt").read_bytes()
    rc, _ = _run(monkeypatch, *command[3:])
    assert rc == 0 and sources == [("CT", 0)]
    assert f"resumed from {out / 'last.pt'} at step 2" in capsys.readouterr().out
    assert (out / "ct-lowdose-denoising.pt").read_bytes() == weights


def test_an_mr_run_without_the_adversarial_term(tmp_path, monkeypatch, sources):
    out = tmp_path / "mr"
    rc, _ = _run(monkeypatch, "--modality", "MR", "--out", str(out), "--steps", "2", "--no-adversarial",
                 "--batch", "2", "--patch", "32", "--seed", "3", "--device", "cpu")
    assert rc == 0 and sources == [("MR", "train")]
    card = json.loads((out / "mr-denoising.json").read_text())
    assert card["name"] == "mr-denoising" and card["modality"] == "MR"
    assert card["in_channels"] == 2 * dd.MR_NEIGHBOURS + 1  # 2.5D: the slice and its neighbours
    assert card["intensity"]["kind"] == "percentile"
    assert card["training"]["adversarial"] is False and card["training"]["adversarial_weight"] == 0.0
    assert card["training"]["seed"] == 3 and card["sha256"] == sha256_of(out / "mr-denoising.pt")
    assert (out / "last.pt").is_file()
    assert not (out / "warmup.pt").exists()  # the default warm-up (3000 steps) never ended
    assert not (out / "ct_pairs.npz").exists()


def test_bad_arguments_exit_2_with_a_message_before_any_data_is_read(tmp_path, monkeypatch, sources, capsys):
    with pytest.raises(SystemExit) as exc:
        _run(monkeypatch, "--modality", "PET", "--out", str(tmp_path / "run"))
    assert exc.value.code == 2 and "invalid choice: 'PET'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        _run(monkeypatch, "--modality", "MR")
    assert exc.value.code == 2 and "--out" in capsys.readouterr().err
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    rc, _ = _run(monkeypatch, "--modality", "CT", "--out", str(a_file), "--steps", "1")
    assert rc == 2
    assert capsys.readouterr().err == f"medai train: error: --out {a_file} is a file, not a folder: name a folder\n"
    assert sources == [] and a_file.read_text() == "not a folder"
    assert not (tmp_path / "run").exists()


def test_a_missing_resume_checkpoint_is_refused(tmp_path, monkeypatch, sources):
    rc, _ = _run(monkeypatch, "--modality", "MR", "--out", str(tmp_path / "run"), "--steps", "1", "--batch", "2",
                 "--patch", "32", "--device", "cpu", "--resume", str(tmp_path / "no-such-warmup.pt"))
    assert rc == 2 and not (tmp_path / "run" / "mr-denoising.pt").exists()


@pytest.mark.parametrize("option, value", [("--steps", "0"), ("--batch", "0"), ("--patch", "64")])
def test_sizes_that_cannot_train_are_refused(tmp_path, monkeypatch, sources, option, value):
    args = {"--steps": "1", "--batch": "2", "--patch": "32", option: value}
    rc, _ = _run(monkeypatch, "--modality", "MR", "--out", str(tmp_path / "run"), "--device", "cpu",
                 *[x for kv in args.items() for x in kv])
    assert rc == 2 and not (tmp_path / "run" / "mr-denoising.pt").exists()


MR_RUN = ("--steps", "2", "--warmup-steps", "1", "--batch", "2", "--patch", "32", "--device", "cpu")


@pytest.mark.parametrize("changed", [("--seed", "1"), ("--steps", "3"), ("--no-adversarial",), ("--modality", "CT")])
def test_a_rerun_with_other_settings_into_a_run_folder_is_refused(tmp_path, monkeypatch, sources, capsys, changed):
    """It used to resume the old run as if it were this one (and write the new settings into the
    card); another modality ended in a RuntimeError from load_state_dict."""
    out = tmp_path / "run"
    assert _run(monkeypatch, "--modality", "MR", "--out", str(out), *MR_RUN)[0] == 0
    weights = (out / "mr-denoising.pt").read_bytes()
    capsys.readouterr()
    argv = ["--modality", "MR", "--out", str(out), *MR_RUN]
    if changed[0] == "--modality":
        argv[1] = changed[1]
    else:
        argv += list(changed)
    assert _run(monkeypatch, *argv)[0] == 2
    err = capsys.readouterr().err
    assert f"{out} holds a run with other settings" in err and "delete its last.pt" in err
    assert (out / "mr-denoising.pt").read_bytes() == weights


def test_checkpoints_that_cannot_be_resumed_are_refused_with_a_message(tmp_path, monkeypatch, sources, capsys):
    import pathlib

    import torch

    done = tmp_path / "done"
    assert _run(monkeypatch, "--modality", "MR", "--out", str(done), *MR_RUN)[0] == 0
    # a pickle that runs code when unpickled without weights_only: it must not run
    marker = tmp_path / "code-ran"

    class RunsCode:
        def __reduce__(self):
            return pathlib.Path.touch, (marker,)

    torch.save({"step": 1, "gen": RunsCode()}, tmp_path / "code.pt")
    old = torch.load(done / "last.pt", weights_only=True)
    del old["settings"]
    torch.save(old, tmp_path / "old.pt")
    for resume, message in ((done / "mr-denoising.pt", "is not a last.pt or warmup.pt"),  # weights only
                            (done / "mr-denoising.json", "cannot be read as a training checkpoint"),  # a card
                            (tmp_path / "code.pt", "cannot be read as a training checkpoint"),
                            (tmp_path / "old.pt", "written by an older version"),
                            (done / "last.pt", "is at step 2, past --steps 1")):
        capsys.readouterr()
        rc, _ = _run(monkeypatch, "--modality", "MR", "--out", str(tmp_path / "new"), "--steps", "1",
                     "--batch", "2", "--patch", "32", "--device", "cpu", "--resume", str(resume))
        assert rc == 2 and message in capsys.readouterr().err, resume
    assert not marker.exists() and not (tmp_path / "new" / "mr-denoising.pt").exists()
    # a last.pt of an older version in the run's own folder
    torch.save(old, done / "last.pt")
    assert _run(monkeypatch, "--modality", "MR", "--out", str(done), *MR_RUN)[0] == 2
    assert "written by an older version" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (("--patch", "31"), "must be a multiple of 2"),  # the tiny generator halves once
    (("--patch", "2"), "at least 4"),  # one pixel at the bottom: instance norm fails
    (("--patch", "16", "--batch", "1"), "adversarial term cannot train"),  # discriminator batch norm
    (("--threads", "0"), "threads must be 1 or more"),
    (("--seed", "-1"), "seed must be 0 or more"),
])
def test_training_options_that_would_crash_are_refused_before_any_data_is_read(
        tmp_path, monkeypatch, sources, capsys, args, message):
    opts = {"--steps": "2", "--warmup-steps": "1", "--batch": "2", "--patch": "32"}
    opts.update(zip(args[::2], args[1::2]))
    rc, _ = _run(monkeypatch, "--modality", "MR", "--out", str(tmp_path / "run"), "--device", "cpu",
                 *[x for kv in opts.items() for x in kv])
    assert rc == 2 and message in capsys.readouterr().err
    assert sources == [] and not (tmp_path / "run").exists()


def test_the_card_records_no_adversarial_term_when_no_adversarial_step_ran(tmp_path, monkeypatch, sources, capsys):
    out = tmp_path / "run"
    rc, _ = _run(monkeypatch, "--modality", "MR", "--out", str(out), "--steps", "2", "--batch", "2",
                 "--patch", "32", "--device", "cpu")  # the default warm-up (3000 steps) never ends
    assert rc == 0 and "no adversarial step runs" in capsys.readouterr().out
    training = json.loads((out / "mr-denoising.json").read_text())["training"]
    assert training["adversarial"] is False and training["adversarial_weight"] == 0.0


def test_the_ct_pair_cache_is_remade_for_another_seed_or_when_cut_off(tmp_path, monkeypatch, sources):
    import napari_medai.training.denoising as td

    def load(seed):
        return td._load_data("CT", seed, tmp_path, log=lambda *_: None)[0]

    first = load(0)
    assert sources == [("CT", 0)]
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(load(0), first)) and sources == [("CT", 0)]
    other = load(1)  # another seed (e.g. after deleting last.pt to start over): not the seed-0 pairs
    assert sources == [("CT", 0), ("CT", 1)] and not np.array_equal(other[0][1], first[0][1])
    cache = tmp_path / "ct_pairs.npz"
    cache.write_bytes(cache.read_bytes()[:100])  # cut off
    load(1)
    assert sources[-1] == ("CT", 1) and len(sources) == 3
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(load(1), other)) and len(sources) == 3


def test_a_run_killed_while_writing_the_ct_pair_cache_leaves_none(tmp_path, monkeypatch, sources):
    import napari_medai.training.denoising as td

    def killed(file, *args, **kwargs):
        half = b"PK\x03\x04 half a zip"
        if isinstance(file, (str, Path)):  # np.savez(path), as the cache was written before
            Path(file).write_bytes(half)
        else:
            file.write(half)
        raise OSError("no space left on device")

    monkeypatch.setattr(np, "savez", killed)
    with pytest.raises(OSError):
        td._load_data("CT", 0, tmp_path, log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []



def test_an_mr_run_in_3d_writes_a_3d_card_and_a_ct_one_is_refused(tmp_path, monkeypatch, sources, capsys):
    depths = []

    def mr_source_3d(depth, **_):
        depths.append(depth)
        volume = np.random.default_rng(0).uniform(0.2, 1.0, (30, 40, 40)).astype(np.float32)
        return dd.MRSource([volume], [(0, z0) for z0 in range(30 - depth + 1)])

    monkeypatch.setattr(dd, "mr_source_3d", mr_source_3d)
    out = tmp_path / "mr3d"
    rc, argv = _run(monkeypatch, "--modality", "MR", "--dims", "3", "--out", str(out), "--steps", "2",
                    "--no-adversarial", "--batch", "2", "--patch", "32", "--device", "cpu")
    assert rc == 0 and depths == [16]
    card = json.loads((out / "mr-denoising.json").read_text())
    assert card["spatial_dims"] == 3 and card["in_channels"] == 1 and card["roi_size"] == [16, 32, 32]
    assert card["train_command"] == shlex.join(argv) + " --first-stride 2 --head-channels 0"
    rc, _ = _run(monkeypatch, "--modality", "CT", "--dims", "3", "--out", str(tmp_path / "ct3d"), "--steps", "2")
    assert rc == 2 and "dims must be 2, or 3 for MR" in capsys.readouterr().err
    assert not (tmp_path / "ct3d" / "ct_pairs.npz").exists()


@pytest.mark.parametrize("first_stride, strides", [(None, [2]), ("2", [2]), ("1", [1])])
def test_first_stride_sets_the_generators_first_level(tmp_path, monkeypatch, sources, first_stride, strides):
    out = tmp_path / "run"
    option = [] if first_stride is None else ["--first-stride", first_stride]
    rc, _ = _run(monkeypatch, "--modality", "MR", "--out", str(out), "--steps", "1", "--no-adversarial",
                 "--batch", "2", "--patch", "32", "--device", "cpu", *option)
    assert rc == 0
    card = json.loads((out / "mr-denoising.json").read_text())
    assert card["network"]["kwargs"]["strides"] == strides  # TINY has one level below the first


@pytest.mark.parametrize("option, head", [([], None), (["--head-channels", "6"], 6), (["--head=5"], 5)])
def test_head_channels_adds_a_full_resolution_convolution_and_the_card_names_it(
        tmp_path, monkeypatch, sources, option, head):
    out = tmp_path / "run"
    rc, argv = _run(monkeypatch, "--modality", "CT", "--out", str(out), "--steps", "1", "--no-adversarial",
                    "--batch", "2", "--patch", "32", "--device", "cpu", "--dims", "2", "--first-stride", "2", *option)
    assert rc == 0
    card = json.loads((out / "ct-lowdose-denoising.json").read_text())
    assert card["network"]["kwargs"].get("head_channels") == head
    # recorded once, as typed (a prefix too); left out, it is named with its default
    assert card["train_command"] == shlex.join(argv) + ("" if option else " --head-channels 0")
    state = __import__("torch").load(out / "ct-lowdose-denoising.pt", weights_only=True)
    assert ("fuse.0.weight" in state) == (head is not None)
    if head:
        assert tuple(state["fuse.0.weight"].shape) == (head, TINY["features"] + 1, 3, 3)


def test_a_negative_head_width_is_refused_before_any_data_is_read(tmp_path, monkeypatch, sources, capsys):
    rc, _ = _run(monkeypatch, "--modality", "CT", "--out", str(tmp_path / "run"), "--head-channels", "-1")
    assert rc == 2 and "--head-channels must be 0 (none) or more" in capsys.readouterr().err
    assert sources == [] and not (tmp_path / "run").exists()


def test_the_card_records_the_command_main_was_given_not_the_callers_own(tmp_path, monkeypatch, sources):
    monkeypatch.setattr(sys, "argv", ["pytest", "-q", "tests"])  # medai called from Python
    argv = ["train", "denoising", "--modality", "CT", "--out", str(tmp_path / "run"), "--steps", "1",
            "--no-adversarial", "--batch", "2", "--patch", "32", "--device", "cpu"]
    assert main(argv) == 0
    card = json.loads((tmp_path / "run" / "ct-lowdose-denoising.json").read_text())
    assert card["train_command"] == shlex.join(["medai", *argv]) + " --dims 2 --first-stride 2 --head-channels 0"


def test_fp32_reaches_the_training(monkeypatch, tmp_path):
    """A 3D run trained in bf16 wherever the CPU had it natively, and two such runs differ: --fp32
    gives one that repeats bit for bit (an audit helper's finding)."""
    import napari_medai.training.denoising as training

    seen = {}

    def fake(modality, out, **kwargs):
        seen.update(kwargs)
        return {"name": "mr-denoising", "training": {"seconds": 0.0}}

    monkeypatch.setattr(training, "train_denoising", fake)
    for argv, expected in (((), False), (("--fp32",), True)):
        rc, _ = _run(monkeypatch, "--modality", "MR", "--dims", "3", "--out", str(tmp_path / "run"), *argv)
        assert rc == 0 and seen["fp32"] is expected
