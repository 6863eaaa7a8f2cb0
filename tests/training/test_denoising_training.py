"""Training smoke runs on tiny random data: deterministic, resumable, writes a valid card."""

import json

import numpy as np
import pytest
import torch

from napari_medai.training.denoising import train_denoising
from napari_medai.training.denoising_data import MRSource, mr_batch, rician

TINY = {"channels": [4, 8], "strides": [2], "num_res_units": 0, "features": 4}


@pytest.fixture
def tiny_slices():
    rng = np.random.default_rng(0)
    volume = rng.uniform(0.2, 1.0, (5, 40, 40)).astype(np.float32)
    return MRSource([volume], [(0, z) for z in range(1, 4)])


def _train(out, slices, steps=2, warmup=1, **kw):
    return train_denoising("MR", out, steps=steps, warmup_steps=warmup, batch=2, patch=32, seed=3,
                           data=(slices, mr_batch), generator_kwargs=TINY, log=lambda *_: None, **kw)


def _weights(folder):
    return torch.load(folder / "mr-denoising.pt", weights_only=True)


def test_same_seed_gives_same_weights(tmp_path, tiny_slices):
    _train(tmp_path / "a", tiny_slices)
    _train(tmp_path / "b", tiny_slices)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # ...and training changed the zero-initialised head
    assert a["head.weight"].abs().sum() > 0


def _counting_batches(steps_seen):
    """mr_batch, recording the step of each batch drawn (one batch per training step)."""

    def batch_fn(source, seed, step, batch, patch):
        steps_seen.append(step)
        return mr_batch(source, seed, step, batch, patch)

    return batch_fn


def test_resumed_run_equals_uninterrupted_run(tmp_path, tiny_slices):
    _train(tmp_path / "full", tiny_slices, steps=3, checkpoint_every=1)
    _train(tmp_path / "part", tiny_slices, steps=3, checkpoint_every=1)
    # A 3-step run resumed from another run's step-1 checkpoint (``warmup.pt``) ends identically...
    steps_run, logged = [], []
    train_denoising("MR", tmp_path / "resumed", steps=3, warmup_steps=1, batch=2, patch=32, seed=3,
                    data=(tiny_slices, _counting_batches(steps_run)), generator_kwargs=TINY, log=logged.append,
                    resume=tmp_path / "part" / "warmup.pt")
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # ...having run only the two steps left (a restart from scratch would also end identically)
    assert steps_run == [1, 2]
    assert f"resumed from {tmp_path / 'part' / 'warmup.pt'} at step 1" in logged


def test_resuming_starts_from_the_checkpoints_weights(tmp_path, tiny_slices):
    """A checkpoint whose generator was changed gives another result than the run it came from:
    the resumed run starts from the checkpoint's weights, not from a fresh initialisation."""
    _train(tmp_path / "part", tiny_slices, steps=3, checkpoint_every=1)
    state = torch.load(tmp_path / "part" / "warmup.pt", weights_only=False)
    state["gen"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in state["gen"].items()}
    torch.save(state, tmp_path / "changed.pt")
    _train(tmp_path / "resumed", tiny_slices, steps=3, resume=tmp_path / "part" / "warmup.pt")
    _train(tmp_path / "changed", tiny_slices, steps=3, resume=tmp_path / "changed.pt")
    a, b = _weights(tmp_path / "resumed"), _weights(tmp_path / "changed")
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_card_records_command_and_checksum(tmp_path, tiny_slices):
    card = _train(tmp_path, tiny_slices, adversarial=False, train_command="medai train denoising ...")
    on_disk = json.loads((tmp_path / "mr-denoising.json").read_text())
    assert on_disk == card
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # the device the run used: --device auto trains on a GPU where there is one, other bytes
    assert card["train_command"] == f"medai train denoising ... --device {device}"
    assert card["training"]["adversarial"] is False
    assert card["training"]["device"] == device
    from napari_medai.models.registry import sha256_of

    assert card["sha256"] == sha256_of(tmp_path / "mr-denoising.pt")


def test_weights_and_card_are_written_both_or_neither(tmp_path, tiny_slices, full_disk):
    """A full disk at the card (written after the weights) left the new weights under an earlier
    run's card, whose sha256 no longer matched; installing them likewise."""
    from napari_medai.errors import InputError
    from napari_medai.training.denoising import install_weights

    run, dest = tmp_path / "run", tmp_path / "weights"
    _train(run, tiny_slices, adversarial=False)
    full_disk("mr-denoising.json")

    def earlier(folder):  # an earlier model there
        folder.mkdir(exist_ok=True)
        (folder / "mr-denoising.pt").write_bytes(b"earlier weights")
        (folder / "mr-denoising.json").write_text("earlier card")

    earlier(dest)
    with pytest.raises(InputError, match=f"cannot write {dest / 'mr-denoising.json'}: .*No space left on device"):
        install_weights(run, dest, "mr-denoising")
    earlier(run)
    with pytest.raises(InputError, match=f"cannot write {run / 'mr-denoising.json'}: .*No space left on device"):
        _train(run, tiny_slices, adversarial=False)
    for folder in (run, dest):
        assert (folder / "mr-denoising.pt").read_bytes() == b"earlier weights"
        assert (folder / "mr-denoising.json").read_text() == "earlier card"
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary


def test_a_missing_training_source_is_found_before_the_run_folder_is_made(tmp_path, monkeypatch):
    """The data were read after --out was made: a missing source (Colin27, nilearn's MNI152,
    pydicom-data) left an empty run folder."""
    from napari_medai.errors import InputError
    from napari_medai.training import denoising_data

    def missing():
        raise InputError("Colin27 T1 not found in the repository's sample_data/")

    monkeypatch.setattr(denoising_data, "colin27_path", missing)
    with pytest.raises(InputError, match="Colin27 T1 not found"):
        train_denoising("MR", tmp_path / "run", steps=1, warmup_steps=0, batch=2, patch=32, generator_kwargs=TINY,
                        log=lambda *_: None)
    assert not (tmp_path / "run").exists()


def test_batches_depend_only_on_seed_and_step(tiny_slices):
    n1, c1, w1 = mr_batch(tiny_slices, seed=1, step=5, batch=2, size=32)
    n2, c2, w2 = mr_batch(tiny_slices, seed=1, step=5, batch=2, size=32)
    n3, _, _ = mr_batch(tiny_slices, seed=1, step=6, batch=2, size=32)
    # 2.5D: the slice and one neighbour on each side, each with its own noise; the clean centre.
    assert n1.shape == (2, 3, 32, 32) and c1.shape == (2, 1, 32, 32) and w1.shape == (2,)
    assert np.array_equal(n1, n2) and np.array_equal(c1, c2) and np.array_equal(w1, w2)
    assert not np.array_equal(n1[:, 0], n1[:, 2])
    assert not np.array_equal(n1, n3)


def test_rician_noise_is_biased_upward_on_dark_background():
    rng = np.random.default_rng(0)
    noisy = rician(np.zeros((200, 200), np.float32), 0.1, rng)
    # Magnitude of complex Gaussian noise: Rayleigh with mean sigma*sqrt(pi/2).
    assert noisy.min() >= 0
    assert abs(noisy.mean() - 0.1 * np.sqrt(np.pi / 2)) < 0.005


def test_mr_patches_are_weighted_by_inverse_noise_level(tiny_slices):
    from napari_medai.training.denoising_data import MR_NOISE_RANGE, MR_REFERENCE_SIGMA

    noisy, clean, weights = mr_batch(tiny_slices, seed=0, step=0, batch=64, size=32)
    # The noise actually added, measured on the centre slice (bright tissue: Rician ~ Gaussian).
    sigma = (noisy[:, 1] - clean[:, 0]).reshape(64, -1).std(axis=1)
    assert np.allclose(weights, MR_REFERENCE_SIGMA / sigma, rtol=0.15)
    lo, hi = MR_NOISE_RANGE
    assert weights.min() >= MR_REFERENCE_SIGMA / hi * 0.999 and weights.max() <= MR_REFERENCE_SIGMA / lo * 1.001
    # log-uniform levels: about as many patches below the geometric middle as above it
    assert 20 <= int((MR_REFERENCE_SIGMA / weights < np.sqrt(lo * hi)).sum()) <= 44


def test_sources_are_drawn_in_their_shares():
    volumes = [np.full((5, 40, 40), v, np.float32) for v in (0.5, 0.9)]
    # 3 slices of the first volume and 1 of the second; shares 0.8 / 0.2 override slice counts
    source = MRSource(volumes, [(0, 1), (0, 2), (0, 3), (1, 2)], shares=(0.2, 0.8))
    _, clean, _ = mr_batch(source, seed=0, step=0, batch=200, size=32)
    share_second = float((clean.mean(axis=(1, 2, 3)) > 0.7).mean())
    assert 0.7 < share_second < 0.9


def test_loss_weights_enter_the_content_loss(tmp_path, tiny_slices, monkeypatch):
    import napari_medai.training.denoising as training

    def zero_weight_batch(source, seed, step, batch, size):
        noisy, clean, weights = mr_batch(source, seed, step, batch, size)
        return noisy, clean, np.zeros_like(weights)

    # Without SSIM and with all weights 0 the content loss is 0: the zero-initialised head stays 0.
    monkeypatch.setattr(training, "CONTENT_SSIM_WEIGHT", 0.0)
    train_denoising("MR", tmp_path / "zero", steps=2, warmup_steps=2, batch=2, patch=32, seed=3,
                    data=(tiny_slices, zero_weight_batch), generator_kwargs=TINY, log=lambda *_: None)
    assert _weights(tmp_path / "zero")["head.weight"].abs().sum() == 0
    _train(tmp_path / "one", tiny_slices, steps=2, warmup=2)
    assert _weights(tmp_path / "one")["head.weight"].abs().sum() > 0


@pytest.mark.parametrize("sizes", [{"steps": 0}, {"batch": 0}, {"patch": -1}])
def test_sizes_that_cannot_train_are_refused_before_any_data_is_read(tmp_path, sizes):
    from napari_medai.errors import InputError
    from napari_medai.training.denoising import train_denoising

    name = next(iter(sizes))
    with pytest.raises(InputError, match=f"{name} must be 1 or more"):
        train_denoising("MR", tmp_path / "run", data=None, log=lambda *_: None, **sizes)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 3D (MR)
@pytest.fixture
def tiny_blocks():
    rng = np.random.default_rng(1)
    volume = rng.uniform(0.2, 1.0, (40, 40, 40)).astype(np.float32)
    return MRSource([volume], [(0, z0) for z0 in range(0, 40 - 16 + 1)])


def _train_3d(out, blocks, **kw):
    from napari_medai.training.denoising_data import mr_batch_3d

    settings = {"steps": 2, "warmup_steps": 2, "batch": 2, "patch": 32, "seed": 3, **kw}
    return train_denoising("MR", out, dims=3, data=(blocks, mr_batch_3d), generator_kwargs=TINY,
                           log=lambda *_: None, **settings)


def test_3d_batches_are_blocks_half_as_deep_with_inverse_noise_weights(tiny_blocks):
    from napari_medai.training.denoising_data import MR_REFERENCE_SIGMA, mr_batch_3d

    noisy, clean, weights = mr_batch_3d(tiny_blocks, seed=0, step=5, batch=3, size=32)
    assert noisy.shape == clean.shape == (3, 1, 16, 32, 32)
    # the weight is the reference level over the noise actually added (Rician, so judged on the bias-free part)
    sigma = MR_REFERENCE_SIGMA / weights
    spread = [np.std(n - c) for n, c in zip(noisy, clean)]
    assert np.allclose(spread, sigma, rtol=0.15)
    again = mr_batch_3d(tiny_blocks, seed=0, step=5, batch=3, size=32)
    assert all(np.array_equal(a, b) for a, b in zip((noisy, clean, weights), again))


def test_3d_training_blocks_stay_out_of_colin27s_guard_band(monkeypatch):
    import napari_medai.training.denoising_data as dd

    volumes = {"colin": np.ones((181, 20, 20), np.float32), "mni": np.ones((60, 20, 20), np.float32)}
    monkeypatch.setattr(dd, "colin27_path", lambda: "colin")
    monkeypatch.setattr(dd, "mni152_path", lambda: "mni")
    monkeypatch.setattr(dd, "load_mr_axial", lambda path: volumes[path])
    source = dd.mr_source_3d(depth=32)
    lo, hi = dd.COLIN_GUARD
    colin = [z0 for v, z0 in source.slices if v == 0]
    assert colin and all(z0 + 32 <= lo or z0 >= hi for z0 in colin)
    assert 0 in colin and lo - 32 in colin and hi in colin and lo - 31 not in colin
    assert [z0 for v, z0 in source.slices if v == 1] == list(range(60 - 32 + 1))
    with pytest.raises(dd.InputError, match="no training block of 200 slices"):
        dd.mr_source_3d(depth=200)


def test_3d_run_is_reproducible_and_its_card_denoises_a_volume(tmp_path, tiny_blocks):
    from napari_medai.denoising import denoise

    card = _train_3d(tmp_path / "a", tiny_blocks)
    _train_3d(tmp_path / "b", tiny_blocks)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["head.weight"].abs().sum() > 0
    assert card["spatial_dims"] == 3 and card["in_channels"] == 1 and card["roi_size"] == [16, 32, 32]
    assert card["training"]["precision"] in ("bf16", "fp32") and "3D" in card["description"]
    volume = np.random.default_rng(2).uniform(20, 100, (12, 36, 30)).astype(np.float32)
    out = denoise(volume, model=tmp_path / "a" / "mr-denoising.json")
    assert out.shape == volume.shape and not np.array_equal(out, volume)


def test_3d_adversarial_phase_runs_with_a_3d_discriminator(tmp_path, tiny_blocks):
    big = MRSource([np.random.default_rng(4).uniform(0.2, 1.0, (40, 70, 70)).astype(np.float32)],
                   [(0, z0) for z0 in range(0, 40 - 32 + 1)])
    card = _train_3d(tmp_path, big, patch=64, steps=2, warmup_steps=1, adversarial=True)
    assert card["training"]["adversarial"] is True
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert any(v.ndim == 5 for v in state["disc"].values())  # Conv3d kernels


@pytest.mark.parametrize("kw, says", [
    ({"modality": "CT", "dims": 3}, "dims must be 2, or 3 for MR"),
    ({"modality": "MR", "dims": 3, "patch": 30}, "must be a multiple of 4"),
    ({"modality": "MR", "dims": 4}, "dims must be 2, or 3 for MR"),
])
def test_3d_settings_that_cannot_train_are_refused_before_any_data(tmp_path, kw, says):
    from napari_medai.errors import InputError

    kw = {"patch": 32, **kw}
    modality = kw.pop("modality")
    with pytest.raises(InputError, match=says):
        train_denoising(modality, tmp_path, steps=2, warmup_steps=2, batch=2, generator_kwargs=TINY,
                        data=("never read", None), log=lambda *_: None, **kw)


def test_the_recorded_command_names_the_device_the_run_used():
    """--device auto, typed or left out, trains on a GPU where there is one: the card names the
    device the run used (a reviewer's finding: a typed auto was kept)."""
    from napari_medai.training.denoising import _pinned

    assert _pinned("medai train denoising --modality CT", "cpu") == "medai train denoising --modality CT --device cpu"
    assert _pinned("medai train denoising --device auto --steps 2", "cuda") == "medai train denoising --device cuda --steps 2"
    assert _pinned("medai train denoising --device=auto", "cpu") == "medai train denoising --device=cpu"
    assert _pinned("medai train denoising --device cuda:1", "cuda:1") == "medai train denoising --device cuda:1"
    assert _pinned("medai train denoising --device AUTO", "cpu") == "medai train denoising --device cpu"
    assert _pinned("", "cpu") == ""


def test_a_run_resumes_only_in_the_precision_it_began_in(tmp_path, tiny_slices):
    """A 3D run begun in bf16 and restarted with --fp32 resumed without a word and its card said
    fp32 (a reviewer's finding).  A checkpoint from before the key was recorded still resumes."""
    from napari_medai.errors import InputError

    _train(tmp_path / "run", tiny_slices, steps=3, checkpoint_every=1)
    last = tmp_path / "run" / "last.pt"
    state = torch.load(last, weights_only=False)
    assert state["settings"]["bf16"] is False  # a 2D run: fp32
    state["settings"]["bf16"] = True  # as a 3D run on a CPU with native bf16 would have written it
    torch.save(state, last)
    with pytest.raises(InputError, match=r"other settings \(bf16 True -> False\)"):
        _train(tmp_path / "run", tiny_slices, steps=3)
    del state["settings"]["bf16"]
    torch.save(state, last)
    _train(tmp_path / "run", tiny_slices, steps=3)
