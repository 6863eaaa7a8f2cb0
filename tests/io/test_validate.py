"""io.validate: values the models' float32 cannot hold, and affines that place no voxel."""

import numpy as np
import pytest

from napari_medai.errors import InputError
from napari_medai.io.validate import check_affine, check_volume


def _ct(dtype=np.float64):
    ct = np.full((4, 8, 8), -1000.0)
    ct[:, 2:6, 2:6] = 40.0
    return ct.astype(dtype)


@pytest.mark.parametrize("scale", [1e300, -1e300, 1e39])
def test_float64_values_beyond_float32_are_refused_before_the_cast_makes_them_inf(scale):
    big = _ct() * scale
    with np.errstate(over="ignore"):
        assert np.isfinite(big).all() and not np.isfinite(big.astype(np.float32)).all()
    with pytest.raises(InputError, match=r"beyond the range of the 32-bit floats the models compute in"):
        check_volume(big)


def test_float64_values_that_float32_cannot_tell_apart_are_refused_as_constant():
    tiny = _ct() * 1e-300 + 1e-300  # different in float64, all 0 in float32
    with pytest.raises(InputError, match="become one value in the 32-bit floats"):
        check_volume(tiny)


def test_values_float32_holds_pass_and_integers_are_not_checked():
    for data in (_ct(), _ct() * 1e30, _ct(np.float32), _ct(np.float16), _ct(np.int16), _ct(np.int64) * 2**40):
        assert check_volume(data) is not None


def test_a_nan_infinite_or_singular_affine_is_refused():
    good = np.diag([2.0, 0.7, 0.7, 1.0])
    np.testing.assert_array_equal(check_affine(good), good)
    with pytest.raises(InputError, match="NaN or infinite"):
        check_affine(np.full((4, 4), np.nan))
    bad = good.copy()
    bad[1, 3] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        check_affine(bad)
    for singular in (np.zeros((4, 4)), np.diag([2.0, 0.0, 0.7, 1.0])):
        with pytest.raises(InputError, match="singular"):
            check_affine(singular)
    with pytest.raises(InputError, match=r"4x4 matrix .* got shape \(3, 3\)"):
        check_affine(np.eye(3))
    with pytest.raises(InputError, match="4x4 matrix of numbers"):
        check_affine("eye")


def test_an_affine_whose_voxel_size_is_not_the_spacing_is_refused():
    """Centres come from the affine and sizes from the spacing: a (2.5, 0.7, 0.7) mm affine with a
    spacing of (1, 1, 1) measured a 10 mm nodule as 15 mm in a report placed by the other grid."""
    from napari_medai.postprocess.seeded import nodule_at

    turned = np.zeros((4, 4))
    turned[0, 0], turned[1, 2], turned[2, 1], turned[3, 3] = -2.5, 0.7, -0.7, 1.0  # flips and a swap: same sizes
    assert check_affine(turned, spacing=(2.5, 0.7, 0.7)) is not None
    assert check_affine(turned, spacing=(2.5, 0.703, 0.7)) is not None  # within 1 %
    with pytest.raises(InputError, match=r"voxel size \(2.5 x 0.7 x 0.7 mm\) is not the spacing given \(1 x 1 x 1 mm\)"):
        check_affine(turned, spacing=(1.0, 1.0, 1.0))
    ct = np.full((12, 24, 24), -850.0, np.float32)
    ct[4:8, 9:15, 9:15] = 40.0
    with pytest.raises(InputError, match="is not the spacing given"):
        nodule_at(ct, (1.0, 1.0, 1.0), (6, 12, 12), affine=turned)
    assert nodule_at(ct, (2.5, 0.7, 0.7), (6, 12, 12), affine=turned).center_mm[0] == pytest.approx(-2.5 * 5.5, abs=0.3)
