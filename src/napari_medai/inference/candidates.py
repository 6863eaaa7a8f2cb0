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
    """Candidate points in the components of a lesion map.

    Each candidate is the centre of a ball inside its component (the thickest point, or one
    of several); its region is the part of the component within twice that ball's radius
    (plus a voxel), so that a nodule a high-recall map joined to its vessels is one region and
    the vessels are others.  Candidates of a first, precise pass have their whole component."""

    labels: np.ndarray  # int32 component map on the input grid (0: none)
    component: np.ndarray  # (n,) label of each candidate's component
    boxes: list  # (n,) bounding box (slices) of each candidate's component
    centres: np.ndarray  # (n, 3) voxel centres (z, y, x)
    radii_mm: np.ndarray  # (n,) distance from the centre to the component's edge
    reach_mm: np.ndarray  # (n,) the region's radius (inf: the whole component, a first-pass lesion)
    spacing: tuple = (1.0, 1.0, 1.0)

    def __len__(self) -> int:
        return len(self.centres)

    def region(self, i: int) -> np.ndarray:
        """Bool mask of candidate ``i``'s region inside ``self.boxes[i]``."""
        box = self.boxes[i]
        mask = self.labels[box] == self.component[i]
        if np.isfinite(self.reach_mm[i]):
            grid = np.ogrid[tuple(slice(b.start, b.stop) for b in box)]
            dist2 = sum(((g - c) * float(s)) ** 2 for g, c, s in zip(grid, self.centres[i], self.spacing))
            mask &= dist2 <= float(self.reach_mm[i]) ** 2
        return mask

    def paint(self, which: np.ndarray) -> np.ndarray:
        """Bool mask (input grid) of the union of the regions of the candidates where ``which`` is true."""
        out = np.zeros(self.labels.shape, bool)
        for i in np.flatnonzero(which):
            out[self.boxes[i]] |= self.region(int(i))
        return out

    def volumes_mm3(self) -> np.ndarray:
        return np.array([self.region(i).sum() for i in range(len(self))], float) * float(np.prod(self.spacing))

    def peaks(self, prob: np.ndarray, which: np.ndarray | None = None) -> np.ndarray:
        """Peak of ``prob`` in the region of each candidate (or of those where ``which`` is true)."""
        index = range(len(self)) if which is None else np.flatnonzero(which)
        return np.array([prob[self.boxes[i]][self.region(int(i))].max() for i in index], np.float32)


def find_candidates(prob: np.ndarray, spacing, threshold: float = 0.5, first: np.ndarray | None = None,
                    separation_mm: float | None = None) -> Candidates:
    """Candidates in the connected components (26-connectivity) of ``prob > threshold``.

    One candidate per component at its thickest point, or, with ``separation_mm``, one at
    every local maximum of the distance to the component's edge, at least that far apart
    (a 4 mm nodule on a vessel tree is a local maximum of its own).
    ``first`` (bool mask, optional): lesions a first, precise pass already outlined.  Its
    components come first, each one candidate with its whole component, and take precedence:
    a component of ``prob`` that touches one is left out."""
    labels, n = ndimage.label(prob > threshold, _FULL)
    m = 0
    if first is not None and first.any():
        first_labels, m = ndimage.label(first, _FULL)
        touches = np.asarray(ndimage.maximum(first, labels, np.arange(1, n + 1)), bool).reshape(n)
        remap = np.zeros(n + 1, np.int64)
        remap[1:][~touches] = m + np.arange(1, int((~touches).sum()) + 1)
        extra = remap[labels]
        labels = np.where(extra > 0, extra, first_labels)
        n = m + int((~touches).sum())
    labels = labels.astype(np.int32)
    sp = np.asarray(spacing, dtype=float)
    comp, centres, radii, reach = [], [], [], []
    objects = ndimage.find_objects(labels)
    for i, box in enumerate(objects):
        if box is None:
            continue
        region = np.pad(labels[box] == i + 1, 1)  # padded: the box edge is the component's edge too
        dist = ndimage.distance_transform_edt(region, sampling=sp)
        offset = np.array([b.start for b in box]) - 1
        if i < m or separation_mm is None:
            deepest_mm = dist.max()
            # the mean of the deepest voxels: a plateau (a tube's axis, a flat blob) gives its middle;
            # where that mean is no deepest voxel itself (a ring's hole, the strand between two equal
            # blobs: the candidate's region then missed both), the deepest voxel nearest it
            deepest = np.argwhere(dist >= deepest_mm - 1e-9)
            mean = deepest.mean(0)
            if dist[tuple(np.round(mean).astype(int))] < deepest_mm - 1e-9:
                mean = deepest[np.argmin(((deepest - mean) ** 2).sum(1))].astype(float)
            points = [mean]
            depths = [deepest_mm]
        else:
            points, depths = _separated_maxima(dist, sp, separation_mm)
        for point, depth in zip(points, depths):
            comp.append(i + 1)
            centres.append(point + offset)
            radii.append(depth)
            reach.append(np.inf if i < m else 2.0 * depth + sp.max())
    return Candidates(labels, np.array(comp, np.int64), [objects[c - 1] for c in comp],
                      np.array(centres, float).reshape(-1, 3), np.array(radii, np.float32), np.array(reach, float),
                      tuple(float(s) for s in sp))


def _separated_maxima(dist: np.ndarray, spacing: np.ndarray, separation_mm: float):
    """Local maxima of ``dist`` (> 0), greedily kept deepest first, at least ``separation_mm`` apart."""
    from scipy.spatial import cKDTree

    half = np.maximum(np.round(0.5 * separation_mm / spacing), 1).astype(int)
    peaks = (dist > 0) & (dist == ndimage.maximum_filter(dist, size=tuple(2 * half + 1)))
    coords = np.argwhere(peaks)
    depth = dist[peaks]
    order = np.argsort(-depth, kind="stable")
    coords, depth = coords[order], depth[order]
    mm = coords * spacing
    tree = cKDTree(mm)
    taken = np.zeros(len(coords), bool)
    suppressed = np.zeros(len(coords), bool)
    for j in range(len(coords)):
        if suppressed[j]:
            continue
        taken[j] = True
        suppressed[tree.query_ball_point(mm[j], separation_mm)] = True
    return list(coords[taken].astype(float)), list(depth[taken])


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
