"""Test-time mirroring: outputs are flipped back before averaging, the card decides by default."""

import numpy as np
import pytest
import torch
from torch import nn

from napari_medai.errors import InputError, ModelError
from napari_medai.inference import InferenceSettings, run_model
from tiny_nets import Counting, Pointwise, make_model

OFF, MIRROR = InferenceSettings(precision="fp32", tta="off"), InferenceSettings(precision="fp32", tta="mirror")


class Lopsided(nn.Module):
    """A 3x3x3 convolution with random weights: its output changes when the input is mirrored."""

    def __init__(self, dims=3):
        super().__init__()
        torch.manual_seed(1)
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.conv = conv(1, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def test_mirroring_an_equivariant_network_changes_nothing(rng):
    # A per-voxel network gives the same output for a mirrored input, mirrored: any output left
    # unflipped, or flipped along the wrong axis, would show here.
    volume = rng.normal(size=(12, 20, 18)).astype(np.float32)
    model = make_model(Pointwise(), roi_size=(12, 20, 18))
    np.testing.assert_allclose(run_model(model, volume, settings=MIRROR), run_model(model, volume, settings=OFF),
                               atol=1e-6)


def test_mirrored_output_is_the_mean_of_the_four_flipped_passes(rng):
    net = Lopsided()
    volume = rng.normal(size=(8, 12, 10)).astype(np.float32)
    model = make_model(net, roi_size=(8, 12, 10))  # one window covers the volume
    x = torch.from_numpy(volume)[None, None]
    with torch.inference_mode():
        passes = [torch.softmax(net(x), 1)] + [torch.softmax(net(x.flip(d)), 1).flip(d) for d in (2, 3, 4)]
    expected = torch.stack(passes).mean(0)[0].numpy()
    out = run_model(model, volume, settings=MIRROR)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert not np.allclose(out, run_model(model, volume, settings=OFF), atol=1e-3)  # mirroring mattered


def test_card_decides_by_default_and_settings_override(rng):
    volume = rng.normal(size=(16, 16, 16)).astype(np.float32)
    net = Counting(Pointwise())
    mirrored = make_model(net, extra={"tta": "mirror"})
    run_model(mirrored, volume, settings=InferenceSettings(precision="fp32"))
    assert net.calls == 4  # one window, four passes
    run_model(mirrored, volume, settings=OFF)
    assert net.calls == 5
    plain = make_model(net)  # a card that says nothing: off
    run_model(plain, volume, settings=InferenceSettings(precision="fp32"))
    assert net.calls == 6


def test_two_dimensional_model_is_mirrored_in_plane_only(rng):
    net = Counting(Lopsided(dims=2))
    volume = rng.normal(size=(3, 10, 12)).astype(np.float32)
    out = run_model(make_model(net, spatial_dims=2, roi_size=(10, 12)), volume, settings=MIRROR)
    assert net.calls == 3
    x = torch.from_numpy(volume)[:, None]
    with torch.inference_mode():
        inner = net.inner.cpu()  # the engine may have run it on a GPU
        passes = [torch.softmax(inner(x), 1)] + [torch.softmax(inner(x.flip(d)), 1).flip(d) for d in (2, 3)]
    np.testing.assert_allclose(out, torch.stack(passes).mean(0).permute(1, 0, 2, 3).numpy(), atol=1e-5)


def test_progress_counts_every_pass_on_one_bar(rng):
    reports = []
    run_model(make_model(Pointwise()), rng.normal(size=(16, 16, 16)).astype(np.float32), settings=MIRROR,
              progress=lambda d, t: reports.append((d, t)))
    assert {t for _, t in reports} == {4}
    done = [d for d, _ in reports]
    assert done == sorted(done) and done[-1] == 4


def test_bad_choices_are_clear_errors(rng):
    volume = rng.normal(size=(16, 16, 16)).astype(np.float32)
    with pytest.raises(InputError, match="test-time augmentation"):
        run_model(make_model(Pointwise()), volume, settings=InferenceSettings(tta="rotate"))
    with pytest.raises(ModelError, match="test-time augmentation"):
        run_model(make_model(Pointwise(), extra={"tta": "rotate"}), volume)


def test_cancel_during_a_later_pass_returns_nothing(rng):
    from napari_medai.errors import Cancelled
    from napari_medai.inference import CancelToken

    net = Counting(Pointwise())
    token = CancelToken()

    def progress(done, total):
        if done == 3:  # the third of four one-window passes has finished
            token.cancel()

    with pytest.raises(Cancelled):
        run_model(make_model(net), rng.normal(size=(16, 16, 16)).astype(np.float32), settings=MIRROR,
                  progress=progress, cancel=token)
    assert net.calls == 3
