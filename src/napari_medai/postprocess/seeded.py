"""A nodule measured from one point: the reader marks what the detector missed.

The built-in detector misses most nodules under 6 mm (docs/detection.md), which is where the
Lung-RADS size categories 2 and 3 meet.  A reader who sees one marks it, and wants it measured
the way the detector's findings are, not by hand with a ruler.  ``nodule_at`` grows the nodule
from the marked point on the CT alone (no model), the way an observer outlines one:

1. the lung field around the point: lung-density voxels (below ``LUNG_HU``) with what they
   enclose on each slice, closed with the smallest ball that takes the point in (a nodule on
   the pleura needs about its own radius), so the field's edge is the pleural line;
2. the point snaps to the brightest voxel of the lightly smoothed CT within ``SNAP_MM`` and
   inside that field (a click lands near a small nodule's centre, not on it);
3. the edge is the half-maximum contour between that core and the lung around it (the median
   of the lung-density voxels in the working box): the level the detector's masks are refined
   to (``postprocess.refine``);
4. the region is the voxels above that level connected to the core, inside the field and
   within ``max_diameter_mm / 2 + RUN_ON_MM`` of the core; an opening with a ball a little
   narrower than the nodule (``OPENING_SHARE`` of its depth at the core) cuts off the vessels
   it touches, and the piece holding the core, with ``RIM_MM`` of the region around it, is the
   nodule;
5. it is measured like a finding (``mask_measurements``) and its attenuation read from the CT
   (``postprocess.attenuation``).

A point with no lung around it or no contrast to the lung, a region that runs on beyond the
largest nodule (a vessel, the chest wall, a mass), or one shaped like a tube (a vessel
segment: ``attenuation``'s elongation rule) is refused with a message instead of a made-up
size.  The rules were set on validation phantoms (docs/detection.md, "A nodule the
reader marks").
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .attenuation import ELONGATION_MAX, SOLID_HU, attenuation, ball, elongation, lung_rads_by_attenuation
from .findings import Finding, mask_measurements
from .refine import HALF_MAXIMUM

SNAP_MM = 3.0  # a click this far from the nodule's core still finds it
SMOOTH_MM = 0.7  # Gaussian sigma for finding the core: noise does not decide the snap
LUNG_HU = -500.0  # lung parenchyma lies below this (ground glass above it)
MIN_CONTRAST_HU = 100.0  # a core this little above the lung is no nodule
MAX_DIAMETER_MM = 30.0  # Lung-RADS solid nodules are under 30 mm; larger is a mass
# ... but a ground-glass nodule of 30 mm or more is still one (Lung-RADS v2022 baseline: 3): one
# whose core reads below the solid level is measured up to this size instead
GROUND_GLASS_MAX_DIAMETER_MM = 50.0
# Vessels are cut off with an opening by a ball this share of the nodule's depth at its core
# (its radius for a round nodule): a vessel narrower than that goes, the nodule stays whole.
OPENING_SHARE = 0.8
RIM_MM = 1.0  # what the opening took off the nodule's own edge is given back this far
# Closings of the lung field tried in turn (mm) until the core lies inside it (a nodule on
# the pleura needs about its own radius)
FIELD_CLOSING_MM = (1.5, 3.0, 4.5, 6.0, 9.0, 12.0, 15.0)
# The region grows this far beyond max_diameter_mm / 2; reaching more than half of it beyond
# means the structure runs on (a vessel, the chest wall, a mass)
RUN_ON_MM = 6.0
RUN_ON_SHARE = 0.02  # ... with more than this share of the region; less is a vessel's stub, clipped
READER_SCORE = 1.0  # a reader's mark is not a detector's guess: it ranks with the surest findings


class _TooLarge(InputError):
    """What is at the point runs on beyond, or measures more than, the largest size: carries
    the core's HU, so that a ground-glass core may be measured again with a larger limit."""

    def __init__(self, message: str, core_hu: float):
        super().__init__(message)
        self.core_hu = core_hu


def nodule_at(volume: np.ndarray, spacing, point_voxel, affine: np.ndarray | None = None, *,
              max_diameter_mm: float = MAX_DIAMETER_MM,
              ground_glass_max_mm: float = GROUND_GLASS_MAX_DIAMETER_MM) -> Finding:
    """The nodule at ``point_voxel`` (see ``_nodule_at``).  Where what is at the point is larger
    than ``max_diameter_mm`` and its core reads ground glass (below the solid level), it is
    measured again up to ``ground_glass_max_mm``: a ground-glass nodule of 30 mm or more is
    Lung-RADS 3, no mass (an audit helper found it refused)."""
    try:
        return _nodule_at(volume, spacing, point_voxel, affine, max_diameter_mm=max_diameter_mm)
    except _TooLarge as exc:
        if exc.core_hu >= SOLID_HU or ground_glass_max_mm <= max_diameter_mm:
            raise InputError(str(exc)) from None
        first = str(exc)
    try:
        return _nodule_at(volume, spacing, point_voxel, affine, max_diameter_mm=ground_glass_max_mm)
    except _TooLarge:  # too large for a ground-glass nodule too: the limit the caller set is the one to name
        raise InputError(first) from None


def _nodule_at(volume: np.ndarray, spacing, point_voxel, affine: np.ndarray | None = None, *,
               max_diameter_mm: float = MAX_DIAMETER_MM) -> Finding:
    """The nodule at ``point_voxel`` (z, y, x, voxel coordinates, may be fractional) in the CT
    ``volume`` (HU) with voxel ``spacing`` (mm), measured as a Finding (score ``READER_SCORE``).

    ``affine`` (4x4, voxel -> world mm) gives ``center_mm``; by default the spacing's diagonal.
    Raises InputError when the point is off the volume, on air or lung with no nodule, or on a
    structure larger than ``max_diameter_mm`` along its long axis (a vessel, the chest wall, a
    mass)."""
    from ..io.validate import check_affine, check_spacing

    volume = np.asarray(volume)
    # first: None, a zero or two values otherwise failed later with messages about the volume
    spacing = np.asarray(check_spacing(spacing, ndim=3, what="check the scan's voxel size"), dtype=float)
    # NaN, singular, or a voxel size other than the spacing's (the sizes use the spacing)
    affine = np.diag([*spacing, 1.0]) if affine is None else check_affine(affine, spacing=spacing)
    if volume.ndim != 3:
        raise InputError(f"a nodule is measured in a 3D volume, got shape {volume.shape}")
    if not (np.isfinite(max_diameter_mm) and max_diameter_mm > 0):
        raise InputError(f"the largest nodule to measure must be a positive size in mm, got {max_diameter_mm!r}")
    point = np.asarray(point_voxel, dtype=float)
    if point.shape != (3,) or not np.all((point > -0.5) & (point < np.array(volume.shape) - 0.5)):
        where = ", ".join(f"{v:.1f}" for v in np.ravel(point))
        raise InputError(f"the point ({where}) lies outside the volume {volume.shape}")
    radius_mm = max_diameter_mm / 2
    # The working box: the largest nodule allowed around any core the snap can reach, plus the lung
    # around it.  Everything below runs on this crop, so a click costs the same on any volume.
    half = np.ceil((radius_mm + RUN_ON_MM + SNAP_MM + 1.0) / spacing).astype(int)
    centre = np.round(point).astype(int)
    lo, hi = np.maximum(centre - half, 0), np.minimum(centre + half + 1, volume.shape)
    crop = volume[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(np.float32)
    local = point - lo
    if np.isnan(crop).any():  # NaN would be the "brightest" voxel and every median
        raise InputError("the image holds NaN (not-a-number) voxels around the point: it cannot be measured there")

    lung = crop[crop < LUNG_HU]
    if lung.size < 10:
        raise InputError("there is no lung around the point: mark a nodule inside the lung field")
    click = tuple(np.clip(np.round(local).astype(int), 0, np.array(crop.shape) - 1))
    field = _lung_field(crop, click, spacing, radius_mm)
    if field is None:
        raise InputError(f"the point is not inside the lung: no lung surrounds it within {radius_mm:g} mm")
    smooth = ndimage.gaussian_filter(crop, SMOOTH_MM / spacing)
    core = _snap(smooth, spacing, local, field)
    core_hu = float(smooth[core])
    around = float(np.median(lung))
    if core_hu - around < MIN_CONTRAST_HU:
        raise InputError(f"no nodule at the point: its brightest voxel within {SNAP_MM:g} mm reads "
                         f"{core_hu:.0f} HU, like the lung around it ({around:.0f} HU)")
    level = around + HALF_MAXIMUM * (core_hu - around)
    # grown in a ball with room beyond the largest nodule, so that running on is seen as such
    distance = _distance_from(crop.shape, core, spacing)
    ball = distance <= radius_mm + RUN_ON_MM
    above = ndimage.gaussian_filter(crop, 0.5 * SMOOTH_MM / spacing) >= level
    region = _piece_at(above & ball & field, core)
    if region is None:
        raise InputError("no nodule at the point: nothing there rises to half-way between the lung and its core")
    region = _cut_vessels(region, core, spacing)
    far = region & (distance > radius_mm + RUN_ON_MM / 2)
    if far.sum() > RUN_ON_SHARE * region.sum():
        raise _TooLarge(f"what is at the point runs on beyond {max_diameter_mm:g} mm (a vessel, the chest wall "
                        "or a mass): it cannot be measured as a nodule from one point", core_hu)
    region &= ~far  # stubs of the vessels cut off, left beyond the largest nodule's reach
    stretch = elongation(region, spacing)
    if stretch > ELONGATION_MAX:  # the attenuation's tube rule: a vessel segment, not a nodule
        raise InputError(f"what is at the point is a tube, not a nodule (its longest axis is {stretch:.1f} times "
                         "its next): a vessel? Check the image, and measure it by hand if it is a nodule")

    box = ndimage.find_objects(region.astype(np.uint8))[0]
    mask = region[box]
    sizes = mask_measurements(mask, spacing)
    if sizes["diameter_mm"] > max_diameter_mm:  # grown within reach of a larger one: say so, not its size
        raise _TooLarge(f"what is at the point measures {sizes['diameter_mm']:.1f} mm across, more than the "
                        f"{max_diameter_mm:g} mm largest nodule to measure (a mass?)", core_hu)
    start = lo + np.array([s.start for s in box])
    centre_voxel = np.array(ndimage.center_of_mass(mask)) + start
    hu = crop[box]
    kind = attenuation(mask, hu, spacing)
    return Finding(
        center_voxel=[round(float(c), 2) for c in centre_voxel],
        center_mm=[round(float(c), 2) for c in affine[:3, :3] @ centre_voxel + affine[:3, 3]],
        bbox_voxel=[[int(s) for s in start], [int(s) for s in start + np.array(mask.shape)]],
        score=READER_SCORE, mask=mask, added_by_reader=True, outline="half-maximum", attenuation=kind.kind,
        solid_diameter_mm=kind.solid_diameter_mm,
        lung_rads_by_attenuation=lung_rads_by_attenuation(kind.kind, sizes["mean_diameter_mm"],
                                                          kind.solid_diameter_mm),
        **sizes,
    )


def _snap(smooth, spacing, local, field) -> tuple[int, int, int]:
    """The brightest voxel of the smoothed crop within SNAP_MM of ``local`` and inside the lung
    ``field`` (a small nodule on the pleura is fainter than the chest wall beside it)."""
    near = (_distance_from(smooth.shape, local, spacing) <= SNAP_MM) & field
    near[tuple(np.clip(np.round(local).astype(int), 0, np.array(smooth.shape) - 1))] = True  # thick slices
    flat = np.where(near, smooth, -np.inf)
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(flat)), smooth.shape))


def _lung_field(crop, point, spacing, max_radius_mm) -> np.ndarray | None:
    """The lung field around the marked point: lung-density voxels with what they enclose on
    each axial slice, closed with the smallest ball (in mm) that takes the point in.  A nodule inside the
    lung is enclosed without closing; one on the pleura needs a ball about its own size, and the
    closed field's edge is then the pleural line under it, so it is not grown into the chest wall."""
    air = crop < LUNG_HU
    for radius in (0.0, *FIELD_CLOSING_MM):
        if radius > max_radius_mm:
            break
        closed = air if radius == 0 else ndimage.binary_closing(air, structure=ball(radius, spacing), border_value=1)
        field = np.stack([ndimage.binary_fill_holes(sl) for sl in closed])
        if field[point]:
            return field
    return None


def _distance_from(shape, point, spacing) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return np.sqrt(sum(((g - p) * s) ** 2 for g, p, s in zip(grids, point, spacing)))


def _piece_at(mask, core) -> np.ndarray | None:
    if not mask[core]:
        return None
    comps, _ = ndimage.label(mask)
    return comps == comps[core]


def _cut_vessels(region, core, spacing) -> np.ndarray:
    """Open with a ball OPENING_SHARE as deep as the region is at its core, keep the piece holding (or
    nearest to) the core, and give it back the region's voxels within RIM_MM of it (the
    opening rounds off the rim's partial-volume voxels): vessels narrower than the ball go,
    leaving stubs of at most RIM_MM (one slice, on slices thicker than that)."""
    depth = ndimage.distance_transform_edt(region, sampling=spacing)
    radius = OPENING_SHARE * float(depth[core])
    if radius < float(spacing[1:].max()):  # too small to open in-plane: keep it whole
        return region
    opened = ndimage.binary_opening(region, structure=ball(radius, spacing))
    if not opened.any():
        return region
    comps, _ = ndimage.label(opened)
    label = comps[core]
    if label == 0:  # the core itself was opened away: the piece nearest to it
        index = ndimage.distance_transform_edt(comps == 0, sampling=spacing, return_distances=False,
                                               return_indices=True)
        label = comps[tuple(index[:, core[0], core[1], core[2]])]
    piece = comps == label
    # RIM_MM, or one voxel along an axis whose voxels are longer: on slices thicker than the rim
    # the opening takes a small nodule's first and last slices, and the rim gives them back
    # (the distance is in units of each axis' rim, so thin slices are not touched)
    rim = np.maximum(RIM_MM, spacing)
    kept = region & (ndimage.distance_transform_edt(~piece, sampling=spacing / rim) <= 1.0)
    return _piece_at(kept, core) if kept[core] else piece
