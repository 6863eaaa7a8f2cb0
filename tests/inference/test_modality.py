"""check_modality: a CT model refuses values that cannot be Hounsfield units."""

from types import SimpleNamespace

import numpy as np
import pytest

from napari_medai.errors import ModelError
from napari_medai.inference.modality import check_modality

CT_MODEL = SimpleNamespace(name="a-ct-model", modality="CT")


def _chest_slice(rng):
    hu = np.full((32, 32), -1000.0, np.float32)
    hu[4:28, 4:28] = 40.0
    hu[10:20, 6:14] = -850.0  # a lung
    return hu + rng.normal(0.0, 20.0, hu.shape).astype(np.float32)


def test_a_ct_model_refuses_a_ct_scaled_for_deep_learning_or_a_z_scored_mr():
    rng = np.random.default_rng(0)
    hu = _chest_slice(rng)
    check_modality(CT_MODEL, hu)  # HU: accepted
    check_modality(CT_MODEL, hu[6:26, 16:26])  # even a crop inside soft tissue spans > 50 HU of noise
    z_scored_mr = rng.normal(0.0, 1.0, (32, 32)).astype(np.float32)
    for values in (hu / 1000.0, z_scored_mr):  # negatives, but a range of a few units
        with pytest.raises(ModelError, match="does not look like Hounsfield units"):
            check_modality(CT_MODEL, values)


def test_models_of_another_modality_are_not_held_to_hounsfield_units():
    narrow = np.random.default_rng(0).normal(0.0, 1.0, (16, 16))
    check_modality(SimpleNamespace(name="mr", modality="MR"), narrow)
    check_modality(SimpleNamespace(name="any", modality="any"), narrow)
