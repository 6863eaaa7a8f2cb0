"""denoise() feeds the network the input clipped at the training floor (CT -1024 HU, MR 0) and
returns the voxels below it unchanged (tiny models only)."""

import numpy as np
import pytest
from denoise_helpers import make_tiny_card

from napari_medai.denoising import denoise
from napari_medai.errors import ModelError

FP32 = {"precision": "fp32"}


def test_ct_padding_below_the_floor_leaves_the_body_as_with_air(tmp_path):
    """Scanners write -2048 or -3024 HU outside the field of view; training clipped it to -1024.
    The padding used to move the denoised body by several HU (instance norm saw it)."""
    model = make_tiny_card(tmp_path, modality="CT", head_weight=0.05)
    ct = np.full((2, 32, 32), -1024.0, np.float32)
    ct[:, 8:24, 8:24] = 40.0 + np.random.default_rng(0).normal(0.0, 20.0, (2, 16, 16))
    corners = np.zeros(ct.shape, bool)
    corners[:, :4, :4] = corners[:, -4:, -4:] = True
    air = denoise(ct, model=model, settings=FP32)
    for padding in (-2048.0, -3024.0):
        padded = np.where(corners, padding, ct).astype(np.float32)
        out = denoise(padded, model=model, settings=FP32)
        np.testing.assert_array_equal(out[~corners], air[~corners])
        assert (out[corners] == padding).all()  # the padding comes back as it was


def test_one_negative_mr_voxel_leaves_the_rest_of_the_volume_alone(tmp_path):
    """The MR card's 0th percentile was 0 in training (magnitude images); at inference it is the
    image's minimum, so one negative voxel used to rescale the whole volume."""
    model = make_tiny_card(tmp_path, modality="MR", head_weight=0.05)
    rng = np.random.default_rng(0)
    mr = np.zeros((3, 32, 32), np.float32)
    mr[:, 6:26, 6:26] = 100.0
    mr = np.abs(mr + rng.normal(0.0, 5.0, mr.shape)).astype(np.float32)
    mr[1, 0, 0] = 0.0
    base = denoise(mr, model=model, settings=FP32)
    ringing = mr.copy()
    ringing[1, 0, 0] = -800.0  # e.g. spline resampling of a sharp edge
    out = denoise(ringing, model=model, settings=FP32)
    assert out[1, 0, 0] == -800.0
    out[1, 0, 0] = base[1, 0, 0]
    np.testing.assert_array_equal(out, base)


def test_a_normalised_mr_is_refused_by_an_mr_denoiser(tmp_path):
    """Half of a z-scored MR lies below 0: it would come back half undenoised."""
    model = make_tiny_card(tmp_path, modality="MR")
    z_scored = np.random.default_rng(0).normal(0.0, 1.0, (3, 16, 16)).astype(np.float32)
    with pytest.raises(ModelError, match="looks like a normalised"):
        denoise(z_scored, model=model)
    with pytest.raises(ModelError, match="looks like a normalised"):
        denoise(z_scored, model=model, strength=0.0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_a_nonzero_zscore_denoiser_keeps_the_background_at_0(spatial_dims):
    # invert is linear: the zeros the z-score left out came back as the brain's mean (about 100)
    import torch

    from napari_medai.denoising import denoise
    from napari_medai.models.card import ModelCard
    from napari_medai.models.loading import LoadedModel

    class PassThrough(torch.nn.Module):
        size_multiple = 1

        def forward(self, x):
            return x[:, :1] * 1.0

    rng = np.random.default_rng(0)
    mr = np.zeros((4, 32, 32), np.float32)
    mr[:, 8:24, 8:24] = 100 + rng.normal(0, 10, (4, 16, 16))
    card = ModelCard(name="pass", task="denoising", modality="MR", spacing=None, roi_size=(32,) * spatial_dims,
                     spatial_dims=spatial_dims, in_channels=1, out_channels=1, output="identity",
                     intensity={"kind": "zscore", "nonzero": True})
    out = denoise(mr, None, model=LoadedModel(card, PassThrough()), settings={"device": "cpu", "precision": "fp32"})
    assert (out[mr == 0] == 0).all()
    np.testing.assert_allclose(out[mr != 0], mr[mr != 0], rtol=1e-5)


@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_an_mr_denoisers_output_is_not_negative(modality):
    """MR magnitude is not below 0: the shipped MR model undershot Colin27's 0 background to -4.
    A CT denoiser's output may go below -1024 HU (it is not clipped)."""
    import torch

    from napari_medai.models.card import ModelCard
    from napari_medai.models.loading import LoadedModel

    class Undershoot(torch.nn.Module):
        size_multiple = 1

        def forward(self, x):
            return x[:, :1] - 0.05  # 5 % of the window below the input

    image = np.zeros((2, 16, 16), np.float32) if modality == "MR" else np.full((2, 16, 16), -1000.0, np.float32)
    image[:, 4:12, 4:12] = 100.0 + np.random.default_rng(0).normal(0, 5, (2, 8, 8))
    window = {"kind": "ct_window", "a_min": float(image.min()), "a_max": 200.0, "b_min": 0.0, "b_max": 1.0, "clip": False}
    card = ModelCard(name="under", task="denoising", modality=modality, spacing=None, roi_size=(16, 16),
                     spatial_dims=2, in_channels=1, out_channels=1, output="identity", intensity=window)
    out = denoise(image, None, model=LoadedModel(card, Undershoot()), settings=FP32)
    shift = 0.05 * (200.0 - image.min())
    np.testing.assert_allclose(out[:, 4:12, 4:12], image[:, 4:12, 4:12] - shift, rtol=1e-5)  # the brain moved
    if modality == "MR":
        assert out.min() == 0.0 and (out[image == 0] == 0).all()
    else:
        np.testing.assert_allclose(out[image == -1000], -1000 - shift, rtol=1e-6)


def test_voxels_outside_a_clipping_window_come_back_as_they_went_in():
    """A card's ct_window clips by default: the network saw bone at the window's edge, and 1800 HU
    came back at about 1000 (found by an audit helper).  The shipped cards do not clip."""
    import torch

    from napari_medai.models.card import ModelCard
    from napari_medai.models.loading import LoadedModel

    class PassThrough(torch.nn.Module):
        size_multiple = 1

        def forward(self, x):
            return x[:, :1] * 1.0

    ct = np.full((2, 16, 16), -800.0, np.float32)
    ct[:, 4:8, 4:8] = 1800.0  # bone, beyond the window
    ct[:, 10:14, 10:14] = 40.0 + np.random.default_rng(0).normal(0, 5, (2, 4, 4))
    window = {"kind": "ct_window", "a_min": -1000.0, "a_max": 1000.0, "b_min": 0.0, "b_max": 1.0}  # clip: default
    card = ModelCard(name="clips", task="denoising", modality="CT", spacing=None, roi_size=(16, 16), spatial_dims=2,
                     in_channels=1, out_channels=1, output="identity", intensity=window)
    out = denoise(ct, None, model=LoadedModel(card, PassThrough()), settings=FP32)
    np.testing.assert_allclose(out, ct, atol=1e-3)  # bone included: it used to come back at 1000 HU


def test_a_channel_wise_percentile_window_runs_on_a_volume_of_several_slices():
    """denoise() fits its window on the (z, y, x) stack: the channel-wise refusal took the slices
    for channels (found by a reviewer)."""
    import torch

    from napari_medai.models.card import ModelCard
    from napari_medai.models.loading import LoadedModel

    class PassThrough(torch.nn.Module):
        size_multiple = 1

        def forward(self, x):
            return x[:, :1] * 1.0

    mr = 100 + np.random.default_rng(0).normal(0, 5, (3, 16, 16)).astype(np.float32)
    window = {"kind": "percentile", "lower": 0.0, "upper": 99.0, "b_min": 0.0, "b_max": 1.0, "channel_wise": True}
    card = ModelCard(name="cw", task="denoising", modality="MR", spacing=None, roi_size=(16, 16), spatial_dims=2,
                     in_channels=1, out_channels=1, output="identity", intensity=window)
    np.testing.assert_allclose(denoise(mr, None, model=LoadedModel(card, PassThrough()), settings=FP32), mr, rtol=1e-5)
