"""Per-class measurements of a label map."""

from __future__ import annotations

import numpy as np


FEW_LABELS = 24  # up to this many label values, a pass per value beats np.bincount (about 6 ms a value)
BINCOUNT_TOP = 65_536  # more values, in an integer map below this: np.bincount, slab by slab


def class_volumes(labels: np.ndarray, spacing, class_names: dict[int, str] | None = None) -> list[dict]:
    """Voxel count and volume in mL (1 mL = 1000 mm^3) of every named class above 0 and every
    other value present ("class k")."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return volume_rows(label_counts(labels), voxel_ml, class_names or {})


def label_counts(labels) -> dict[int, int]:
    """Voxels of each label value above 0 that ``labels`` holds.

    A pass per value while there are few: on a 300 x 512 x 512 uint8 map with 3 values this took
    0.02 s, where ``np.bincount`` took 0.16-0.23 s, alone on the 2-core machine: short enough for
    the segmentation widget to recount on the Qt thread after each stroke.  More values in an
    integer map of values 0-65535: ``np.bincount`` a slab at a time (its cast to int64 stays a
    slab's), about 0.2 s whatever the values, where ``np.unique`` over the labelled voxels took
    0.3 s once a reader painted one voxel of label 33 (found by an audit helper).  Other maps
    (float, negative or larger values, an instance map's ids): ``np.unique``."""
    from .components import SLAB

    import warnings

    labels = np.asarray(labels)
    top = 0
    if labels.size:
        with warnings.catch_warnings():  # an all-NaN map: nanmax warns and gives NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            # NaN (a float map's "no value") is no label: nanmax skips it, and NaN == k is False below
            peak = np.nanmax(labels) if labels.dtype.kind == "f" else labels.max()
        top = 0 if np.isnan(peak) else int(peak)
    if top > FEW_LABELS and labels.dtype.kind in "ui" and top < BINCOUNT_TOP and (
            labels.dtype.kind == "u" or labels.min() >= 0):
        total = np.zeros(top + 1, dtype=np.int64)
        for z in range(0, len(labels), SLAB):
            total += np.bincount(labels[z:z + SLAB].ravel().astype(np.intp, copy=False), minlength=top + 1)
        return {k: int(n) for k, n in enumerate(total) if k and n}
    if top > FEW_LABELS:
        values, voxels = np.unique(labels[labels > 0], return_counts=True)
        return dict(zip(values.tolist(), voxels.tolist()))
    counts = dict.fromkeys(range(1, top + 1), 0)
    for z in range(0, len(labels), SLAB):  # slab by slab: the comparisons stay small
        slab = labels[z:z + SLAB]
        for k in counts:
            counts[k] += int(np.count_nonzero(slab == k))
    return {k: n for k, n in counts.items() if n}


def volume_rows(counts: dict[int, int], voxel_ml: float, names: dict[int, str | dict]) -> list[dict]:
    """``{"index", "name", "voxels", "volume_ml"}`` rows, in index order, of every class in
    ``names`` above 0 (``{index: name}``, or a class table ``{index: {"name": ...}}``) and every
    other value in ``counts`` (named "class k")."""
    names = {i: (n["name"] if isinstance(n, dict) else n) for i, n in names.items()}
    rows = []
    for i in sorted(set(counts) | {i for i in names if i > 0}):
        voxels = int(counts.get(i, 0))
        rows.append({"index": int(i), "name": names.get(i, f"class {i}"), "voxels": voxels,
                     "volume_ml": voxels * voxel_ml})
    return rows
