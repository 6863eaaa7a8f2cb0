"""Nodule attenuation (solid, part-solid, ground-glass) from the CT inside a finding's mask, and
the Lung-RADS v2022 baseline category that goes with it.

Lung-RADS sizes a solid nodule by its mean diameter, a part-solid one by its solid component,
and gives a ground-glass (non-solid) one category 2 below 30 mm.  So a 20 mm ground-glass nodule
is category 2, not the 4B its size alone would give.  The findings' ``lung_rads`` field stays
the solid-nodule size category the detector promises; ``lung_rads_by_attenuation`` applies the
attenuation read here, which a reader should confirm on the image.

The solid voxels are the mask's voxels at or above ``SOLID_HU`` (soft tissue; ground glass
lies between about -750 and -300 HU).  A nodule is solid when they make ``SOLID_SHARE`` of its
mask (partial volume at the rim keeps a solid nodule's share below 1).  Otherwise they are
opened with a ``OPENING_MM`` ball (partial-volume specks go), and the largest remaining piece
that is at least ``MIN_COMPONENT_MM`` wide on its axial slices and not a tube (a vessel running
through ground glass stays visible through it) is the solid component: with one the nodule is
part-solid and the piece is measured like the finding (mean of the axial long and short axes),
without one it is ground glass.  The thresholds were set on validation phantoms with known
nodule types (docs/detection.md, "Attenuation").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .components import keep_largest_components
from .findings import axial_axes, lung_rads_category, mean_diameter, round_half_up

SOLID_HU = -300.0
SOLID_SHARE = 0.6  # at least this share of the mask solid: a solid nodule
# The solid component is opened with a ball this wide first: a vessel crossing ground glass
# (1-2 mm in a lung periphery) and the partial-volume rim are not a solid component.
OPENING_MM = 2.0
# What is left must look like a core: at least this wide on its axial slices (smaller pieces are
# noise specks and vessel cross-sections at CT resolution) and not a tube (a vessel running through
# the ground glass): its longest axis at most ELONGATION_MAX times its second.
MIN_COMPONENT_MM = 3.0
ELONGATION_MAX = 2.5
GROUND_GLASS_BOUND_MM = 30.0  # Lung-RADS v2022 baseline: non-solid < 30 mm is 2, >= 30 mm is 3
# part-solid nodules >= 6 mm: solid component (mm) upper bounds
PART_SOLID_BASELINE = ((6.0, "3"), (8.0, "4A"), (float("inf"), "4B"))
KINDS = ("solid", "part-solid", "ground-glass")


@dataclass
class Attenuation:
    kind: str  # one of KINDS
    solid_share: float  # share of the mask's voxels at or above SOLID_HU
    solid_diameter_mm: float  # mean axial diameter of the largest solid piece (0: none)


def attenuation(mask: np.ndarray, hu: np.ndarray, spacing) -> Attenuation:
    """The attenuation of the lesion ``mask`` (bool) over ``hu`` (same shape, Hounsfield units)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("the finding's mask is empty")
    solid = mask & (np.asarray(hu) >= SOLID_HU)
    share = float(solid.sum() / mask.sum())
    opened = ndimage.binary_opening(solid, structure=ball(OPENING_MM / 2, spacing))
    labels, _ = ndimage.label(opened, structure=np.ones((3, 3, 3), bool))
    diameter = 0.0
    for index in np.argsort(-np.bincount(labels.ravel())[1:]) + 1:  # largest piece first
        piece = _core(labels == index, spacing)
        if piece is not None:
            diameter = _mean_axes(piece, spacing)
            break
    if share >= SOLID_SHARE:
        kind = "solid"
        if not diameter and solid.any():  # a small solid nodule: its solid part is all of it
            diameter = _mean_axes(solid, spacing)
    elif not diameter:
        kind = "ground-glass"
    else:
        kind = "part-solid"
    return Attenuation(kind, round(share, 3), diameter)


def _mean_axes(mask: np.ndarray, spacing) -> float:
    """The mean axial diameter as a finding's is taken (``findings.mask_measurements``): each
    caliper axis rounded to one decimal first, then their mean, halves up.  Rounding the mean of
    unrounded axes instead read 6.05 x 5.84 mm as 5.9 mm where the nodule's own rule gives 6.0."""
    long_ax, short_ax = (round_half_up(v) for v in axial_axes(mask, spacing))
    return mean_diameter(long_ax, short_ax)


def _core(piece: np.ndarray, spacing) -> np.ndarray | None:
    """``piece`` if it looks like a solid core (wide enough, not a tube); for a tube-like piece,
    the core left after opening it with a ball a little narrower than its thickest point (a core
    on a vessel: the vessel, thinner than the core, goes); None when there is no core."""
    if not _core_like(piece, spacing):
        return None if not _tube_like(piece, spacing) else _core(_thinned(piece, spacing), spacing)
    return piece


def _core_like(piece, spacing) -> bool:
    return (piece.any() and float(np.mean(axial_axes(piece, spacing))) >= MIN_COMPONENT_MM
            and elongation(piece, spacing) <= ELONGATION_MAX)


def _tube_like(piece, spacing) -> bool:
    return piece.sum() >= 3 and elongation(piece, spacing) > ELONGATION_MAX


def _thinned(piece: np.ndarray, spacing) -> np.ndarray:
    """The largest part of ``piece`` left by an opening with a ball of 0.8 times the radius of its
    thickest point (empty when nothing is left, or when that ball is too small to change it)."""
    thickest = float(ndimage.distance_transform_edt(np.pad(piece, 1), sampling=spacing).max())
    structure = ball(0.8 * thickest, spacing)
    if structure.sum() <= 1:
        return np.zeros_like(piece)
    opened = ndimage.binary_opening(piece, structure=structure)
    if opened.sum() in (0, piece.sum()):
        return np.zeros_like(piece)
    return keep_largest_components(opened, n=1)


def elongation(piece: np.ndarray, spacing) -> float:
    """Square root of the ratio of the two largest variances of the piece's voxel positions (mm):
    about 1 for a ball or a disc (a core on thick slices), large for a tube."""
    points = np.argwhere(piece) * np.asarray(spacing, float)
    if len(points) < 3:
        return 1.0
    variances = np.sort(np.linalg.eigvalsh(np.cov(points.T)))[::-1]
    return float(np.sqrt(variances[0] / max(variances[1], 1e-6)))


def ball(radius_mm: float, spacing) -> np.ndarray:
    """A ball of ``radius_mm`` on the voxel grid (at least the centre voxel along each axis: a
    disc of one slice when the ball is thinner than a slice); also ``postprocess.seeded``'s."""
    half = [int(radius_mm // float(s)) for s in spacing]
    grid = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    return sum((g * float(s) / radius_mm) ** 2 for g, s in zip(grid, spacing)) <= 1.0


def lung_rads_by_attenuation(kind: str, mean_diameter_mm: float, solid_diameter_mm: float) -> str:
    """Lung-RADS v2022 category on a baseline screen for a nodule of attenuation ``kind``:
    solid by its mean diameter; part-solid < 6 mm: 2, else by its solid component (< 6: 3,
    6-<8: 4A, >= 8: 4B); ground-glass < 30 mm: 2, >= 30 mm: 3."""
    if kind == "solid":
        return lung_rads_category(mean_diameter_mm)
    d = round_half_up(mean_diameter_mm)
    if kind == "ground-glass":
        return "2" if d < GROUND_GLASS_BOUND_MM else "3"
    if kind != "part-solid":
        raise ValueError(f"unknown attenuation {kind!r}; expected one of {KINDS}")
    if d < 6.0:
        return "2"
    solid = round_half_up(solid_diameter_mm)
    return next(category for bound, category in PART_SOLID_BASELINE if solid < bound)


def add_attenuation(findings, volume: np.ndarray, spacing) -> list:
    """Set each finding's ``attenuation``, ``solid_diameter_mm`` and ``lung_rads_by_attenuation``
    from the CT ``volume`` (HU) under its mask; findings without a mask are left as they are."""
    for f in findings:
        if f.mask is None or not np.any(f.mask):
            continue
        (z0, y0, x0), (z1, y1, x1) = f.bbox_voxel
        a = attenuation(f.mask, volume[z0:z1, y0:y1, x0:x1], spacing)
        f.attenuation, f.solid_diameter_mm = a.kind, a.solid_diameter_mm
        f.lung_rads_by_attenuation = lung_rads_by_attenuation(a.kind, f.mean_diameter_mm, a.solid_diameter_mm)
    return findings
