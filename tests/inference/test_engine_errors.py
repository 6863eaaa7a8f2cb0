"""Bad input and model/input mismatches give clear errors before any work is done."""

import numpy as np
import pytest

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
    with pytest.raises(InputError, match="blending"):
        run_model(model, small_ct, settings=InferenceSettings(mode="median"))
    assert model.network.calls == 0


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
