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
    """Long and short axis (mm) on the axial slice with the largest cross-section."""
    from skimage.measure import regionprops

    areas = mask.reshape(mask.shape[0], -1).sum(1)
    sl = mask[int(np.argmax(areas))]
    pixel = float(np.sqrt(spacing[1] * spacing[2]))
    props = regionprops(sl.astype(np.uint8))
    if not props:
        return 0.0, 0.0
    p = props[0]
    # Ellipse-fit axes measure a disc of diameter d as ~d; a lone pixel would read 0, so
    # never report less than one pixel.
    long_ax = max(p.axis_major_length, 1.0) * pixel
    short_ax = max(p.axis_minor_length, 1.0) * pixel
    return float(long_ax), float(short_ax)


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
        score = float(p.max())
        if score < score_threshold:
            continue
        if field is not None and not _near_field(lab, i + 1, box, field, spacing, field_margin_mm):
            continue
        finding = measure_finding(p, box, score, spacing, affine, mask_threshold, min_volume_mm3)
        if finding is not None:
            found.append(finding)
    return rank_findings(found, max_findings)


def organ_field(probs: np.ndarray, within, channel: int, body: np.ndarray | None = None) -> np.ndarray | None:
    """Where the organ classes ``within`` plus the lesion ``channel`` hold half the probability
    (a nodule is part of the lung field it sits in), inside ``body`` when given (see
    ``postprocess.body``: air under a blanket is not lung); None when no organ class is named."""
    within = [int(i) for i in within]
    if not within:
        return None
    channels = within + [int(channel)]
    field = np.empty(probs.shape[1:], dtype=bool)
    # slab by slab: summing the channels of the whole volume at once copied them first, a
    # transient 1.9 GB on a 600-slice CT; the sums are the same, slab or whole
    for z in range(0, probs.shape[1], FIELD_SLAB):
        field[z:z + FIELD_SLAB] = probs[channels, z:z + FIELD_SLAB].sum(0) >= 0.5
    return field & body if body is not None else field


def card_field(probs: np.ndarray, extra: dict, channel: int, image: np.ndarray, spacing) -> np.ndarray | None:
    """The organ field a detector card (``extra``) asks candidates to reach: ``organ_field`` of
    ``extra["within_classes"]``, inside the body of ``image`` when ``extra["inside_body"]``."""
    if not extra.get("within_classes"):
        return None
    from .body import body_mask

    body = body_mask(image, spacing) if extra.get("inside_body") else None
    return organ_field(probs, extra["within_classes"], channel, body)


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
        score=round(float(score), 4),
        mask=mask,
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
        if scores[i] < max(score_threshold, 0.0):
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
