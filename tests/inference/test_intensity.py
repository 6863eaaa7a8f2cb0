"""Intensity preprocessing from the card, and image outputs mapped back to input units."""

import numpy as np
import pytest
import torch

from napari_medai.inference import InferenceSettings, run_model
from napari_medai.inference.intensity import fit_intensity
from tiny_nets import Identity, make_model

WINDOW = {"kind": "ct_window", "a_min": -1000, "a_max": 400, "b_min": 0, "b_max": 1, "clip": True}


def test_ct_window_scales_and_clips():
    hu = torch.tensor([[-2000.0, -1000.0, -300.0, 400.0, 3000.0]])
    out = fit_intensity(WINDOW, hu).apply(hu)
    np.testing.assert_allclose(out.numpy(), [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-6)
    assert hu[0, 0] == -2000.0  # the input is not modified


def test_percentile_window_uses_this_images_percentiles(rng):
    image = torch.from_numpy(rng.normal(100, 20, size=(1, 20, 20, 20)).astype(np.float32))
    imap = fit_intensity({"kind": "percentile", "lower": 1, "upper": 99}, image)
    out = imap.apply(image)
    assert abs(float((out < 0).float().mean()) - 0.01) < 0.003
    assert abs(float((out > 1).float().mean()) - 0.01) < 0.003
    np.testing.assert_allclose(imap.invert(out.clone()).numpy(), image.numpy(), rtol=1e-4, atol=1e-3)


def test_zscore(rng):
    image = torch.from_numpy(rng.normal(300, 50, size=(1, 10, 10, 10)).astype(np.float32))
    out = fit_intensity({"kind": "zscore"}, image).apply(image)
    assert abs(float(out.mean())) < 1e-4 and abs(float(out.std()) - 1) < 1e-3


def test_identity_model_output_comes_back_in_hu(small_ct):
    # A denoising-style card: the network works on the [0, 1] window, the caller gets HU.
    window = dict(WINDOW, a_min=-1100, a_max=300)
    model = make_model(Identity(), intensity=window, out_channels=1, output="identity", task="denoising")
    out = run_model(model, small_ct, spacing=(1.0, 1.0, 1.0), settings=InferenceSettings(precision="fp32"))
    inside = (small_ct > -1100) & (small_ct < 300)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(out[0][inside], small_ct[inside], atol=0.05)
    assert out[0].min() >= -1100 - 1e-3  # clipped to the window


@pytest.mark.parametrize("card_spacing", [None, (2.0, 2.0, 2.0)])
def test_an_image_output_keeps_a_nonzero_zscores_background_at_0(rng, card_spacing):
    """The zeros a nonzero z-score leaves out (MR's background) stay 0 in an image output, on the
    input's grid or the model's: the linear inversion gave them the brain's mean (about 100)."""
    mr = np.zeros((8, 16, 16), np.float32)
    mr[2:6, 4:12, 4:12] = 100 + rng.normal(0, 10, (4, 8, 8))
    model = make_model(Identity(), intensity={"kind": "zscore", "nonzero": True}, out_channels=1,
                       output="identity", spacing=card_spacing, roi_size=(8, 16, 16))
    out = run_model(model, mr, spacing=(1.0, 1.0, 1.0), settings=InferenceSettings(precision="fp32"))
    assert (out[0][mr == 0] == 0).all()
    if card_spacing is None:  # on its own grid the pass-through gives the brain back
        np.testing.assert_allclose(out[0][mr != 0], mr[mr != 0], rtol=1e-4)


def test_channel_wise_percentiles_are_refused_for_several_channels(rng):
    """A bundle's ScaleIntensityRangePercentilesd(channel_wise=True) was fitted on the channels'
    pooled percentiles (found by an audit helper); on one channel it is the same window, and a
    denoiser's (z, y, x) stack is one channel, however many slices (found by a reviewer)."""
    from napari_medai.errors import ModelError

    spec = {"kind": "percentile", "lower": 1.0, "upper": 99.0, "b_min": 0.0, "b_max": 1.0, "channel_wise": True}
    volume = rng.normal(100, 20, size=(8, 8, 8)).astype(np.float32)
    one = make_model(Identity(), intensity=spec, out_channels=1, output="identity", task="denoising")
    plain = make_model(Identity(), intensity={k: v for k, v in spec.items() if k != "channel_wise"}, out_channels=1,
                       output="identity", task="denoising")
    settings = InferenceSettings(precision="fp32")
    np.testing.assert_array_equal(run_model(one, volume, settings=settings), run_model(plain, volume, settings=settings))
    two = make_model(Identity(), intensity=spec, in_channels=2, out_channels=2, output="identity", task="denoising")
    with pytest.raises(ModelError, match="each input channel between its own percentiles"):
        run_model(two, np.stack([volume, volume * 10]), settings=settings)


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_probability_outputs(small_ct, output):
    model = make_model(Identity(), intensity=WINDOW, out_channels=1, output=output)
    out = run_model(model, small_ct, settings=InferenceSettings(precision="fp32"))
    if output == "sigmoid":  # sigmoid of the windowed image
        expected = 1 / (1 + np.exp(-np.clip((small_ct + 1000) / 1400, 0, 1)))
        np.testing.assert_allclose(out[0], expected, atol=1e-5)
    else:  # softmax over a single channel is 1 everywhere
        np.testing.assert_allclose(out, 1.0)


# ---- kinds read from MONAI bundles, checked against MONAI's own transforms ----------------
def _monai(transform, image: torch.Tensor) -> np.ndarray:
    return np.asarray(transform(image.clone()))


@pytest.mark.parametrize("spec, kwargs", [
    ({"kind": "zscore", "subtrahend": 100.0, "divisor": 50.0}, dict(subtrahend=100.0, divisor=50.0)),
    ({"kind": "zscore", "subtrahend": 100.0}, dict(subtrahend=100.0)),  # the image's std
    ({"kind": "zscore", "divisor": 0.0}, dict(divisor=0.0)),  # divides by 1, as MONAI
    ({"kind": "zscore", "subtrahend": 10.0, "divisor": 4.0, "nonzero": True},
     dict(subtrahend=10.0, divisor=4.0, nonzero=True)),
    ({"kind": "zscore", "subtrahend": [1.0, 2.0], "divisor": [3.0, 4.0], "channel_wise": True},
     dict(subtrahend=[1.0, 2.0], divisor=[3.0, 4.0], channel_wise=True)),
])
def test_fixed_zscore_is_monais_normalize_intensity(rng, spec, kwargs):
    from monai.transforms import NormalizeIntensity

    image = torch.from_numpy(rng.normal(80, 30, size=(2, 4, 5, 6)).astype(np.float32))
    image[:, 0] = 0.0  # zeros, for nonzero
    out = fit_intensity(spec, image).apply(image)
    np.testing.assert_allclose(out.numpy(), _monai(NormalizeIntensity(**kwargs), image), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channel_wise", [False, True])
def test_minmax_is_monais_scale_intensity(rng, channel_wise):
    from monai.transforms import ScaleIntensity

    image = torch.from_numpy(rng.normal(80, 30, size=(2, 4, 5, 6)).astype(np.float32))
    spec = {"kind": "minmax", "b_min": -1.0, "b_max": 2.0, "channel_wise": channel_wise}
    out = fit_intensity(spec, image).apply(image)
    expected = _monai(ScaleIntensity(minv=-1.0, maxv=2.0, channel_wise=channel_wise), image)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)
    constant = torch.full((1, 2, 3, 4), 7.0)  # MONAI multiplies a constant image by minv
    np.testing.assert_allclose(fit_intensity(spec, constant).apply(constant).numpy(),
                               _monai(ScaleIntensity(minv=-1.0, maxv=2.0), constant))


def test_a_chain_applies_its_steps_in_order_and_inverts(rng):
    from monai.transforms import Compose, NormalizeIntensity, ScaleIntensityRange

    from napari_medai.models.card import ModelCard

    image = torch.from_numpy(rng.normal(0, 300, size=(1, 4, 5, 6)).astype(np.float32))
    spec = {"kind": "chain", "steps": [
        {"kind": "ct_window", "a_min": -200, "a_max": 200, "b_min": 0, "b_max": 1, "clip": False},
        {"kind": "zscore"}]}
    ModelCard(name="chained", intensity=spec)  # a valid card
    imap = fit_intensity(spec, image)
    out = imap.apply(image)
    expected = _monai(Compose([ScaleIntensityRange(-200, 200, 0, 1), NormalizeIntensity()]), image)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(imap.invert(out.clone()).numpy(), image.numpy(), rtol=1e-4, atol=1e-2)
