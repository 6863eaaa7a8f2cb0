"""3D denoisers: the whole volume in one pass, or in overlapping blocks when it is large."""

from __future__ import annotations

import numpy as np
import pytest
from denoise_helpers import make_tiny_card

import napari_medai.denoising as denoising
from napari_medai.denoising import denoise
from napari_medai.errors import Cancelled, InputError
from napari_medai.inference.cancel import CancelToken


@pytest.fixture
def volume(rng):
    # not a multiple of the network's size multiple on any axis: padding and cropping must hold
    return (50 + 20 * rng.random((13, 30, 27))).astype(np.float32)


def test_identity_3d_generator_returns_the_volume_through_padding_and_scaling(tmp_path, volume):
    card = make_tiny_card(tmp_path, spatial_dims=3)
    out = denoise(volume, model=card)
    assert out.shape == volume.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, volume, rtol=1e-5, atol=1e-3)


def test_one_pass_and_blocks_agree_away_from_block_edges_and_progress_counts_passes(tmp_path, volume, monkeypatch):
    card = make_tiny_card(tmp_path, spatial_dims=3, head_weight=0.05)
    seen = []
    whole = denoise(volume, model=card, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 1), (1, 1)]
    assert not np.allclose(whole, volume, atol=1e-2)  # the generator does change the volume
    monkeypatch.setattr(denoising, "WHOLE_VOLUME_VOXELS", 1000)
    monkeypatch.setattr(denoising, "VOLUME_WINDOW", (8, 16, 16))
    seen.clear()
    blocks = denoise(volume, model=card, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] > 1  # several blocks, each counted
    # Blocks differ from one pass: each sees less context and normalises its own features (instance
    # norm), here on blocks of 8 x 16 x 16; a block put in the wrong place would be off by the
    # volume's own variation (~5 here), two orders of magnitude more.
    assert np.median(np.abs(blocks - whole)) < 0.3 * np.median(np.abs(whole - volume))
    # with an identity generator the blocks give back the volume itself: placement and crop are exact
    identity = make_tiny_card(tmp_path / "identity", spatial_dims=3)
    np.testing.assert_allclose(denoise(volume, model=identity), volume, rtol=1e-5, atol=1e-3)


def test_a_3d_model_refuses_a_single_slice(tmp_path, volume):
    card = make_tiny_card(tmp_path, spatial_dims=3)
    with pytest.raises(InputError, match="is 3D and needs a volume"):
        denoise(volume[0], model=card)
    with pytest.raises(InputError, match="is 3D and needs a volume"):
        denoise(volume[:1], model=card)


def test_a_3d_cancel_leaves_nothing(tmp_path, volume, monkeypatch):
    card = make_tiny_card(tmp_path, spatial_dims=3, head_weight=0.05)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        denoise(volume, model=card, cancel=token)
    monkeypatch.setattr(denoising, "WHOLE_VOLUME_VOXELS", 1000)
    monkeypatch.setattr(denoising, "VOLUME_WINDOW", (8, 16, 16))
    token = CancelToken()
    calls = []

    def progress(done, total):
        calls.append(done)
        if done >= 2:
            token.cancel()

    with pytest.raises(Cancelled):
        denoise(volume, model=card, cancel=token, progress=progress)
    assert max(calls) < 8  # stopped long before the last block


def test_a_one_pass_that_runs_out_of_device_memory_is_run_again_in_blocks(tmp_path, volume, monkeypatch):
    import torch

    import napari_medai.inference.sliding_window as sw

    card = make_tiny_card(tmp_path, spatial_dims=3, head_weight=0.05)
    monkeypatch.setattr(denoising, "VOLUME_WINDOW", (8, 16, 16))
    real, rois = sw.run_sliding_window, []

    def gpu_too_small(network, x, roi, **kwargs):
        rois.append(tuple(roi))
        if tuple(roi) == tuple(x.shape[2:]):  # the whole volume at once
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real(network, x, roi, **kwargs)

    monkeypatch.setattr(sw, "run_sliding_window", gpu_too_small)
    out = denoise(volume, model=card)
    assert rois == [(14, 30, 28), (8, 16, 16)]  # padded to the size multiple (2), then the blocks
    monkeypatch.setattr(sw, "run_sliding_window", real)
    monkeypatch.setattr(denoising, "WHOLE_VOLUME_VOXELS", 1000)
    np.testing.assert_array_equal(out, denoise(volume, model=card))  # what blocks give from the start


def test_blocks_that_run_out_of_device_memory_still_say_so(tmp_path, volume, monkeypatch):
    import torch

    import napari_medai.inference.sliding_window as sw

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    card = make_tiny_card(tmp_path, spatial_dims=3)
    monkeypatch.setattr(sw, "run_sliding_window", no_memory)
    with pytest.raises(torch.OutOfMemoryError):  # one pass, and no smaller blocks to retry in
        denoise(volume, model=card)
    monkeypatch.setattr(denoising, "VOLUME_WINDOW", (8, 16, 16))
    with pytest.raises(torch.OutOfMemoryError):  # one pass, then its blocks
        denoise(volume, model=card)
    monkeypatch.setattr(denoising, "WHOLE_VOLUME_VOXELS", 1000)
    with pytest.raises(torch.OutOfMemoryError):  # blocks from the start
        denoise(volume, model=card)
