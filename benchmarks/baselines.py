"""Classical baselines the benchmarks compare the models against (scikit-image / scipy)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    out = np.zeros_like(mask)
    for z in range(mask.shape[0]):
        out[z] = ndimage.binary_fill_holes(mask[z])
    return out


def classical_lung_mask(hu: np.ndarray, threshold: float = -400) -> np.ndarray:
    """HU threshold + connected components + hole filling.

    Air below ``threshold`` that touches the in-plane border (outside the body, table gaps)
    is removed, the two largest remaining components are the lungs, and holes (vessels,
    nodules) are filled slice by slice.
    """
    air = hu < threshold
    lab, n = ndimage.label(air)
    if n == 0:
        return np.zeros_like(air)
    border = np.unique(np.concatenate([lab[:, 0, :].ravel(), lab[:, -1, :].ravel(), lab[:, :, 0].ravel(), lab[:, :, -1].ravel()]))
    inside = air & ~np.isin(lab, border[border > 0])
    lab, n = ndimage.label(inside)
    if n == 0:
        return inside
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.argsort(sizes)[::-1][:2] + 1
    keep = [k for k in keep if sizes[k - 1] > 0.05 * sizes.max()]
    return _fill_holes_per_slice(np.isin(lab, keep))


def classical_nodule_mask(hu: np.ndarray, lung: np.ndarray, spacing, threshold: float = -500,
                          min_mm3: float = 15.0) -> np.ndarray:
    """Dense voxels (> ``threshold`` HU) inside the (eroded) lung mask, minus specks."""
    core = ndimage.binary_erosion(lung, iterations=1)
    dense = (hu > threshold) & core
    lab, n = ndimage.label(dense)
    if n == 0:
        return dense
    sizes = np.bincount(lab.ravel()) * float(np.prod(spacing))
    keep = sizes >= min_mm3
    keep[0] = False
    return keep[lab]


def classical_segmentation(hu: np.ndarray, spacing) -> np.ndarray:
    lung = classical_lung_mask(hu)
    nod = classical_nodule_mask(hu, lung, spacing)
    out = lung.astype(np.uint8)
    out[nod] = 2
    return out


def blob_log_candidates(hu: np.ndarray, lung: np.ndarray, spacing, min_d_mm=3.0, max_d_mm=30.0, threshold=0.05):
    """scikit-image ``blob_log`` on the lung-windowed CT inside the lung mask.

    Returns (scores, centres_voxel (n, 3), diameters_mm).  Works on an isotropic resampling
    (blob_log assumes isotropic voxels); the score is the LoG response at the blob.
    """
    from skimage.feature import blob_log

    iso = float(min(spacing)) * 2.0  # coarser isotropic grid: blob_log is slow in 3D
    zoom = [s / iso for s in spacing]
    img = np.clip((hu + 1000.0) / 1400.0, 0, 1).astype(np.float32)
    img = np.where(ndimage.binary_dilation(lung, iterations=2), img, 0.0)
    small = ndimage.zoom(img, zoom, order=1)
    min_s = max((min_d_mm / iso) / (2 * np.sqrt(3)), 0.5)
    max_s = max((max_d_mm / iso) / (2 * np.sqrt(3)), min_s)
    sigmas = np.linspace(min_s, max_s, 6)
    blobs = blob_log(small, min_sigma=min_s, max_sigma=max_s, num_sigma=len(sigmas), threshold=threshold,
                     overlap=0.5)
    if len(blobs) == 0:
        return np.zeros(0), np.zeros((0, 3)), np.zeros(0)
    # Score = the scale-normalised LoG response at the blob (what blob_log thresholds), read from
    # one full-volume filter per scale rather than one filter per blob.
    idx = np.rint(blobs[:, :3]).astype(int)
    scores = np.zeros(len(blobs))
    for s in np.unique(blobs[:, 3]):
        sel = blobs[:, 3] == s
        response = -ndimage.gaussian_laplace(small, s) * s**2
        scores[sel] = response[tuple(idx[sel].T)]
    # ndimage.zoom (grid_mode False) puts output voxel o at input (n_in - 1) / (n_out - 1) * o,
    # not o / zoom: on 5 mm slices the latter moved a centre 0.4 slice at z = 40 (fixed 11-27;
    # the blob_log figures in docs/detection.md came before the fix and were not re-run)
    step = (np.asarray(img.shape) - 1) / np.maximum(np.asarray(small.shape) - 1, 1)
    centres = blobs[:, :3] * step
    diam = blobs[:, 3] * 2 * np.sqrt(3) * iso
    inside = lung[tuple(np.clip(np.rint(centres).astype(int), 0, np.array(lung.shape) - 1).T)]
    return scores[inside], centres[inside], diam[inside]
