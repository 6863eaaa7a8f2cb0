"""Voxel types: keep integer data integer, in the smallest type that holds it.

A CT stored as uint16 with a rescale of 1 and -1024 is int16 Hounsfield units, not float64:
four times less memory, and files written back stay as small as the input.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

# tried in order; NIfTI readers everywhere handle these
IMAGE_INTEGERS = (np.int16, np.int32)
LABEL_INTEGERS = (np.uint8, np.uint16, np.int32)


def narrowest(values: np.ndarray, candidates=IMAGE_INTEGERS) -> np.ndarray | None:
    """``values`` (integers) in the first of ``candidates`` that holds them all, else None."""
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    for dtype in candidates:
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return values.astype(dtype, copy=False)
    return None


def rounded_whole(values: np.ndarray, tol: float = 1e-3) -> np.ndarray | None:
    """Float ``values`` rounded to whole numbers, or None when one is not finite or lies further
    than ``tol`` from a whole number: a float label map (0.9999999 is label 1) or not one."""
    rounded = np.rint(values)
    if not np.isfinite(values).all() or np.abs(values - rounded).max(initial=0.0) > tol:
        return None
    return rounded


# rescaled values beyond this are no image (CT runs to about 3e4 HU, MR to 1e6 or so); also
# within float32, the type a fractional rescale gives
RESCALE_LIMIT = 1e30


def rescaled(raw: np.ndarray, slope, intercept) -> np.ndarray:
    """``raw * slope + intercept`` with per-slice (or scalar) slope and intercept: integer when
    ``raw`` is integer and both are whole numbers (int16 or int32 where the values fit),
    float32 otherwise.  ``slope`` and ``intercept`` broadcast against ``raw``."""
    slope, intercept = np.asarray(slope, dtype=float), np.asarray(intercept, dtype=float)
    if np.all(slope == 1) and np.all(intercept == 0):
        return raw
    # the largest value the rescale can give, in float64 first: int64 arithmetic wrapped round
    # silently (a slope of 1e20 gave values near -9.2e18) and float32 overflowed to inf
    finite = raw if np.issubdtype(raw.dtype, np.integer) else raw[np.isfinite(raw)]  # NaN voxels stay NaN
    if finite.size:
        peak = float(np.max(np.abs(slope))) * max(abs(float(finite.min())), abs(float(finite.max()))) \
            + float(np.max(np.abs(intercept)))
        if not np.isfinite(peak) or peak > RESCALE_LIMIT:
            raise InputError(f"the header's rescale (slope {float(np.max(np.abs(slope))):g}, intercept "
                             f"{float(np.max(np.abs(intercept))):g}) gives values beyond {RESCALE_LIMIT:g}: "
                             "a damaged header (scl_slope/scl_inter or RescaleSlope/RescaleIntercept)")
    whole = np.all(np.mod(slope, 1) == 0) and np.all(np.mod(intercept, 1) == 0)
    if np.issubdtype(raw.dtype, np.integer) and whole and (not finite.size or peak < 2**62):
        values = raw.astype(np.int64) * slope.astype(np.int64) + intercept.astype(np.int64)
        narrow = narrowest(values)
        return values if narrow is None else narrow
    return (raw * slope + intercept).astype(np.float32)


def storable(data, is_labels: bool) -> np.ndarray:
    """``data`` in a dtype NIfTI readers handle, converting only when needed: booleans to uint8,
    float16 to float32, 64-bit integers to the smallest type that holds them (napari hands out
    int64 arrays; few tools read 64-bit integer NIfTI).  Raises InputError for what NIfTI
    cannot hold."""
    arr = np.asarray(data)
    if np.iscomplexobj(arr):
        raise InputError("a complex-valued volume cannot be saved as NIfTI here; take its magnitude first")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    if arr.dtype.itemsize == 8 and np.issubdtype(arr.dtype, np.integer):
        narrow = narrowest(arr, LABEL_INTEGERS if is_labels else IMAGE_INTEGERS)
        if narrow is None:
            raise InputError(f"the {'label' if is_labels else 'image'} values ({arr.min()} to {arr.max()}) "
                             "do not fit a 32-bit integer, which NIfTI readers need")
        return narrow
    return arr
