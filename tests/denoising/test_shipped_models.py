"""Each shipped denoiser on a small real crop (sample_data) with simulated noise: less error, same grid."""

from pathlib import Path

import numpy as np
import pytest

from napari_medai.denoising import denoise
from napari_medai.io import read_volume

pytestmark = pytest.mark.integration
SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"


def _rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


@pytest.mark.parametrize("model", [None, "ct-lowdose-denoising-fullres"])
def test_ct_model_removes_low_dose_noise_from_a_lung1_crop(model):
    from napari_medai.phantoms import simulate_low_dose

    vol = read_volume(SAMPLES / "lung1_ct.nii.gz")
    crop = vol.data[22:24, 150:278, 190:318]  # mediastinum, lung and chest wall
    noisy = simulate_low_dose(crop, 5e2, seed=1, spacing=vol.spacing)  # ~47 HU: well above lung1's own noise
    out = denoise(noisy, vol.spacing, modality="CT", model=model)  # None: the default, from the modality
    assert out.shape == crop.shape and out.dtype == noisy.dtype == np.int16
    assert _rmse(out, crop) < 0.7 * _rmse(noisy, crop)


@pytest.mark.parametrize("model", [None, "mr-denoising-fullres"])
def test_mr_model_removes_rician_noise_from_a_colin27_crop(model):
    from napari_medai.training.denoising_data import rician

    vol = read_volume(SAMPLES / "colin27_t1.nii.gz")
    centre = np.array(vol.data.shape) // 2
    crop = vol.data[centre[0] - 2 : centre[0] + 3, centre[1] - 48 : centre[1] + 48, centre[2] - 48 : centre[2] + 48]
    clean = crop.astype(np.float32)
    noisy = rician(clean, 0.05 * np.percentile(vol.data, 99), np.random.default_rng(0))
    out = denoise(noisy, vol.spacing, modality="MR", model=model)
    assert out.shape == crop.shape and out.dtype == np.float32
    assert _rmse(out, clean) < 0.7 * _rmse(noisy, clean)
