"""FROC for lesion detection, with MONAI's FROC functions.

Each true lesion is a labelled region of an evaluation mask; a finding is a hit when its
centre falls inside a region (LUNA16-style: within the lesion's radius of its centre; where two
lesions' balls overlap, the relatively nearer lesion's).  On the voxel grid: the regions are the
voxel centres within the radius (at least 2 mm; a ball too thin to hold one keeps the voxel its
centre rounds to), and a finding's centre is rounded to its voxel before it is looked up, so the
distance allowed is the radius give or take half a voxel (on 2.5 mm slices a finding 1.75 mm off
a 4 mm nodule's centre can miss, and one 2.75 mm off can hit).
"""

from __future__ import annotations

import numpy as np

FROC_THRESHOLDS = (0.125, 0.25, 0.5, 1, 2, 4, 8)


def target_mask(shape, spacing, centres_voxel, diameters_mm, min_radius_mm: float = 2.0) -> np.ndarray:
    """Label i+1 = ball of the lesion's radius (at least ``min_radius_mm``) around centre i.
    Where two balls overlap, a voxel belongs to the lesion it is relatively nearer (distance over
    radius): it went to the first lesion listed, and a finding on the second one's centre, inside
    the first's ball, was scored as a hit on the first and the second as missed."""
    mask = np.zeros(shape, dtype=np.int32)
    sp = np.asarray(spacing, dtype=float)
    centres = [np.asarray(c, dtype=float) for c in centres_voxel]
    radii = [max(float(d) / 2.0, min_radius_mm) for d in diameters_mm]
    for i, (c, r) in enumerate(zip(centres, radii)):
        lo = np.maximum(np.floor(c - r / sp).astype(int), 0)
        hi = np.minimum(np.ceil(c + r / sp).astype(int) + 1, shape)
        grid = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
        near = np.sqrt(sum(((g - ci) * s) ** 2 for g, ci, s in zip(grid, c, sp))) / r
        view = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
        inside = near <= 1.0
        for j in np.unique(view[inside & (view != 0)]):  # earlier lesions' balls: the relatively nearer keeps it
            theirs = np.sqrt(sum(((g - cj) * s) ** 2 for g, cj, s in zip(grid, centres[j - 1], sp))) / radii[j - 1]
            inside &= (view != j) | (near < theirs)
        view[inside] = i + 1
    for i, c in enumerate(centres):
        # a ball thinner than the slices between two of them holds no voxel centre: the lesion then
        # went uncounted (MONAI counts the labels present) and a finding on it was a false positive;
        # it keeps at least the voxel its centre rounds to, where a finding on it is looked up
        at = tuple(np.clip(np.rint(c).astype(int), 0, np.array(shape) - 1))
        lo = np.maximum(np.floor(c - radii[i] / sp).astype(int), 0)
        hi = np.minimum(np.ceil(c + radii[i] / sp).astype(int) + 1, shape)
        if not np.any(mask[tuple(slice(a, b) for a, b in zip(lo, hi))] == i + 1):
            mask[at] = i + 1
    return mask


def fp_tp_scores(cases) -> tuple[np.ndarray, np.ndarray, int, int]:
    """MONAI's per-scan matching, pooled: (false-positive scores, each lesion's best hit score
    (0 where it is missed), number of lesions, number of scans).  ``cases`` as for ``froc``."""
    from monai.metrics import compute_fp_tp_probs_nd

    fps, tps, n_targets, n_images = [], [], 0, 0
    for scores, centres, mask, exclude in cases:
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        coords = np.clip(np.rint(np.asarray(centres, dtype=float)).astype(int).reshape(-1, 3), 0, np.array(mask.shape) - 1)
        if mask.max() == 0:  # MONAI needs at least one label: a scan without lesions adds only FPs
            fps.append(scores)
        else:
            fp, tp, n = compute_fp_tp_probs_nd(scores, coords, mask, labels_to_exclude=list(exclude or []))
            keep = [i for i in range(int(mask.max())) if (i + 1) not in set(exclude or [])]
            fps.append(np.asarray(fp)), tps.append(np.asarray(tp)[keep])
            n_targets += n
        n_images += 1
    fp_all = np.concatenate(fps) if fps else np.zeros(0, np.float32)
    tp_all = np.concatenate(tps) if tps else np.zeros(0, np.float32)
    return fp_all, tp_all, int(n_targets), n_images


def froc(cases, thresholds=FROC_THRESHOLDS) -> dict:
    """FROC over scans.

    ``cases``: iterable of (scores (n,), centres_voxel (n, 3), evaluation mask, labels_to_exclude).
    Returns sensitivities at ``thresholds`` false positives per scan and their mean.
    """
    from monai.metrics import compute_froc_curve_data, compute_froc_score

    fp_all, tp_all, n_targets, n_images = fp_tp_scores(cases)
    if n_targets == 0:
        return {"sensitivity": {t: float("nan") for t in thresholds}, "mean": float("nan"), "targets": 0, "scans": n_images}
    # MONAI's curve starts one threshold above the lowest score of all, taking it to be a missed
    # lesion's 0; with every lesion hit it dropped a real score instead, and a perfect detector
    # without false positives scored 0.  A 0 among the false positives is that lowest score
    # (it counts at no threshold the curve uses), so every real score is a threshold.
    fps_per_image, sens = compute_froc_curve_data(np.append(fp_all, np.float32(0.0)), tp_all, n_targets, n_images)
    at = np.asarray(compute_froc_score(fps_per_image, sens, eval_thresholds=tuple(thresholds)))
    # compute_froc_score returns the mean; recompute each point the same way MONAI does.
    points = {t: float(np.interp(t, fps_per_image[::-1], sens[::-1])) for t in thresholds}
    return {"sensitivity": points, "mean": float(np.mean(list(points.values()))), "monai_mean": float(at),
            "targets": int(n_targets), "scans": n_images}


def operating_point(cases, fp_per_scan: float = 1.0, decimals: int = 2) -> dict:
    """The lowest score threshold, rounded up to ``decimals``, at which findings scoring at least
    that threshold make at most ``fp_per_scan`` false positives per scan on ``cases`` (as for
    ``froc``), with the sensitivity and false-positive rate reached there.

    Rounding up keeps the budget (a rounded threshold only drops findings) and gives a value a
    person can type into a score box.  A missed lesion (MONAI's tp score 0) never counts as found."""
    fp_all, tp_all, n_targets, n_images = fp_tp_scores(cases)
    if n_images == 0:
        raise ValueError("no scans to choose an operating point on")
    allowed = int(np.floor(fp_per_scan * n_images + 1e-9))
    step = 10.0 ** -decimals
    ranked = np.sort(fp_all)[::-1]
    if len(ranked) <= allowed:
        threshold = step  # the budget holds for every finding: keep all but those scoring ~0
    else:
        # strictly above the first false positive over the budget (its float32 score read to 6
        # decimals, so that a score stored as 0.8999999762 counts as the 0.9 it stands for)
        over = round(float(ranked[allowed]), 6)
        at_top = int(np.sum(fp_all >= 1.0))  # what a threshold of 1.0 still shows (as _at counts)
        if over >= 1.0 and at_top > allowed:  # capping the threshold at 1 would break the budget silently
            raise ValueError(f"no score threshold keeps the false positives within {fp_per_scan:g} per scan: "
                             f"{at_top} false positive(s) on {n_images} scan(s) score 1.0, the highest score there is")
        threshold = min(np.ceil((over + 1e-9) / step) * step, 1.0)
    threshold = round(float(threshold), decimals)
    return {**_at(fp_all, tp_all, n_targets, n_images, threshold), "fp_per_scan_budget": float(fp_per_scan)}


def at_threshold(cases, threshold: float) -> dict:
    """Sensitivity and false positives per scan of the findings scoring at least ``threshold``
    (``cases`` as for ``froc``): what a reader is shown at that score threshold."""
    return _at(*fp_tp_scores(cases), float(threshold))


def _at(fp_all, tp_all, n_targets: int, n_images: int, threshold: float) -> dict:
    found = int(np.sum((tp_all >= threshold) & (tp_all > 0)))
    return {"score_threshold": threshold, "fp_per_scan": float(np.sum(fp_all >= threshold)) / max(n_images, 1),
            "sensitivity": found / n_targets if n_targets else float("nan"),
            "lesions_found": found, "lesions": n_targets, "scans": n_images}


def measurement_rows(reference: np.ndarray, target: np.ndarray, found, spacing, nominal_mm=None) -> list[dict]:
    """How the found lesions are measured: for each lesion ``i`` of ``target`` (``target_mask``)
    that a finding is centred in, its best-scoring such finding's mean axial diameter, volume and
    Lung-RADS size category beside those of the reference mask, measured with the findings' own
    functions.  ``reference``: bool mask of every lesion voxel; lesion ``i``'s reference is every
    connected piece of it reaching into target ``i`` (spicules and a ground-glass rim count).
    ``nominal_mm``: optional nominal diameters, reported beside.  ``outline``: what the
    finding was measured on (``Finding.outline``)."""
    from scipy import ndimage

    from ..postprocess.findings import mask_measurements

    voxel_ml = float(np.prod(spacing)) / 1000.0
    pieces, _ = ndimage.label(reference, ndimage.generate_binary_structure(3, 3))
    # boxes once: each lesion is then read inside its own box, not over the whole volume
    target_boxes, piece_boxes = ndimage.find_objects(target), ndimage.find_objects(pieces)
    shape = np.array(target.shape)
    rows = []
    for i, tbox in enumerate(target_boxes, start=1):
        if tbox is None:
            continue
        hits = [f for f in found
                if target[tuple(np.clip(np.rint(f.center_voxel).astype(int), 0, shape - 1))] == i]
        ids = np.unique(pieces[tbox][target[tbox] == i])
        ids = ids[ids > 0]
        if not hits or not len(ids):
            continue
        best = max(hits, key=lambda f: f.score)
        union = tuple(slice(min(piece_boxes[j - 1][k].start for j in ids), max(piece_boxes[j - 1][k].stop for j in ids))
                      for k in range(3))
        ref = np.isin(pieces[union], ids)
        ref = ref[ndimage.find_objects(ref.astype(np.uint8))[0]]
        # the reference measured as a finding is (each axis rounded first, then their mean): the
        # unrounded mean put the finding's own mask 0.055 mm and a size category off itself
        ref_sizes = mask_measurements(ref, spacing)
        rows.append({"lesion": i, "nominal_mm": None if nominal_mm is None else float(nominal_mm[i - 1]),
                     "ref_diameter_mm": ref_sizes["mean_diameter_mm"], "diameter_mm": float(best.mean_diameter_mm),
                     "ref_ml": float(ref.sum()) * voxel_ml, "volume_ml": float(best.volume_ml),
                     "ref_category": ref_sizes["lung_rads"], "category": best.lung_rads,
                     "outline": best.outline})
    return rows


def measurement_errors(rows) -> dict:
    """Medians over ``measurement_rows``: absolute diameter error (mm), absolute and signed volume
    error (% of the reference), and the Lung-RADS categories that agree."""
    if not rows:
        return {"n": 0, "diameter_abs_mm": float("nan"), "volume_abs_pct": float("nan"),
                "volume_bias_pct": float("nan"), "category_agree": 0}
    dv = [100.0 * (r["volume_ml"] - r["ref_ml"]) / r["ref_ml"] for r in rows]
    dd = [abs(r["diameter_mm"] - r["ref_diameter_mm"]) for r in rows]
    return {"n": len(rows), "diameter_abs_mm": float(np.median(dd)),
            "volume_abs_pct": float(np.median(np.abs(dv))), "volume_bias_pct": float(np.median(dv)),
            "category_agree": int(sum(r["category"] == r["ref_category"] for r in rows))}
