"""Rasterising tubes (vessels, airways, ribs, aorta) into a voxel grid.

A tube is a chain of points with a radius each; it is drawn as the union of balls
centred on points sampled densely along the chain.  Balls of similar radius are drawn
together, all points x all offsets of the ball's bounding box in one numpy operation,
so thousands of vessel segments cost a few tenths of a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Largest (points x box offsets) array built at once, to bound memory.
_MAX_BATCH = 3_000_000


@dataclass(frozen=True)
class Frame:
    """Where a (z, y, x) voxel grid sits in phantom millimetres.

    Phantom coordinates are (zeta, y, x) in mm: zeta superior-positive with 0 at the top
    of the right diaphragm dome, y posterior-positive, x towards the patient's left,
    with y = x = 0 on the grid's central axis.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]  # phantom mm of voxel (0, 0, 0)

    def axis_mm(self, axis: int) -> np.ndarray:
        return self.origin[axis] + np.arange(self.shape[axis]) * self.spacing[axis]

    def coords(self):
        """Broadcastable (zeta, y, x) coordinate arrays, float32."""
        z = self.axis_mm(0).astype(np.float32)[:, None, None]
        y = self.axis_mm(1).astype(np.float32)[None, :, None]
        x = self.axis_mm(2).astype(np.float32)[None, None, :]
        return z, y, x

    def to_index(self, points_mm) -> np.ndarray:
        return (np.asarray(points_mm, float) - np.asarray(self.origin)) / np.asarray(self.spacing)

    def to_mm(self, index) -> np.ndarray:
        return np.asarray(index, float) * np.asarray(self.spacing) + np.asarray(self.origin)


def sample_tube(path_mm: np.ndarray, radii_mm: np.ndarray, min_step: float) -> tuple[np.ndarray, np.ndarray]:
    """Points every ~half radius (at least ``min_step``) along a polyline, with the
    radius interpolated linearly between its vertices."""
    path_mm = np.asarray(path_mm, float)
    radii_mm = np.broadcast_to(np.asarray(radii_mm, float), (len(path_mm),))
    return sample_segments(path_mm[:-1], path_mm[1:], radii_mm[:-1], radii_mm[1:], min_step)


def sample_segments(starts, ends, r_start, r_end, min_step: float):
    """Vectorised :func:`sample_tube` for many independent segments."""
    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    r_start, r_end = np.asarray(r_start, float), np.asarray(r_end, float)
    length = np.linalg.norm(ends - starts, axis=1)
    step = np.maximum(0.5 * np.minimum(r_start, r_end), min_step)  # overlap keeps tubes smooth
    n = np.maximum(np.ceil(length / step).astype(int), 1) + 1
    seg = np.repeat(np.arange(len(starts)), n)
    # Position of each sample within its segment, 0..1.
    first = np.cumsum(n) - n
    t = (np.arange(n.sum()) - np.repeat(first, n)) / np.repeat(n - 1, n)
    pts = starts[seg] + t[:, None] * (ends - starts)[seg]
    rad = r_start[seg] + t * (r_end - r_start)[seg]
    return pts, rad


def ball_voxels(frame: Frame, centers_mm, radii_mm, min_radius_vox: float = 0.5) -> np.ndarray:
    """Flat indices (possibly repeated) of voxels whose centre lies inside any ball.

    Radii below ``min_radius_vox`` voxels are raised to it so that thin vessels keep a
    trace of one voxel; partial volume and the scanner blur later dim them.
    """
    centers = frame.to_index(centers_mm).reshape(-1, 3)
    radii = np.asarray(radii_mm, float).ravel()
    if centers.size == 0:
        return np.zeros(0, dtype=np.int64)
    sp = np.asarray(frame.spacing, float)
    shape = np.asarray(frame.shape)
    radii = np.maximum(radii, min_radius_vox * sp.min())
    # Drop balls entirely outside the grid.
    reach = radii[:, None] / sp
    inside = np.all((centers + reach >= 0) & (centers - reach <= shape - 1), axis=1)
    centers, radii = centers[inside], radii[inside]
    # Group radii into bins of a quarter of the smallest voxel size.
    quantum = 0.25 * sp.min()
    bins = np.ceil(radii / quantum).astype(int)
    found = []
    for b in np.unique(bins):
        sel = bins == b
        r_max = b * quantum
        half = np.ceil(r_max / sp + 0.5).astype(int)
        box = np.stack(
            np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij"), -1
        ).reshape(-1, 3)
        box = box[(((np.abs(box) - 0.5).clip(0) * sp) ** 2).sum(1) <= r_max**2]
        c_sel, r_sel = centers[sel], radii[sel]
        chunk = max(1, _MAX_BATCH // len(box))
        for s in range(0, len(c_sel), chunk):
            c = c_sel[s : s + chunk]
            base = np.rint(c).astype(np.int64)
            vox = base[:, None, :] + box[None]
            d2 = (((vox - c[:, None, :]) * sp) ** 2).sum(-1)
            keep = d2 <= r_sel[s : s + chunk, None] ** 2
            vox = vox[keep]
            ok = np.all((vox >= 0) & (vox < shape), axis=1)
            found.append(np.ravel_multi_index(tuple(vox[ok].T), frame.shape))
    if not found:
        return np.zeros(0, dtype=np.int64)
    # Overlapping balls repeat indices; painting a constant value does not mind, and
    # skipping np.unique saves a sort of millions of indices.
    return np.concatenate(found)
