"""denoise() takes its settings as segment() and detect() do: InferenceSettings or a dict of
its fields; anything else is refused before a model loads, not silently ignored."""

import numpy as np
import pytest

from napari_medai.denoising import denoise
from napari_medai.errors import InputError
from napari_medai.inference import InferenceSettings


@pytest.fixture
def mr_volume():
    vol = np.full((3, 16, 16), 10.0, np.float32)
    vol[:, 4:12, 4:12] = 100.0
    return vol


@pytest.mark.parametrize("settings, says", [
    ({"devce": "cuda"}, "unknown inference setting"),
    ({"precison": "bf16"}, "unknown inference setting"),
    ("cpu", "settings must be InferenceSettings or a dict"),
])
@pytest.mark.parametrize("strength", [1.0, 0.0])  # strength 0 returns early: it must refuse the same
def test_settings_that_are_no_settings_are_refused(tiny_card, mr_volume, settings, says, strength):
    with pytest.raises(InputError, match=says):
        denoise(mr_volume, model=tiny_card, strength=strength, settings=settings)


def test_settings_objects_and_dicts_are_taken(tiny_card, mr_volume):
    by_dict = denoise(mr_volume, model=tiny_card, settings={"device": "cpu", "precision": "fp32"})
    by_object = denoise(mr_volume, model=tiny_card, settings=InferenceSettings(device="cpu", precision="fp32"))
    np.testing.assert_array_equal(by_dict, by_object)
    with pytest.raises(InputError, match="unknown precision"):  # the values are still checked
        denoise(mr_volume, model=tiny_card, settings={"precision": "fp16"})
