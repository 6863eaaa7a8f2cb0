"""Outputs land on the input grid, voxel for voxel, whatever the model's spacing and axes."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_medai.inference import InferenceSettings, run_model
from napari_medai.inference.layout import axes_permutation, from_network_axes, to_network_axes
from napari_medai.inference.resample import resample, working_shape
from tiny_nets import Counting, Identity, make_model

FP32 = InferenceSettings(precision="fp32")


def block_volume(shape, block):
    volume = np.zeros(shape, dtype=np.float32)
    volume[block] = 1.0
    return volume


def test_anisotropic_input_output_block_at_the_same_voxels():
    # 3 mm slices, model at 1 mm: the network sees a 3x taller volume, the output comes back
    # to the 10 input slices with the block exactly where it was.
    block = (slice(3, 6), slice(8, 20), slice(11, 17))
    volume = block_volume((10, 30, 30), block)
    network = Counting(Identity())
    model = make_model(network, spacing=(1.0, 1.0, 1.0), roi_size=(32, 32, 32), out_channels=1,
                       output="identity")
    out = run_model(model, volume, spacing=(3.0, 1.0, 1.0), settings=FP32)
    assert out.shape == (1, 10, 30, 30)
    assert [shape[2:] for shape in network.shapes] == [(32, 32, 32)]  # 30 mm at 1 mm, padded to the roi
    np.testing.assert_array_equal(out[0] > 0.5, volume > 0.5)
    # integer zoom factors: linear up- and down-sampling round-trips exactly
    np.testing.assert_allclose(out[0], volume, atol=1e-5)


@pytest.mark.parametrize("spacing", [(2.5, 0.8, 0.8), (1.0, 0.6, 0.6), (5.0, 1.3, 0.7)])
def test_non_integer_zoom_is_aligned_with_the_input_grid(spacing):
    # A linear ramp is reproduced exactly by linear resampling wherever no edge clamping
    # happens: any shift of the grid, even a tenth of a voxel, would show as an error.
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in (14, 26, 28)), indexing="ij")
    ramp = 10 * z + 3 * y - 2 * x
    model = make_model(Identity(), spacing=(1.0, 1.0, 1.0), roi_size=(32, 32, 32), out_channels=1,
                       output="identity")
    out = run_model(model, ramp, spacing=spacing, settings=FP32)
    assert out.shape == (1, 14, 26, 28)
    interior = (slice(2, -2),) * 3
    np.testing.assert_allclose(out[0][interior], ramp[interior], atol=1e-3)


@pytest.mark.parametrize("spacing", [(2.5, 0.8, 0.8), (5.0, 1.3, 0.7)])
def test_non_integer_zoom_keeps_a_block_in_place(spacing):
    block = (slice(4, 10), slice(6, 18), slice(9, 21))
    volume = block_volume((14, 26, 28), block)
    model = make_model(Identity(), spacing=(1.0, 1.0, 1.0), roi_size=(32, 32, 32), out_channels=1,
                       output="identity")
    out = run_model(model, volume, spacing=spacing, settings=FP32)[0]
    # without anti-aliasing a voxel on the block's faces may flip; nothing inside or far away
    changed = (out > 0.5) != (volume > 0.5)
    on_faces = ndimage.binary_dilation(volume > 0.5) & ~ndimage.binary_erosion(volume > 0.5)
    assert not (changed & ~on_faces).any()
    assert changed.sum() < 0.05 * on_faces.sum()


def test_network_sees_the_volume_at_the_model_spacing():
    # Input: slice position in mm (3 mm slices).  At the model's 1 mm spacing neighbouring
    # voxels must differ by exactly 1 mm inside the volume (edges are clamped).
    seen = []

    class Recorder(Identity):
        def forward(self, x):
            seen.append(x.cpu().clone())  # the engine may run it on a GPU
            return x * 1.0

    z_mm = np.broadcast_to(3.0 * np.arange(10, dtype=np.float32)[:, None, None], (10, 8, 8)).copy()
    model = make_model(Recorder(), spacing=(1.0, 2.0, 2.0), roi_size=(30, 4, 4), out_channels=1,
                       output="identity")
    run_model(model, z_mm, spacing=(3.0, 1.0, 1.0), settings=FP32)
    profile = seen[0][0, 0, :, 1, 1].numpy()
    assert profile.shape == (30,)
    np.testing.assert_allclose(np.diff(profile)[2:-2], 1.0, atol=1e-5)


def test_working_shape_keeps_the_field_of_view():
    assert working_shape((10, 30, 30), (3.0, 1.0, 1.0), (1.0, 1.0, 1.0)) == (30, 30, 30)
    assert working_shape((300, 512, 512), (1.25, 0.7, 0.7), (2.0, 1.5, 1.5)) == (188, 239, 239)
    assert working_shape((5, 6, 7), (1, 1, 1), None) == (5, 6, 7)


def test_nearest_resampling_keeps_label_values():
    labels = torch.zeros(1, 6, 6, 6)
    labels[0, 2:4, 1:5, 3:6] = 2
    up = resample(labels, (12, 12, 12), mode="nearest")
    assert set(up.unique().tolist()) == {0.0, 2.0}
    np.testing.assert_array_equal(resample(up, (6, 6, 6), mode="nearest"), labels)


def test_ras_layout_moves_a_marker_where_expected():
    volume = torch.zeros(1, 4, 5, 6)  # (z, y, x) = S, P, L
    volume[0, 1, 2, 3] = 1
    ras = to_network_axes(volume, "RAS")  # (x towards R, y towards A, z towards S)
    assert ras.shape == (1, 6, 5, 4)
    assert tuple(torch.nonzero(ras[0])[0].tolist()) == (6 - 1 - 3, 5 - 1 - 2, 1)
    assert torch.equal(from_network_axes(ras, "RAS"), volume)
    assert axes_permutation("SPL") == ((0, 1, 2), (False, False, False))


def test_model_with_ras_axes_sees_a_permuted_volume_and_output_comes_back(rng):
    seen = []

    class Recorder(Identity):
        def forward(self, x):
            seen.append(x.cpu().clone())  # the engine may run it on a GPU
            return x * 1.0

    volume = rng.normal(size=(8, 12, 16)).astype(np.float32)
    model = make_model(Recorder(), roi_size=(8, 12, 16), out_channels=1, output="identity",
                       extra={"axes": "RAS"})
    out = run_model(model, volume, settings=FP32)
    assert seen[0].shape[2:] == (16, 12, 8)  # roi given in (z, y, x) becomes (x, y, z)
    np.testing.assert_allclose(seen[0][0, 0].numpy(), volume.transpose(2, 1, 0)[::-1, ::-1], atol=1e-6)
    np.testing.assert_allclose(out[0], volume, atol=1e-6)
