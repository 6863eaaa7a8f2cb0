"""Guesses made when a file does not say what it holds.

NIfTI has no modality field, so unless the header description or a BIDS-style JSON
sidecar names it, the plugin guesses from the intensities:

* CT: the darkest voxel is at or below -900 (air in Hounsfield units); no MR scanner
  produces such negative values.
* label map: whole-number voxels (integer, or float as MONAI's SaveImage writes masks), none
  negative, at most 64 distinct values (and not CT).  A NIfTI header whose intent is
  NIFTI_INTENT_LABEL says so without a guess (nifti.py), whatever the number of labels.
* MR: any other image whose values are all >= 0.  This is a guess: a PET or
  non-medical image is also called MR; the layer's metadata can be corrected by hand.
* unknown: everything else (e.g. float images with negative values).

NaN voxels (the background of many statistical, ADC and PET maps) are left out of the guess.
"""

from __future__ import annotations

import numpy as np

CT_AIR_HU = -900
MAX_LABEL_VALUES = 64


def count_distinct(data: np.ndarray, limit: int) -> int:
    """Number of distinct values, or ``limit + 1`` once it is certain there are more."""
    arr = np.asarray(data).ravel()
    if np.issubdtype(arr.dtype, np.integer) and arr.size and arr.min() >= 0 and arr.max() < 2**16:
        # bincount is ~20x faster than np.unique on a CT-sized integer array
        return int(np.count_nonzero(np.bincount(arr)))
    return min(len(np.unique(arr)), limit + 1)


def looks_like_labels(data: np.ndarray) -> bool:
    arr = np.asarray(data)
    if arr.size == 0 or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        return False
    if np.issubdtype(arr.dtype, np.floating):
        # a float image has many values: a strided sample tells most of them apart without
        # sorting the whole volume; a float label map is whole numbers only
        sample = arr.ravel()[:: max(1, arr.size // 1_000_000)]
        if count_distinct(sample, MAX_LABEL_VALUES) > MAX_LABEL_VALUES:
            return False
        if not np.isfinite(arr).all() or np.any(np.mod(arr, 1) != 0):
            return False
        if arr.min() < 0 or arr.max() >= 2**16:
            return False
        arr = arr.astype(np.uint16)  # whole numbers: counted like an integer map
    if arr.min() < 0:
        return False
    return count_distinct(arr, MAX_LABEL_VALUES) <= MAX_LABEL_VALUES


def guess_modality(data: np.ndarray) -> str:
    arr = np.asarray(data)
    if arr.size == 0 or np.iscomplexobj(arr):
        return "unknown"
    finite = np.isfinite(arr) if np.issubdtype(arr.dtype, np.floating) else None
    if finite is not None and not finite.all():
        if not finite.any():
            return "unknown"
        arr = arr[finite]  # NaN background: guess from the voxels that hold values
    lo = arr.min()
    if lo <= CT_AIR_HU:
        return "CT"
    if lo >= 0 and not looks_like_labels(arr):
        return "MR"
    return "unknown"


def normalise_modality(name) -> str:
    """Map a DICOM-style modality string to the plugin's 'CT' / 'MR' / 'unknown'."""
    text = str(name or "").strip().upper()
    if text in ("CT", "MR"):
        return text
    if text in ("MRI", "T1", "T2", "FLAIR"):
        return "MR"
    return "unknown"
