"""Scanner effects applied to the ideal anatomy: slice thickness (partial volume along
z), the in-plane point-spread function, and routine-dose noise."""

from __future__ import annotations

import numpy as np
from scipy import fft, ndimage

# Thick slices are built from sub-slices at most this thick, then averaged.
MAX_SUB_SLICE_MM = 2.0
MAX_SUB_SLICES = 3
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def sub_slices(slice_mm: float) -> int:
    return int(np.clip(np.ceil(slice_mm / MAX_SUB_SLICE_MM), 1, MAX_SUB_SLICES))


def average_slabs(fine: np.ndarray, n: int) -> np.ndarray:
    """Mean of every ``n`` consecutive sub-slices: a box slice-sensitivity profile."""
    if n == 1:
        return fine.astype(np.float32, copy=False)
    z = fine.shape[0] // n
    return fine[: z * n].reshape(z, n, *fine.shape[1:]).mean(axis=1, dtype=np.float32)


def central_labels(fine: np.ndarray, n: int) -> np.ndarray:
    """Labels of the sub-slice at the centre of each thick slice."""
    return np.ascontiguousarray(fine[n // 2 :: n][: fine.shape[0] // n])


def psf_blur(hu: np.ndarray, spacing, fwhm_mm: float) -> np.ndarray:
    """In-plane Gaussian point-spread function of the given FWHM (the z profile is the
    slab average)."""
    sigma = [0.0] + [fwhm_mm * FWHM_TO_SIGMA / s for s in spacing[1:]]
    return ndimage.gaussian_filter(hu, sigma, mode="nearest")


def fbp_noise(shape, rng: np.random.Generator, std: float) -> np.ndarray:
    """Stationary noise with the texture of filtered back-projection.

    Each axial slice gets white noise shaped in 2D Fourier space like the noise of
    filtered back-projection with a ramp x Hann filter plus back-projection
    interpolation: NPS(f) ~ |f| hann(f)^4, |f| in cycles per pixel up to 0.5.  Its
    lag-1 autocorrelation (0.73) matches :func:`lowdose.simulate_low_dose` with its
    default filter (0.71) and the real lung1 scan, without projecting anything.
    """
    ny, nx = shape[-2:]
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.rfftfreq(nx)[None, :]
    rho = np.sqrt(fy**2 + fx**2)
    amplitude = np.sqrt(rho) * (0.5 + 0.5 * np.cos(2 * np.pi * np.minimum(rho, 0.5))) ** 2
    amplitude[rho > 0.5] = 0.0
    white = rng.standard_normal(shape, dtype=np.float32).reshape(-1, ny, nx)
    # scipy.fft keeps float32 (numpy.fft would compute in double precision).
    spectrum = fft.rfft2(white, axes=(-2, -1))
    spectrum *= amplitude.astype(np.float32)
    noise = fft.irfft2(spectrum, s=(ny, nx), axes=(-2, -1)).reshape(shape)
    # The spread of a few slices sets the scale (a full-volume std would cost a pass).
    noise *= std / (noise[: min(4, len(noise))].std() + 1e-12)
    return noise
