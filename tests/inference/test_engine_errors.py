"""Bad input and model/input mismatches give clear errors before any work is done."""

import numpy as np
import pytest
import torch
from torch import nn

from napari_medai.errors import InputError, ModelError
from napari_medai.inference import InferenceSettings, run_model
from tiny_nets import Counting, Pointwise, make_model


@pytest.fixture
def model():
    return make_model(Counting(Pointwise()))


def test_channel_mismatch(model, small_ct):
    two_channel = make_model(Counting(Pointwise()), in_channels=2)
    with pytest.raises(ModelError, match="expects 2 input channel.*the image has 1"):
        run_model(two_channel, small_ct)
    with pytest.raises(ModelError, match="expects 1 input channel.*the image has 3"):
        run_model(model, np.stack([small_ct] * 3))


def test_2d_image_for_a_3d_model(model, rng):
    with pytest.raises(ModelError, match="expects a 3D volume"):
        run_model(model, rng.normal(size=(32, 32)))


@pytest.mark.parametrize("bad, message", [
    (np.full((8, 8, 8), 5.0), "constant"),
    (np.where(np.eye(8)[None] > 0, np.nan, 1.0) * np.ones((8, 8, 8)), "NaN"),
    (np.zeros((0, 8, 8)), "empty"),
    (np.linspace(-1e300, 1e300, 512).reshape(8, 8, 8), "beyond the range of the 32-bit floats"),
])
def test_bad_volumes(model, bad, message):
    with pytest.raises(InputError, match=message):
        run_model(model, bad)
    assert model.network.calls == 0


def test_bad_spacing_and_settings(model, small_ct):
    with pytest.raises(InputError, match="spacing"):
        run_model(model, small_ct, spacing=(0.0, 1.0, 1.0))
    with pytest.raises(InputError, match="overlap"):
        run_model(model, small_ct, settings=InferenceSettings(overlap=1.0))
    # 0.99 made millions of windows, and counting them ran for minutes (found by an audit helper)
    with pytest.raises(InputError, match="window overlap must be from 0 to 0.9"):
        run_model(model, small_ct, settings=InferenceSettings(overlap=0.99))
    with pytest.raises(InputError, match="blending"):
        run_model(model, small_ct, settings=InferenceSettings(mode="median"))
    assert model.network.calls == 0


def test_a_network_that_fails_on_the_data_gives_a_model_error_with_its_reason(small_ct):
    import torch

    class WantsTwoChannels(torch.nn.Module):  # a bundle whose metadata says 1 channel, its network 2
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(2, 2, 1)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(ModelError, match=r"the model failed on windows of shape \(4, 1, 16, 16, 16\).*channels"):
        run_model(make_model(WantsTwoChannels()), small_ct, settings=InferenceSettings(precision="fp32"))

    class Raises(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("The following operation failed in the TorchScript interpreter.\n"
                               "Traceback...\nRuntimeError: the real reason")

    with pytest.raises(ModelError, match="the real reason"):  # the line that says why, not the first
        run_model(make_model(Raises()), small_ct)


def test_network_returning_other_channels_than_its_card(small_ct):
    wrong = make_model(Pointwise(out_channels=3), out_channels=2)
    with pytest.raises(ModelError, match="returned 3 channel"):
        run_model(wrong, small_ct, settings=InferenceSettings(precision="fp32"))


@pytest.mark.parametrize("card_fields", [
    {},  # no resampling, no intensity change: the engine works on the caller's memory
    {"spacing": (1.0, 1.0, 1.0), "intensity": {"kind": "ct_window", "a_min": -1000, "a_max": 400,
                                               "b_min": 0, "b_max": 1}},
])
def test_input_volume_is_not_modified(small_ct, card_fields):
    model = make_model(Pointwise(out_channels=1), out_channels=1, output="identity", **card_fields)
    before = small_ct.copy()
    out = run_model(model, small_ct, spacing=(2.0, 1.0, 1.0), settings=InferenceSettings(precision="fp32"))
    np.testing.assert_array_equal(small_ct, before)
    assert not np.shares_memory(out, small_ct)


# --- the image must be the modality the model was made for (inference/modality.py) ---

def _mr_like(rng):
    """Non-negative intensities, as an MR scanner writes them (or CT without its rescale)."""
    return rng.uniform(0, 800, size=(8, 16, 16)).astype(np.float32)


def test_a_ct_model_refuses_an_image_with_no_negative_value(rng):
    ct_model = make_model(Counting(Pointwise()), modality="CT")
    with pytest.raises(ModelError, match="reads CT in Hounsfield units.*no voxel of this image is below 0"):
        run_model(ct_model, _mr_like(rng))
    assert ct_model.network.calls == 0


def test_an_mr_model_refuses_ct_in_hounsfield_units(small_ct):
    mr_model = make_model(Counting(Pointwise()), modality="MR")
    assert small_ct.min() <= -900  # air
    with pytest.raises(ModelError, match="made for MR.*only CT in Hounsfield units"):
        run_model(mr_model, small_ct)
    assert mr_model.network.calls == 0


def test_each_model_runs_on_its_own_modality_and_any_runs_on_both(rng, small_ct):
    mr = _mr_like(rng)
    for modality, image in (("CT", small_ct), ("MR", mr), ("any", small_ct), ("any", mr)):
        model = make_model(Counting(Pointwise()), modality=modality)
        out = run_model(model, image, settings=InferenceSettings(precision="fp32"))
        assert out.shape == (2, *image.shape) and model.network.calls > 0, modality
    # a CT crop with soft tissue and fat only still has negative HU: not refused
    fat_and_muscle = np.where(rng.random((8, 16, 16)) > 0.5, -100.0, 40.0)
    run_model(make_model(Pointwise(), modality="CT"), fat_and_muscle)


# --- a network that returns NaN or infinity (float16/bfloat16 overflow, broken weights) ---

class _Overflowing(Counting):
    """Returns ``value`` (NaN, inf) in every voxel of two channels, as an overflowing network does."""

    def __init__(self, value):
        import torch

        super().__init__(torch.nn.Identity())
        self.value = value

    def forward(self, x):
        import torch

        super().forward(x)
        return torch.cat([x, x], 1) * self.value


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_network_that_returns_nan_or_inf_is_a_model_error_not_empty_labels(small_ct, value):
    model = make_model(_Overflowing(value), roi_size=(8, 8, 8))  # 12 windows, 3 batches of 4
    with pytest.raises(ModelError, match=r"^model 'tiny' returned NaN or infinite values \(in fp32 precision\): "
                                         "its weights may be broken"):
        run_model(model, small_ct, settings=InferenceSettings(precision="fp32", tta="off"))
    assert model.network.calls == 1  # stopped at the first batch of windows


def test_a_network_that_overflows_in_half_precision_is_told_to_run_in_fp32(small_ct):
    model = make_model(_Overflowing(float("inf")))
    with pytest.raises(ModelError, match=r"returned NaN or infinite values in bfloat16 precision.*"
                                         r"--precision fp32, or precision='fp32'"):
        run_model(model, small_ct, settings=InferenceSettings(precision="bf16"))


@pytest.mark.parametrize("cancel", [True, "stop"])
def test_run_model_refuses_a_cancel_that_is_no_token_before_running(model, small_ct, cancel):
    """screen() calls run_model directly: cancel=True failed there with an AttributeError."""
    with pytest.raises(InputError, match="cancel must be a napari_medai.inference.CancelToken"):
        run_model(model, small_ct, (1.0, 1.0, 1.0), cancel=cancel)


def test_a_network_whose_output_size_is_not_its_inputs_is_refused(rng):
    """MONAI's sliding window took another output size for a zoom, and the result was stretched
    back onto the grid, up to a voxel off: a UNet with strides 2 on odd windows returns one voxel
    more (found by an audit helper)."""
    from monai.networks.nets import UNet

    network = UNet(3, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0)
    model = make_model(network, roi_size=(9, 17, 17))
    volume = rng.normal(size=(18, 34, 34)).astype(np.float32)
    with pytest.raises(ModelError, match=r"returned windows of size \(10, 18, 18\) for windows of \(9, 17, 17\)"):
        run_model(model, volume, settings=InferenceSettings(precision="fp32"))
    even = make_model(network, roi_size=(8, 16, 16))  # a window its downsampling divides runs
    assert run_model(even, volume, settings=InferenceSettings(precision="fp32")).shape == (2, 18, 34, 34)


class _Heads(nn.Module):
    """A network with named heads, as some bundles' networks return them."""

    def forward(self, x):
        return {"pred": torch.cat([x, x], 1)}


def test_a_network_that_returns_a_dict_is_a_model_error(small_ct):
    """The dict reached `out.shape` and gave an AttributeError traceback (an audit helper's finding)."""
    model = make_model(_Heads(), roi_size=(8, 8, 8))
    with pytest.raises(ModelError, match=r"returned dict for its windows, not a tensor"):
        run_model(model, small_ct, settings=InferenceSettings(precision="fp32", tta="off"))
