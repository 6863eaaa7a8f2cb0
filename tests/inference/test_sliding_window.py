"""Sliding window: equals one whole-volume pass, counts windows exactly, honours cancel."""

import math

import numpy as np
import pytest
import torch

from napari_medai.errors import Cancelled
from napari_medai.inference import CancelToken, InferenceSettings, count_windows, run_model, run_sliding_window
from tiny_nets import Counting, Pointwise, make_model

# (volume shape, roi, overlap): sizes that are not multiples of the roi, a volume smaller
# than the roi along one axis (MONAI pads, then crops), and a large overlap.
GEOMETRIES = [
    ((23, 37, 29), (16, 16, 16), 0.25),
    ((9, 40, 33), (16, 24, 16), 0.5),
    ((16, 16, 16), (16, 16, 16), 0.25),
]


@pytest.mark.parametrize("shape, roi, overlap", GEOMETRIES)
def test_sliding_window_equals_whole_volume_forward(shape, roi, overlap, rng):
    network = Pointwise().eval()
    volume = torch.from_numpy(rng.normal(size=(1, 1, *shape)).astype(np.float32))
    with torch.inference_mode():
        expected = network(volume)
        stitched = run_sliding_window(network, volume, roi, overlap=overlap, mode="gaussian", sw_batch_size=3)
    assert stitched.shape == expected.shape
    np.testing.assert_allclose(stitched.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_run_model_equals_whole_volume_softmax(rng):
    network = Pointwise()
    volume = rng.normal(size=(21, 30, 27)).astype(np.float32)
    model = make_model(network, roi_size=(16, 16, 16))
    out = run_model(model, volume, spacing=(1.0, 1.0, 1.0), settings=InferenceSettings(precision="fp32"))
    with torch.inference_mode():
        expected = torch.softmax(network.cpu()(torch.from_numpy(volume)[None, None]), dim=1)[0].numpy()
    assert out.dtype == np.float32 and out.shape == (2, 21, 30, 27)
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("shape, roi, overlap", GEOMETRIES)
def test_progress_reaches_total_and_counts_every_window(shape, roi, overlap, rng):
    network = Counting(Pointwise())
    reports = []
    volume = torch.from_numpy(rng.normal(size=(1, 1, *shape)).astype(np.float32))
    with torch.inference_mode():
        run_sliding_window(network, volume, roi, overlap=overlap, sw_batch_size=4,
                       progress=lambda done, total: reports.append((done, total)))
    total = count_windows(shape, roi, overlap)
    assert reports[0] == (0, total)
    assert reports[-1] == (total, total)
    assert network.windows == total
    assert network.calls == math.ceil(total / 4) == len(reports) - 1
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)


def test_cancel_stops_after_the_current_batch(rng):
    network = Counting(Pointwise())
    model = make_model(network, roi_size=(8, 8, 8))
    token = CancelToken()
    reports = []

    def progress(done, total):
        reports.append((done, total))
        if done >= 6:  # the user presses Cancel after the second batch of 3 windows
            token.cancel()

    volume = rng.normal(size=(24, 24, 24)).astype(np.float32)
    settings = InferenceSettings(sw_batch_size=3, precision="fp32")
    with pytest.raises(Cancelled):
        run_model(model, volume, settings=settings, progress=progress, cancel=token)
    total = reports[-1][1]
    assert total == 64  # 4 x 4 x 4 windows at overlap 0.25
    assert network.calls == 2 and network.windows == 6


def test_cancel_before_start_runs_nothing(rng):
    network = Counting(Pointwise())
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        run_model(make_model(network), rng.normal(size=(16, 16, 16)).astype(np.float32), cancel=token)
    assert network.calls == 0


def test_cancel_during_last_batch_still_returns_nothing(rng):
    network = Counting(Pointwise())
    token = CancelToken()

    def progress(done, total):
        if done == total:
            token.cancel()

    with pytest.raises(Cancelled):
        run_model(make_model(network), rng.normal(size=(16, 16, 16)).astype(np.float32),
                  progress=progress, cancel=token)
    assert network.calls == 1


def test_two_dimensional_model_runs_slice_by_slice(rng):
    network = Counting(Pointwise(dims=2))
    model = make_model(network, spatial_dims=2, roi_size=(16, 16))
    volume = rng.normal(size=(5, 20, 30)).astype(np.float32)
    reports = []
    out = run_model(model, volume, spacing=(3.0, 1.0, 1.0), settings=InferenceSettings(precision="fp32"),
                    progress=lambda d, t: reports.append((d, t)))
    with torch.inference_mode():
        expected = torch.softmax(network.inner.cpu()(torch.from_numpy(volume)[:, None]), dim=1)
    np.testing.assert_allclose(out, expected.permute(1, 0, 2, 3).numpy(), atol=1e-5)
    per_slice = count_windows((20, 30), (16, 16), 0.25)
    assert reports[-1] == (5 * per_slice, 5 * per_slice) == (network.windows, network.windows)
    assert all(len(s) == 4 for s in network.shapes)  # (windows, C, y, x): 2D convolutions
