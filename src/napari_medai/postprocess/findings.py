"""Findings (detected lesions) from a lesion-probability map.

Segmentation-based detection: connected components of the probability map above a low
candidate threshold become findings; each is scored by its peak probability and measured on
its own mask (probability >= ``mask_threshold``).  Sizes follow Lung-RADS practice: the
long axis and the perpendicular short axis on the axial slice where the lesion is largest,
and their mean as the size that sets the category.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

_FULL = ndimage.generate_binary_structure(3, 3)

# Lung-RADS v2022, solid nodule on a baseline screen: mean diameter (mm) upper bounds.
LUNG_RADS_SOLID_BASELINE = ((6.0, "2"), (8.0, "3"), (15.0, "4A"), (float("inf"), "4B"))
LUNG_RADS_NOTE = ("Lung-RADS v2022 categories for a baseline screen, by size (as a solid nodule) and by the "
                  "attenuation read from the CT: decision support, not a diagnosis")
FIELD_SLAB = 16  # axial slices summed at a time by organ_field
# What a finding's mask is, so a reader knows how far to trust a small nodule's size: the network's
# outline undersizes nodules under 8 mm (held-out phantoms, 4 nodules of 6-8 mm: median volume
# -57 % as drawn, -9 % once moved to the half-maximum contour; docs/detection.md).
OUTLINES = {
    "half-maximum": "the CT's half-maximum contour between the nodule and the lung around it",
    "network": ("the network's outline as drawn (no lung or no contrast around the finding to move its edge to, "
                "or refinement off)"),
    "mixed": "the half-maximum contour for some of its pieces, the network's outline for the others",
    "box": "the ellipsoid inside a box detector's box",
}
OUTLINE_SMOOTH_PX = 0.7  # Gaussian sigma (pixels) of the outline calipers are laid on (slice_outlines_mm)


def reported_score(score) -> float:
    """A finding's score as every output gives it (4 decimals).  The score threshold is compared with
    this value: compared with the raw one, a finding listed at 0.6111 was left out at
    --threshold 0.6111 (found by an audit helper)."""
    return round(float(score), 4)


def round_half_up(value: float, digits: int = 1) -> float:
    """``value`` to ``digits`` decimals with halves rounded up, as a reader rounds a caliper
    reading (Python's ``round`` rounds 5.95 to 6.0 but 14.95 to 14.9: binary floats)."""
    from decimal import ROUND_HALF_UP, Decimal

    exact = value if isinstance(value, Decimal) else Decimal(repr(float(value)))
    return float(exact.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def mean_diameter(long_axis_mm: float, short_axis_mm: float) -> float:
    """The mean of two axes already rounded to one decimal, to one decimal, halves up; in decimal
    arithmetic, since 0.5 * (6.1 + 5.8) is 5.9499... in binary floats and would round down."""
    from decimal import Decimal

    return round_half_up((Decimal(repr(float(long_axis_mm))) + Decimal(repr(float(short_axis_mm)))) / 2)


def lung_rads_category(mean_diameter_mm: float) -> str:
    """Size category for a solid nodule on a baseline screen: <6: 2, 6-<8: 3, 8-<15: 4A, >=15: 4B."""
    d = round_half_up(mean_diameter_mm)  # Lung-RADS rounds the mean diameter to one decimal
    for bound, category in LUNG_RADS_SOLID_BASELINE:
        if d < bound:
            return category
    return LUNG_RADS_SOLID_BASELINE[-1][1]


@dataclass
class Finding:
    center_voxel: list  # (z, y, x), probability-weighted centroid, in voxels of the input
    center_mm: list  # world millimetres (napari world order, see io/volume.py)
    bbox_voxel: list  # [[z0, y0, x0], [z1, y1, x1]], end exclusive
    diameter_mm: float  # long axis on the axial slice where the finding is largest
    short_axis_mm: float
    mean_diameter_mm: float
    volume_ml: float
    score: float
    lung_rads: str
    label: int = 0  # index of this finding in the findings mask (1-based)
    # From the CT under the mask (postprocess.attenuation; "" / 0 when not read, e.g. not a CT):
    attenuation: str = ""  # "solid", "part-solid" or "ground-glass"
    solid_diameter_mm: float = 0.0  # mean axial diameter of the solid component
    lung_rads_by_attenuation: str = ""  # Lung-RADS v2022 baseline category for that attenuation
    added_by_reader: bool = False  # marked by a reader and measured from that point (postprocess.seeded)
    # Which outline the sizes were measured on (OUTLINES); "" in records written before it was kept
    outline: str = ""
    mask: np.ndarray | None = field(default=None, repr=False)  # bool, shape of bbox

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("mask")
        return d


def lps_position(f: Finding) -> list[float]:
    """The finding's centre as DICOM patient coordinates (x, y, z) in mm, the order a PACS and
    ``medai measure --at-lps`` use: x towards the patient's left, y posterior, z superior
    (``center_mm`` is the same point in napari's (S, P, L) order)."""
    s_mm, p_mm, l_mm = (float(v) for v in f.center_mm)
    return [round(l_mm, 2), round(p_mm, 2), round(s_mm, 2)]


def axial_slice(center_voxel) -> int:
    """The axial slice a finding is listed on (tables, reports, key images): its centre's z,
    halves rounded up."""
    return int(np.floor(float(center_voxel[0]) + 0.5))


def axial_axes(mask: np.ndarray, spacing) -> tuple[float, float]:
    """Long and short axis (mm) on the axial slice with the largest cross-section, as a reader
    measures them with calipers (Lung-RADS v2022): the longest diameter, then the longest
    diameter perpendicular to it.  An ellipse fit is not used: it shortens lobulated and
    irregular nodules (lung1's reference nodule: ellipse 16.3 x 9.0 mm, calipers about
    16.1 x 11.0 mm), and it read anisotropic pixels through their mean size."""
    areas = mask.reshape(mask.shape[0], -1).sum(1)
    if not areas.any():
        return 0.0, 0.0
    return caliper_axes(slice_outlines_mm(mask[int(np.argmax(areas))], spacing[1:]))


def slice_outlines_mm(section: np.ndarray, pixel_mm) -> list[np.ndarray]:
    """The closed outlines (mm, (row, col) order) of a 2D mask's pieces, where the mask blurred
    by OUTLINE_SMOOTH_PX crosses one half: the edge a reader sees on the smooth image rather
    than the pixel staircase.  Unblurred, calipers on a rasterised disc read a third of a
    pixel long on average (they catch its corners); blurred, they read within 0.1 pixel of
    its diameter.  A piece one or two pixels thin (a lone pixel, a strand) would shrink or
    vanish in the blur, so its unblurred outline is added: nothing measures under the pixels
    it covers.  Every piece counts: a finding's mask is one lesion."""
    from skimage.measure import find_contours

    padded = np.pad(np.asarray(section, dtype=np.float32), 4)  # padding closes every outline
    pieces = find_contours(ndimage.gaussian_filter(padded, OUTLINE_SMOOTH_PX), 0.5)
    thin = padded.astype(bool) & ~_pieces_with_a_core(padded.astype(bool))
    if thin.any():
        pieces += find_contours(thin.astype(np.float32), 0.5)
    return [piece * np.asarray(pixel_mm, dtype=float) for piece in pieces]


def _pieces_with_a_core(section: np.ndarray) -> np.ndarray:
    """The pieces of ``section`` that keep a pixel after an erosion (at least 3 pixels thick
    somewhere): the ones the outline blur does not thin away."""
    labels, _ = ndimage.label(section)
    cored = np.unique(labels[ndimage.binary_erosion(section)])
    return np.isin(labels, cored[cored > 0])


def caliper_axes(outlines: list[np.ndarray]) -> tuple[float, float]:
    """(long axis, short axis) in mm of closed ``outlines``: the longest distance between two
    outline points, and the longest extent of the shape along a line perpendicular to it (the
    second caliper pair, laid across the lesion, not the width of its shadow: a 20 x 4 mm bar
    measures 4 mm across, not the 8 mm its tilted diagonal would give)."""
    from scipy.spatial import ConvexHull, QhullError

    points = np.concatenate(outlines)
    try:
        tips = points[ConvexHull(points).vertices]  # the longest chord joins hull vertices
    except (QhullError, ValueError):  # every point on one line
        tips = points
    gaps = tips[:, None, :] - tips[None, :, :]
    lengths = np.hypot(gaps[..., 0], gaps[..., 1])
    i, j = np.unravel_index(int(np.argmax(lengths)), lengths.shape)
    long_ax = float(lengths[i, j])
    if long_ax == 0.0:
        return 0.0, 0.0
    along = gaps[i, j] / long_ax
    across = np.array([-along[1], along[0]])
    return long_ax, _longest_cross_chord(outlines, along, across)


def _longest_cross_chord(outlines, along, across, block: int = 256) -> float:
    """The longest extent, across the shape, of a line perpendicular to ``along``.  Between two
    outline vertices the extent is a convex function of the line's position, so its maximum
    lies on a line through a vertex: those lines are all that is tried."""
    starts = np.concatenate([o[:-1] for o in outlines])
    ends = np.concatenate([o[1:] for o in outlines])
    s0, s1 = starts @ along, ends @ along
    w0, w1 = starts @ across, ends @ across
    vertex_s, vertex_w = np.concatenate([s0, s1]), np.concatenate([w0, w1])
    positions = np.unique(vertex_s)
    longest = 0.0
    for k in range(0, len(positions), block):  # bounded memory for a large outline
        s = positions[k:k + block, None]
        inside = (np.minimum(s0, s1) < s) & (s < np.maximum(s0, s1))  # edges the line crosses
        with np.errstate(divide="ignore", invalid="ignore"):
            w = w0 + (s - s0) / (s1 - s0) * (w1 - w0)
        on_line = vertex_s == s  # and the vertices it passes through
        hi = np.maximum(np.where(inside, w, -np.inf).max(1), np.where(on_line, vertex_w, -np.inf).max(1))
        lo = np.minimum(np.where(inside, w, np.inf).min(1), np.where(on_line, vertex_w, np.inf).min(1))
        longest = max(longest, float((hi - lo).max()))
    return longest


def mask_measurements(mask: np.ndarray, spacing) -> dict:
    """The size fields of a Finding measured on ``mask``: long and short axial axes, their mean,
    volume and the Lung-RADS size category.  As Lung-RADS v2022 asks, each axis is rounded to
    one decimal first and the mean is taken of the rounded axes, so a reader who recomputes the
    mean from the report gets the same number and category (6.1 and 5.8 mm: 6.0 mm, category 3)."""
    long_ax, short_ax = (round_half_up(v) for v in axial_axes(mask, spacing))
    mean_d = mean_diameter(long_ax, short_ax)
    return {"diameter_mm": long_ax, "short_axis_mm": short_ax,
            "mean_diameter_mm": mean_d,
            "volume_ml": round(float(mask.sum()) * float(np.prod(spacing)) / 1000.0, 4),
            "lung_rads": lung_rads_category(mean_d)}


def findings_from_probability(
    prob: np.ndarray,
    spacing,
    affine: np.ndarray | None = None,
    candidate_threshold: float = 0.1,
    mask_threshold: float = 0.5,
    score_threshold: float = 0.0,
    min_volume_mm3: float = 0.0,
    max_findings: int | None = None,
    field: np.ndarray | None = None,
    field_margin_mm: float = 0.0,
) -> list[Finding]:
    """Findings ranked by score (highest first) from a (z, y, x) probability map.

    ``field`` (bool, same shape): only candidates with a voxel within ``field_margin_mm`` of it
    are kept (e.g. the lung field: a juxta-pleural nodule reaches out of it, bowel gas does
    not come near it).  The whole candidate is kept, so a nodule is measured entire.
    """
    prob = np.asarray(prob, dtype=np.float32)
    if affine is None:
        affine = np.diag([*map(float, spacing), 1.0])
    affine = np.asarray(affine, dtype=float)
    lab, n = ndimage.label(prob >= candidate_threshold, structure=_FULL)
    found = []
    for i, box in enumerate(ndimage.find_objects(lab)):
        region = lab[box] == i + 1
        p = np.where(region, prob[box], 0.0)
        score = reported_score(p.max())
        if score < score_threshold:
            continue
        if field is not None and not _near_field(lab, i + 1, box, field, spacing, field_margin_mm):
            continue
        for part in split_at_mask(p, spacing, mask_threshold, min_volume_mm3):
            part_score = reported_score(part.max())
            if part_score < score_threshold:
                continue
            finding = measure_finding(part, box, part_score, spacing, affine, mask_threshold, min_volume_mm3)
            if finding is not None:
                found.append(finding)
    return rank_findings(found, max_findings)


SPLIT_MIN_MM3 = 20.0  # a piece of the mask this large (a 3.4 mm sphere) is a finding of its own


def split_at_mask(p: np.ndarray, spacing, mask_threshold: float, min_volume_mm3: float = 0.0) -> list[np.ndarray]:
    """``p`` (one candidate's probability in its box, 0 outside it) as one map per finding: one,
    unless its mask (``p >= mask_threshold``) falls into separate pieces of ``SPLIT_MIN_MM3`` or
    more (two nodules whose faint edges touch at the candidate level), when each such piece gets
    the voxels nearest it, smaller pieces going to the nearest large one.  The two were one finding,
    measured across both and centred in the gap: two 6.3 mm nodules read 10.6 mm, Lung-RADS 4A
    (found by an audit helper)."""
    cores, k = ndimage.label(p >= mask_threshold, structure=_FULL)
    if k < 2:
        return [p]
    voxel_mm3 = float(np.prod(spacing))
    sizes = np.bincount(cores.ravel(), minlength=k + 1)[1:] * voxel_mm3
    large = [j + 1 for j in range(k) if sizes[j] >= max(SPLIT_MIN_MM3, float(min_volume_mm3))]
    if len(large) < 2:
        return [p]
    seeds = np.where(np.isin(cores, large), cores, 0)
    # every voxel of the candidate to its nearest large piece (in mm)
    _, nearest = ndimage.distance_transform_edt(seeds == 0, sampling=[float(s) for s in spacing],
                                                return_indices=True)
    owner = seeds[tuple(nearest)]
    return [np.where(owner == j, p, 0.0) for j in large]


def organ_field(probs: np.ndarray, within, channel: int, body: np.ndarray | None = None,
                components: int | None = None) -> np.ndarray | None:
    """Where the organ classes ``within`` plus the lesion ``channel`` hold half the probability
    (a nodule is part of the lung field it sits in), inside ``body`` when given (see
    ``postprocess.body``: air under a blanket is not lung) unless that would remove more than
    ``body.ORGAN_MAX_LOSS`` of the field (the body mask failed, as segmentation's clean-up
    judges it); None when no organ class is named.  ``components`` (2 for lungs): only the
    field's largest connected components count, as segmentation keeps the lungs' two largest."""
    within = [int(i) for i in within]
    if not within:
        return None
    channels = within + [int(channel)]
    field = np.empty(probs.shape[1:], dtype=bool)
    # slab by slab: summing the channels of the whole volume at once copied them first, a
    # transient 1.9 GB on a 600-slice CT; the sums are the same, slab or whole
    for z in range(0, probs.shape[1], FIELD_SLAB):
        field[z:z + FIELD_SLAB] = probs[channels, z:z + FIELD_SLAB].sum(0) >= 0.5
    if body is not None:
        from .body import ORGAN_MAX_LOSS

        inside = field & body
        total = int(np.count_nonzero(field))
        # on a crop of a lung the body mask misses most of it: restricted, the field dropped
        # candidates inside the lung
        if total == 0 or (total - int(np.count_nonzero(inside))) / total <= ORGAN_MAX_LOSS:
            field = inside
    if components:
        from .components import keep_largest_components

        # On real CT the network also calls small pieces outside the lungs lung (stomach gas,
        # specks by the chin at the thoracic inlet), and a candidate beside them "reached" the
        # lung field (lung2: 4 of 26 findings scoring >= 0.5, docs/detection.md).
        field = keep_largest_components(field, int(components))
    return field


def card_field(probs: np.ndarray, extra: dict, channel: int, image: np.ndarray, spacing) -> np.ndarray | None:
    """The organ field a detector card (``extra``) asks candidates to reach: ``organ_field`` of
    ``extra["within_classes"]``, inside the body of ``image`` when ``extra["inside_body"]``, its
    ``extra["field_components"]`` largest components when given."""
    if not extra.get("within_classes"):
        return None
    from .body import body_mask

    body = body_mask(image, spacing) if extra.get("inside_body") else None
    return organ_field(probs, extra["within_classes"], channel, body, extra.get("field_components"))


def _near_field(lab, index, box, field, spacing, margin_mm) -> bool:
    """Whether component ``index`` of ``lab`` has a voxel within ``margin_mm`` of ``field``.

    Works in the component's box grown by the margin (per axis, in voxels of that axis), so
    thick slices are not dilated by the in-plane voxel count and the cost follows the candidates.
    """
    reach = [int(np.ceil(margin_mm / float(s))) for s in spacing]
    grown = tuple(slice(max(b.start - r, 0), b.stop + r) for b, r in zip(box, reach))
    local = field[grown]
    if not local.any():
        return False
    region = lab[grown] == index
    if margin_mm <= 0:
        return bool(local[region].any())
    dist = ndimage.distance_transform_edt(~local, sampling=[float(s) for s in spacing])
    return bool(dist[region].min() <= margin_mm)


def measure_finding(p: np.ndarray, box, score: float, spacing, affine, mask_threshold: float = 0.5,
                    min_volume_mm3: float = 0.0) -> Finding | None:
    """A Finding measured on ``p`` (the probability inside the component's ``box``, 0 outside
    the component) where it reaches ``mask_threshold``; None when smaller than ``min_volume_mm3``."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    peak = float(p.max())
    if peak <= 0:  # an empty region: "half its peak" was every voxel of the box
        return None
    mask = p >= mask_threshold
    if not mask.any():  # a faint candidate: measure it at half its own peak
        mask = p >= 0.5 * peak
    if mask.sum() * voxel_ml * 1000.0 < min_volume_mm3:
        return None
    offset = np.array([s.start for s in box], dtype=float)
    weights = np.where(mask, p, 0.0)
    centre = np.array(ndimage.center_of_mass(weights)) + offset
    return Finding(
        center_voxel=[round(float(c), 2) for c in centre],
        center_mm=[round(float(c), 2) for c in affine[:3, :3] @ centre + affine[:3, 3]],
        bbox_voxel=[[s.start for s in box], [s.stop for s in box]],
        score=reported_score(score),
        mask=mask,
        outline="network",
        **mask_measurements(mask, spacing),
    )


def findings_from_scored_components(candidates, prob: np.ndarray, scores, spacing, affine=None,
                                    mask_threshold: float = 0.5, score_threshold: float = 0.0,
                                    min_volume_mm3: float = 0.0, max_findings: int | None = None) -> list[Finding]:
    """Findings from candidates (``inference.candidates.Candidates``) that a second-stage
    classifier scored (``scores[i]``; negative: not scored, never reported).  Each finding is
    centred on its candidate and measured on the candidate's region: a nodule that the
    candidate map joined to its vessels is measured without them."""
    prob = np.asarray(prob, dtype=np.float32)
    affine = np.diag([*map(float, spacing), 1.0]) if affine is None else np.asarray(affine, dtype=float)
    found = []
    for i, box in enumerate(candidates.boxes):
        if scores[i] < 0 or reported_score(scores[i]) < score_threshold:
            continue
        p = np.where(candidates.region(i), prob[box], 0.0)
        finding = measure_finding(p, box, float(scores[i]), spacing, affine, mask_threshold, min_volume_mm3)
        if finding is None:
            continue
        centre = np.asarray(candidates.centres[i], dtype=float)
        finding.center_voxel = [round(float(c), 2) for c in centre]
        finding.center_mm = [round(float(c), 2) for c in affine[:3, :3] @ centre + affine[:3, 3]]
        found.append(finding)
    return rank_findings(found, max_findings)


def reaches_field(labels: np.ndarray, field: np.ndarray, spacing, margin_mm: float) -> np.ndarray:
    """Bool per component of ``labels`` (1..n): whether it comes within ``margin_mm`` of ``field``."""
    boxes = ndimage.find_objects(labels)
    return np.array([box is not None and _near_field(labels, i + 1, box, field, spacing, margin_mm)
                     for i, box in enumerate(boxes)], dtype=bool)


def rank_findings(found: list[Finding], max_findings: int | None = None) -> list[Finding]:
    """Highest score first, at most ``max_findings``; ``label`` becomes the 1-based rank.

    Equal scores go larger volume first: a segmentation network's softmax saturates, so
    several findings can share a peak of 1.0 (to the 4 decimals reported), and between
    equally confident findings the one with more voxels behind it is the better supported.
    """
    found = sorted(found, key=lambda f: (-f.score, -(f.volume_ml or 0.0)))
    if max_findings is not None:
        found = found[:max_findings]
    for k, f in enumerate(found, start=1):
        f.label = k
    return found


def findings_mask(findings: list[Finding], shape) -> np.ndarray:
    """One label per finding (its rank), for a Labels layer of per-finding masks."""
    out = np.zeros(shape, dtype=np.uint16)
    for f in findings:
        (z0, y0, x0), (z1, y1, x1) = f.bbox_voxel
        view = out[z0:z1, y0:y1, x0:x1]
        view[f.mask & (view == 0)] = f.label
    return out
