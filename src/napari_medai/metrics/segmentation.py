"""Per-class Dice and 95th-percentile Hausdorff distance (mm) with MONAI."""

from __future__ import annotations

import numpy as np


def dice_hd95(pred: np.ndarray, ref: np.ndarray, classes: dict[int, str], spacing) -> dict[str, dict]:
    """{class name: {"dice", "hd95_mm"}} for label maps on the same grid.

    A class absent from both maps scores Dice 1 and HD95 0; absent from one only, Dice 0
    and HD95 NaN (undefined distance).
    """
    import torch
    from monai.metrics import compute_hausdorff_distance

    out = {}
    for idx, name in classes.items():
        p, r = pred == idx, ref == idx
        if not p.any() and not r.any():
            out[name] = {"dice": 1.0, "hd95_mm": 0.0}
            continue
        dice = 2.0 * np.logical_and(p, r).sum() / (p.sum() + r.sum())
        if p.any() and r.any():
            hd = compute_hausdorff_distance(
                torch.from_numpy(p[None, None]), torch.from_numpy(r[None, None]), include_background=True,
                percentile=95, spacing=[float(s) for s in spacing],
            )
            hd95 = float(hd.item())
        else:
            hd95 = float("nan")
        out[name] = {"dice": float(dice), "hd95_mm": hd95}
    return out


def components_found(pred: np.ndarray, ref: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> list[tuple[float, bool]]:
    """(volume mm³, touched by ``pred``) for each 26-connected component of the mask ``ref``.

    A voxel Dice is dominated by the large lesions; this tells whether the small ones were found."""
    from scipy import ndimage

    comps, n = ndimage.label(np.asarray(ref, bool), ndimage.generate_binary_structure(3, 3))
    if n == 0:
        return []
    voxels = np.bincount(comps.ravel(), minlength=n + 1)[1:]
    hit = np.zeros(n + 1, bool)
    hit[np.unique(comps[np.asarray(pred, bool) & (comps > 0)])] = True
    mm3 = float(np.prod(spacing))
    return [(float(v) * mm3, bool(h)) for v, h in zip(voxels, hit[1:])]
