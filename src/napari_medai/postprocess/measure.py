"""Per-class measurements of a label map."""

from __future__ import annotations

import numpy as np


def class_volumes(labels: np.ndarray, spacing, class_names: dict[int, str] | None = None) -> list[dict]:
    """Voxel count and volume in mL (1 mL = 1000 mm^3) for every non-background class."""
    from .components import label_sizes

    counts = label_sizes(np.asarray(labels))  # not an int64 copy of the whole map
    voxel_ml = float(np.prod(spacing)) / 1000.0
    names = class_names or {}
    indices = sorted(set(range(1, len(counts))) | {i for i in names if i > 0})
    rows = []
    for i in indices:
        n = int(counts[i]) if i < len(counts) else 0
        rows.append({"index": i, "name": names.get(i, f"class {i}"), "voxels": n, "volume_ml": n * voxel_ml})
    return rows
