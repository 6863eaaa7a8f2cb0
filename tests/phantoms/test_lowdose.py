import numpy as np
import pytest

from napari_medai.errors import InputError
from napari_medai.phantoms import low_dose_pair, simulate_low_dose
from napari_medai.phantoms.lowdose import hu_to_mu, mu_to_hu

SIZE = 96
PIXEL_MM = 0.8


def _body_slice() -> tuple[np.ndarray, np.ndarray]:
    """A soft-tissue ellipse (40 HU) with a bone disc, in air; and the region to measure
    noise in (central soft tissue away from the bone)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    body = ((yy - SIZE / 2) / 30) ** 2 + ((xx - SIZE / 2) / 40) ** 2 < 1
    hu = np.where(body, 40, -1000).astype(np.int16)
    hu[(yy - 62) ** 2 + (xx - 48) ** 2 < 36] = 700
    roi = np.zeros_like(body)
    roi[30:50, 30:66] = True
    return hu, roi


def _noise(photons, seed=0, **kw):
    hu, roi = _body_slice()
    low = simulate_low_dose(hu, photons, seed=seed, spacing=(PIXEL_MM, PIXEL_MM), **kw)
    return low.astype(float) - hu, roi


def test_hu_mu_round_trip_and_constants():
    hu = np.array([-1000.0, 0.0, 40.0, 1000.0])
    assert np.allclose(mu_to_hu(hu_to_mu(hu)), hu)
    assert hu_to_mu(-1000.0) == 0.0 and hu_to_mu(-3000.0) == 0.0  # below air clips to air
    assert 0.015 < float(hu_to_mu(0.0)) < 0.025  # water, 1/mm


def test_noise_rises_as_dose_falls():
    stds = []
    for photons in (1e6, 1e5, 1e4):
        noise, roi = _noise(photons)
        stds.append(noise[roi].std())
    assert stds[0] < stds[1] < stds[2]
    # Quantum noise: ten times fewer photons -> about sqrt(10) times more noise.
    assert 2.0 < stds[1] / stds[0] < 4.5
    assert 2.0 < stds[2] / stds[1] < 4.5


def test_noise_is_spatially_correlated_not_white():
    noise, _ = _noise(1e5)
    patch = noise[30:50, 30:66]
    patch = patch - patch.mean()

    def corr(lag, axis):
        a = patch[:, :-lag] if axis else patch[:-lag]
        b = patch[:, lag:] if axis else patch[lag:]
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    # White noise would give |corr| < 0.1 at every lag (a single spike at lag 0);
    # FBP of projection noise correlates neighbours along rows and columns.
    for axis in (0, 1):
        assert corr(1, axis) > 0.3
        assert corr(1, axis) > abs(corr(3, axis))
    white = np.random.default_rng(0).normal(size=patch.shape)
    assert abs(np.corrcoef(white[:, :-1].ravel(), white[:, 1:].ravel())[0, 1]) < 0.15


def test_noise_is_unbiased_and_deterministic():
    a, roi = _noise(1e5, seed=3)
    b, _ = _noise(1e5, seed=3)
    c, _ = _noise(1e5, seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert abs(a[roi].mean()) < 0.3 * a[roi].std()


def test_volume_is_processed_slice_by_slice_and_keeps_dtype():
    hu, _ = _body_slice()
    vol = np.stack([hu, hu])
    out = simulate_low_dose(vol, 1e5, seed=0, spacing=(2.0, PIXEL_MM, PIXEL_MM))
    assert out.shape == vol.shape and out.dtype == np.int16
    assert not np.array_equal(out[0], out[1])  # each slice draws its own noise
    out_f = simulate_low_dose(vol.astype(np.float32), 1e5, seed=0)
    assert out_f.dtype == np.float32
    assert out_f.min() >= -1024 and out_f.max() <= 3071


def test_content_outside_the_scan_circle_is_handled():
    # Soft tissue fills the whole square, corners included: the slice must be padded
    # (not cropped by the circle), so the corners get noise too.
    hu = np.full((40, 64), 40, dtype=np.int16)
    out = simulate_low_dose(hu, 1e4, seed=0)
    assert out.shape == hu.shape
    corner = out[:6, :6].astype(float) - 40
    assert corner.std() > 1.0


def test_pair_returns_input_as_full_dose():
    hu, roi = _body_slice()
    full, low = low_dose_pair(hu, 1e4, seed=1, spacing=PIXEL_MM)
    assert np.array_equal(full, hu)
    assert full.shape == low.shape and full.dtype == low.dtype
    assert (low.astype(float) - full)[roi].std() > 5


@pytest.mark.parametrize(
    "bad, photons",
    [(np.zeros(50), 1e5), (np.zeros((4, 4)), 1e5), (np.full((32, 32), np.nan), 1e5),
     (np.zeros((32, 32)), 0), (np.zeros((32, 32)), "lots")],
)
def test_bad_input_raises_input_error(bad, photons):
    with pytest.raises(InputError):
        simulate_low_dose(bad, photons)


def test_unknown_filter_raises():
    with pytest.raises(InputError, match="filter"):
        simulate_low_dose(np.zeros((32, 32)), 1e5, filter_name="sharp")
