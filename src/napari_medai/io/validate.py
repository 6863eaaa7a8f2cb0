"""Checks run before any model touches a volume: each failure is a clear InputError."""

from __future__ import annotations

import numpy as np

from ..errors import InputError

# Voxel sizes outside this range (mm) are not a medical image or carry broken metadata.
MIN_SPACING_MM = 0.01
MAX_SPACING_MM = 50.0


def check_spacing(spacing, ndim: int = 3, what: str = "check the layer's scale") -> tuple[float, ...]:
    """``spacing`` as floats, or an InputError; ``what`` says where a wrong spacing came from."""
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError(f"spacing must be {ndim} numbers in mm, got {spacing!r}") from None
    if len(sp) != ndim:
        raise InputError(f"spacing must have {ndim} values (z, y, x) in mm, got {len(sp)}: {sp}")
    for s in sp:
        if not np.isfinite(s) or s <= 0:
            raise InputError(f"voxel spacing must be positive and finite, got {sp} mm")
        if s < MIN_SPACING_MM or s > MAX_SPACING_MM:
            shown = ", ".join(f"{v:.4g}" for v in sp)
            raise InputError(
                f"voxel spacing ({shown}) mm is outside {MIN_SPACING_MM}-{MAX_SPACING_MM} mm: "
                f"the image geometry looks wrong ({what})"
            )
    return sp


def without_singleton_axis(data):
    """A (1, z, y, x) or (z, y, x, 1) array as (z, y, x); anything else as it is.  One rule for
    the engine's check and the API's clean-up, which must work on the same grid."""
    arr = np.asarray(data)
    if arr.ndim == 4 and 1 in (arr.shape[0], arr.shape[-1]):
        return arr.squeeze(0 if arr.shape[0] == 1 else -1)
    return data


def check_volume(data, spacing=None, *, need_3d: bool = True, what: str = "image") -> np.ndarray:
    """Return ``data`` as an ndarray after checking it is a usable 3D image.

    Raises InputError for: not an array, 2D where 3D is needed, empty, NaN/inf,
    constant intensity, non-numeric dtype, and bad spacing.
    """
    if data is None:
        raise InputError(f"no {what} given")
    arr = np.asarray(data)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"the {what} must hold numbers, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise InputError(f"the {what} is complex-valued; take its magnitude first")
    arr = without_singleton_axis(arr)
    if need_3d and arr.ndim != 3:
        raise InputError(
            f"this needs a 3D volume (z, y, x); the {what} has {arr.ndim} dimension(s) {arr.shape}"
        )
    if arr.size == 0 or 0 in arr.shape:
        raise InputError(f"the {what} is empty (shape {arr.shape})")
    if min(arr.shape) < 2:
        raise InputError(f"the {what} is too small to process (shape {arr.shape})")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        n = int((~np.isfinite(arr)).sum())
        raise InputError(f"the {what} contains {n} NaN or infinite value(s); fix or mask them first")
    lo, hi = arr.min(), arr.max()
    if lo == hi:
        raise InputError(f"the {what} is constant (every voxel is {lo}); there is nothing to analyse")
    if np.issubdtype(arr.dtype, np.floating) and arr.dtype.itemsize > 4:
        check_float32_range(lo, hi, what)
    if spacing is not None:
        check_spacing(spacing, ndim=arr.ndim)
    return arr


def check_float32_range(lo, hi, what: str = "image") -> None:
    """The models compute in float32: a float64 image with values beyond its range (about ±3.4e38)
    became ±inf and then NaN there, and one whose values differ only past float32's precision
    (1e-300 and 2e-300) became constant.  Only the minimum and maximum are needed: integer images
    (up to 64 bits) always fit."""
    top = float(np.finfo(np.float32).max)
    if max(-float(lo), float(hi)) > top:
        raise InputError(f"the {what}'s values run from {float(lo):g} to {float(hi):g}, beyond the range of the "
                         f"32-bit floats the models compute in (±{top:.3g}); no scanner writes such values, "
                         "so check how the image was scaled")
    if np.float32(lo) == np.float32(hi):
        raise InputError(f"the {what}'s values run from {float(lo)!r} to {float(hi)!r}, which become one value in the "
                         "32-bit floats the models compute in; there is nothing to analyse, so check how the "
                         "image was scaled")


def check_affine(affine, what: str = "affine", spacing=None) -> np.ndarray:
    """``affine`` (voxel (z, y, x) to world mm) as a 4x4 float array, or an InputError: a NaN or
    singular (all-zero) matrix gave NaN or zero finding centres, and a crash in the screening's
    lung zones ("cannot convert float NaN to integer").  With ``spacing`` (the (z, y, x) mm the
    sizes are measured with), the affine's own voxel size must agree with it to 1 %: centres, sides
    and zones come from the affine, sizes and volumes from the spacing, and a pair that disagreed
    gave a report of two voxel sizes (a 10 mm nodule measured 15 mm)."""
    try:
        arr = np.asarray(affine, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a 4x4 matrix of numbers (voxel (z, y, x) to world mm), "
                         f"got {type(affine).__name__}") from None
    if arr.shape != (4, 4):
        raise InputError(f"{what} must be a 4x4 matrix (voxel (z, y, x) to world mm), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"the {what} holds NaN or infinite values, so no voxel has a position in mm; "
                         "check the image's geometry (its header, or the layer's affine)")
    if np.linalg.matrix_rank(arr[:3, :3]) < 3:
        raise InputError(f"the {what} is singular (its 3x3 part maps the volume onto a plane, a line or a point), "
                         "so voxels have no distinct positions in mm; check the image's geometry (its header, "
                         "or the layer's affine)")
    if spacing is not None:
        from .volume import voxel_spacing

        own = np.asarray(voxel_spacing(arr[:3, :3]))
        given = np.asarray(spacing, dtype=float)
        if given.shape == own.shape and not np.allclose(own, given, rtol=0.01, atol=1e-6):
            mm = lambda v: " x ".join(f"{x:g}" for x in np.round(v, 4))  # noqa: E731
            raise InputError(f"the {what}'s voxel size ({mm(own)} mm) is not the spacing given ({mm(given)} mm): "
                             "positions would come from one and sizes from the other; pass the image's own pair "
                             "(read_volume's .spacing and .affine)")
    return arr
