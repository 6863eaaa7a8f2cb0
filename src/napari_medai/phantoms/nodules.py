"""Lung nodules: random specification, placement, and exact partial-volume insertion.

A nodule is an implicit shape around its centre (sphere, lobulated sphere, or sphere
with spicules).  It is inserted on the final grid: each voxel near it is supersampled
(sub-voxel points ~0.3 mm apart) to get the fraction of the voxel the nodule fills.
That fraction blends the nodule's HU into the image (partial volume) and gives the
true volume; the label map marks the round(volume / voxel) voxels with the largest
fractions, so a labelled nodule's volume is within half a voxel of its stated volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from . import tissues as T
from .layout import ChestLayout
from .raster import Frame
from .vessels import Tree, sample_in_lungs

TYPES = ("solid", "part-solid", "ground-glass")
SHAPES = ("spherical", "lobulated", "spiculated")
LOCATIONS = ("isolated", "juxta-vascular", "juxta-pleural")
MIN_DIAMETER_MM, MAX_DIAMETER_MM = 3.0, 30.0
# Fewer voxels than this and half a voxel of rounding exceeds 15 % of the volume.
MIN_VOXELS = 4.0
_SUBSAMPLE_MM = 0.5


@dataclass
class NoduleSpec:
    center: np.ndarray  # phantom mm (zeta, y, x)
    radius: float
    type: str
    shape: str
    location: str
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    axes: np.ndarray = field(default_factory=lambda: np.ones(3))
    lobes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # dir (3) + amplitude
    spikes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))  # dir (3), length, width
    core_fraction: float = 0.0  # part-solid: radius fraction of the solid core
    hu_solid: float = T.HU["solid_nodule"]
    hu_ground_glass: float = T.HU["ground_glass"]

    @property
    def inner_radius(self) -> float:
        """Radius of a ball surely inside the nodule."""
        return self.radius * (0.88 if len(self.lobes) else 1.0) * self.axes.min()

    @property
    def reach(self) -> float:
        """Radius of a ball that contains the whole nodule, spicules included."""
        extra = self.spikes[:, 3].max() if len(self.spikes) else 0.0
        return self.body_radius + extra + 1.0

    def near_spicule(self, rel: np.ndarray, margin: float) -> np.ndarray:
        """Points within ``margin`` of a spicule's axis-aligned envelope."""
        if not len(self.spikes):
            return np.zeros(len(rel), bool)
        t = rel @ self.spikes[:, :3].T
        perp2 = (rel**2).sum(1)[:, None] - t**2
        near = (t > -margin) & (t < self.radius + self.spikes[:, 3] + margin)
        near &= perp2 < (self.spikes[:, 4] + margin) ** 2
        return near.any(axis=1)

    @property
    def body_radius(self) -> float:
        """Radius of a ball containing the nodule without its spicules."""
        body = self.radius
        if len(self.lobes):
            # Largest lobulated radius over a dense set of directions, plus a margin.
            u = _sphere_directions(400)
            bumps = np.exp((u @ self.lobes[:, :3].T - 1.0) / 0.12) @ self.lobes[:, 3]
            body = self.radius * (0.88 + bumps.max()) * 1.05
        return body * self.axes.max()

    def inside(self, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(in nodule, in solid core) for points ``rel`` (N, 3) mm from the centre."""
        q = (rel @ self.rotation.T) / self.axes
        d = np.linalg.norm(q, axis=1)
        u = q / np.maximum(d, 1e-9)[:, None]
        surface = np.full(len(q), self.radius)
        if len(self.lobes):
            bumps = np.exp((u @ self.lobes[:, :3].T - 1.0) / 0.12) @ self.lobes[:, 3]
            surface = self.radius * (0.88 + bumps)
        inside = d <= surface
        core = d <= self.core_fraction * surface
        if len(self.spikes):
            # Spicules: tapering cylinders along each direction; perp^2 = |p|^2 - t^2.
            t = rel @ self.spikes[:, :3].T
            perp2 = (rel**2).sum(1)[:, None] - t**2
            length, width = self.spikes[:, 3], self.spikes[:, 4]
            start = 0.8 * self.radius
            taper = np.clip(1.0 - (t - start) / (self.radius - start + length), 0.0, 1.0)
            w = np.where(t < start, width, width * taper)
            inside |= ((t > 0) & (t < self.radius + length) & (perp2 < w**2)).any(axis=1)
        return inside, core


def _random_directions(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def random_spec(rng: np.random.Generator, min_diameter: float, max_diameter: float = MAX_DIAMETER_MM) -> NoduleSpec:
    """Type, shape and size drawn per nodule (placement comes later); the diameter is
    log-uniform between ``min_diameter`` (at least 3 mm) and ``max_diameter``."""
    low = max(MIN_DIAMETER_MM, min_diameter)
    high = max(low, max_diameter)
    diameter = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    ntype = str(rng.choice(TYPES, p=[0.6, 0.2, 0.2]))
    shape = str(rng.choice(SHAPES, p=[0.45, 0.35, 0.2]))
    if shape == "spiculated" and diameter < 6:
        shape = "lobulated"
    spec = NoduleSpec(np.zeros(3), diameter / 2, ntype, shape, "isolated")
    spec.rotation = Rotation.random(random_state=rng).as_matrix()
    spec.axes = np.array([1.0, rng.uniform(0.85, 1.0), rng.uniform(0.85, 1.0)])
    if shape == "lobulated":
        k = int(rng.integers(3, 7))
        spec.lobes = np.column_stack([_random_directions(rng, k), rng.uniform(0.12, 0.25, k)])
    if shape == "spiculated":
        k = int(rng.integers(6, 15))
        lengths = rng.uniform(0.4, 1.2, k) * spec.radius + 2.0
        widths = rng.uniform(0.35, 0.7, k) + 0.04 * spec.radius
        spec.spikes = np.column_stack([_random_directions(rng, k), lengths, widths])
    spec.hu_solid = float(rng.normal(T.HU["solid_nodule"], 12))
    spec.hu_ground_glass = float(rng.uniform(-650, -300))
    if ntype == "part-solid":
        spec.core_fraction = float(rng.uniform(0.3, 0.65))
    elif ntype == "solid":
        spec.core_fraction = 10.0  # all core
    return spec


def _sphere_directions(n=48):
    """Fibonacci points on the unit sphere, for testing a nodule's surroundings."""
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return np.column_stack([np.cos(phi), np.sin(phi) * np.cos(theta), np.sin(phi) * np.sin(theta)])


def _outside_fraction(lay: ChestLayout, centers, radius):
    """Fraction of points on spheres of ``radius`` around each centre outside the lungs."""
    dirs = _sphere_directions()
    pts = centers[:, None, :] + radius * dirs[None]
    out = lay.lung_side(pts[..., 0], pts[..., 1], pts[..., 2]) == 0
    return out.mean(axis=1)


def place(spec: NoduleSpec, location: str, lay: ChestLayout, rng, trees: list[Tree], zeta_range, taken) -> bool:
    """Choose a centre for ``spec`` at the requested kind of location; False if none fits."""
    r = spec.radius
    lo, hi = zeta_range[0] + r, zeta_range[1] - r
    if hi <= lo:
        return False
    side = int(rng.integers(1, 3))
    if location == "juxta-vascular":
        nodes = np.concatenate([t.nodes for t in trees])
        radii = np.concatenate([t.radius for t in trees])
        ok = (radii > 0.8) & (radii < 4.0) & (nodes[:, 0] > lo) & (nodes[:, 0] < hi)
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            return False
        pick = rng.choice(idx, size=min(400, len(idx)), replace=False)
        cand = nodes[pick] + _random_directions(rng, len(pick)) * (r + 0.5 * radii[pick])[:, None]
        good = (_outside_fraction(lay, cand, 1.1 * r) == 0) & (lay.lung_side(*cand.T) > 0)
    else:
        cand = sample_in_lungs(lay, rng, 1500, side, (lo, hi))
        if len(cand) == 0:
            return False
        if location == "juxta-pleural":
            # Touching the pleura: the centre inside, part of the surface outside.
            frac = _outside_fraction(lay, cand, 1.05 * r)
            good = (frac > 0.05) & (frac < 0.35) & (_outside_fraction(lay, cand, 0.6 * r) == 0)
        else:
            good = _outside_fraction(lay, cand, r + 3.0) == 0
            nodes = np.concatenate([t.nodes for t in trees])
            radii = np.concatenate([t.radius for t in trees])
            big = radii > 1.5
            if big.any():
                dist, _ = cKDTree(nodes[big]).query(cand)
                good &= dist > r + 5.0
    for c in taken:
        good &= np.linalg.norm(cand - c[0], axis=1) > r + c[1] + 5.0
    if not good.any():
        return False
    spec.center = cand[np.flatnonzero(good)[0]]
    spec.location = location
    return True


def insert(spec: NoduleSpec, frame: Frame, label: np.ndarray, hu: np.ndarray, rng) -> dict:
    """Blend one nodule into ``hu`` (float) and ``label`` on the final grid; returns
    its measured fraction statistics (true volume and labelled voxel count)."""
    sp = np.asarray(frame.spacing)
    c_idx = frame.to_index(spec.center)
    half = np.ceil(spec.reach / sp).astype(int) + 1
    lo = np.maximum(np.floor(c_idx).astype(int) - half, 0)
    hi = np.minimum(np.floor(c_idx).astype(int) + half + 2, frame.shape)
    n_sub = np.clip(np.ceil(sp / _SUBSAMPLE_MM).astype(int), 1, 6)
    sub = np.stack(np.meshgrid(*[((np.arange(n) + 0.5) / n - 0.5) * s for n, s in zip(n_sub, sp)], indexing="ij"), -1).reshape(-1, 3)
    box_shape = tuple(hi - lo)
    # Only voxels that may straddle the surface are supersampled; the rest are surely
    # inside (fraction 1) or surely outside (0) from their centre's distance.
    kk, jj, ii = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
    vox = np.column_stack([kk.ravel(), jj.ravel(), ii.ravel()])
    centre_rel = frame.to_mm(vox) - spec.center
    centre_dist = np.linalg.norm(centre_rel, axis=1)
    half_diag = 0.5 * np.linalg.norm(sp)
    r_in = spec.inner_radius
    partial_core = 0.0 < spec.core_fraction < 1.0  # part-solid: the core needs its own test
    surely_in = centre_dist + half_diag < (spec.core_fraction * r_in if partial_core else r_in)
    frac = surely_in.astype(np.float32)
    core = frac.copy()
    maybe = (centre_dist - half_diag < spec.body_radius) | spec.near_spicule(centre_rel, half_diag)
    todo = np.flatnonzero(~surely_in & maybe)
    for start in range(0, len(todo), 4096):
        part = todo[start : start + 4096]
        rel = (frame.to_mm(vox[part]) - spec.center)[:, None, :] + sub[None]
        inside, in_core = spec.inside(rel.reshape(-1, 3))
        frac[part] = inside.reshape(len(part), -1).mean(1)
        core[part] = (inside & in_core).reshape(len(part), -1).mean(1)
    if spec.core_fraction >= 1.0:
        core = frac
    elif spec.core_fraction == 0.0:
        core[:] = 0.0
    frac = frac.reshape(box_shape)
    core = core.reshape(box_shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    texture = rng.normal(0, 8, box_shape).astype(np.float32)
    content = core * (spec.hu_solid + texture) + (frac - core) * (spec.hu_ground_glass + 2 * texture)
    region = hu[box]
    # max(): vessels crossing a ground-glass nodule stay visible through it.
    hu[box] = np.maximum(region, region * (1 - frac) + content)
    n_label = int(round(float(frac.sum())))
    if frac.sum() > 0:
        n_label = max(n_label, 1)
    order = np.argsort(-frac, axis=None, kind="stable")[:n_label]
    lab = label[box].copy()  # contiguous, so reshape(-1) below is a view
    lab.reshape(-1)[order] = T.NODULE
    label[box] = lab
    return {"voxels": float(frac.sum()), "labelled_voxels": n_label}
