"""Lesion candidates and their patches, for a second-stage classifier.

LUNA16-style detectors work in two stages: a high-recall first stage proposes candidates
(here: connected components of a lesion-probability map), and a small 3D classifier looks at
a fixed-size patch around each one and keeps the lesions (false-positive reduction).  The
first stage may propose a thousand vessel segments per scan to find a 4 mm nodule; the patch
shows the classifier whether the blob continues as a tube above and below it.

Everything here is numpy in, numpy out; the classifier itself runs in ``classify_patches``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

_FULL = ndimage.generate_binary_structure(3, 3)


@dataclass
class Candidates:
    labels: np.ndarray  # int32 component map on the input grid (0: none), component i has label i + 1
    centres: np.ndarray  # (n, 3) voxel centres of mass (z, y, x)
    volumes_mm3: np.ndarray  # (n,)
    peaks: np.ndarray  # (n,) peak probability

    def __len__(self) -> int:
        return len(self.centres)


def find_candidates(prob: np.ndarray, spacing, threshold: float = 0.5) -> Candidates:
    """Connected components (26-connectivity) of ``prob > threshold``."""
    labels, n = ndimage.label(prob > threshold, _FULL)
    index = np.arange(1, n + 1)
    if n == 0:
        empty = np.zeros(0, np.float32)
        return Candidates(labels.astype(np.int32), np.zeros((0, 3)), empty, empty)
    voxels = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    centres = np.array(ndimage.center_of_mass(np.ones(prob.shape, np.uint8), labels, index)).reshape(-1, 3)
    peaks = np.asarray(ndimage.maximum(prob, labels, index), np.float32)
    return Candidates(labels.astype(np.int32), centres, voxels * float(np.prod(spacing)), peaks)


def patch_offsets(shape, step_mm, spacing) -> np.ndarray:
    """(3, prod(shape)) voxel offsets of a patch grid centred on a point: ``shape`` samples
    ``step_mm`` apart, whatever the scan's own ``spacing``, so the classifier always sees the
    same physical extent."""
    axes = [(np.arange(s) - s / 2 + 0.5) * (st / sp) for s, st, sp in zip(shape, step_mm, spacing)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), 0).reshape(3, -1)


def extract_patches(channels, centres, spacing, shape=(16, 32, 32), step_mm=(2.0, 1.0, 1.0)) -> np.ndarray:
    """Patches of every array in ``channels`` around each centre: float32 (n, C, *shape).

    Linear interpolation; outside the volume the nearest edge value is repeated (a candidate
    near the edge of the scan still gets a full patch)."""
    offsets = patch_offsets(shape, step_mm, spacing)
    centres = np.asarray(centres, float).reshape(-1, 3)
    out = np.zeros((len(centres), len(channels), *shape), np.float32)
    for k, c in enumerate(centres):
        coords = c[:, None] + offsets
        for ch, arr in enumerate(channels):
            out[k, ch] = ndimage.map_coordinates(arr, coords, order=1, mode="nearest").reshape(shape)
    return out


def classify_patches(network, patches: np.ndarray, device="cpu", precision="fp32", batch_size: int = 256,
                     cancel=None) -> np.ndarray:
    """Sigmoid scores of a one-logit classifier for each patch (float32, shape (n,))."""
    import torch

    from .precision import autocast

    scores = np.zeros(len(patches), np.float32)
    network = network.to(device).eval()
    with torch.no_grad():
        for start in range(0, len(patches), batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            x = torch.from_numpy(np.ascontiguousarray(patches[start:start + batch_size])).to(device)
            with autocast(device, precision):
                logits = network(x)
            scores[start:start + len(x)] = torch.sigmoid(logits.float().reshape(len(x), -1)[:, 0]).cpu().numpy()
    return scores
