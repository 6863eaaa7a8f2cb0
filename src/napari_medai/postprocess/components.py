"""Connected-component clean-up of label maps (scipy.ndimage; numpy in, numpy out)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from .refine import outline_kind

_FULL = ndimage.generate_binary_structure(3, 3)  # 26-connectivity: thin vessels stay connected
SLAB = 16  # leading-axis slices per step of label_sizes / lookup


def label_sizes(labels: np.ndarray, count: int | None = None) -> np.ndarray:
    """``np.bincount(labels.ravel(), minlength=count + 1)``, slab by slab along the first axis.

    bincount first casts its input to int64, 8 bytes a voxel: 1.26 GB on a 600-slice CT when
    done at once.  The counts are the same."""
    labels = np.atleast_1d(np.asarray(labels))
    if count is None:
        count = int(labels.max()) if labels.size else 0
    sizes = np.zeros(int(count) + 1, dtype=np.int64)
    for z in range(0, labels.shape[0], SLAB):
        sizes += np.bincount(labels[z:z + SLAB].ravel(), minlength=len(sizes))
    return sizes


def lookup(table: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``table[labels]``, slab by slab (indexing with an int32 map casts it to int64 first)."""
    out = np.empty(labels.shape, dtype=table.dtype)
    for z in range(0, labels.shape[0], SLAB):
        out[z:z + SLAB] = table[labels[z:z + SLAB]]
    return out


def keep_largest_components(mask: np.ndarray, n: int = 1, min_ratio: float = 0.05) -> np.ndarray:
    """Keep the ``n`` largest components; those under ``min_ratio`` of the largest go too.

    For lungs ``n=2``: left and right lung, unless they touch (then one component).
    """
    lab, count = ndimage.label(mask, structure=_FULL)
    if count <= 1:
        return mask.astype(bool)
    sizes = label_sizes(lab, count)[1:]
    order = np.argsort(sizes)[::-1][:n]
    keep = [i + 1 for i in order if sizes[i] >= min_ratio * sizes[order[0]]]
    return np.isin(lab, keep)


def remove_small_components(mask: np.ndarray, min_volume_mm3: float, spacing) -> np.ndarray:
    """Drop components smaller than ``min_volume_mm3`` (physical size, not voxels)."""
    if min_volume_mm3 <= 0:
        return mask.astype(bool)
    lab, count = ndimage.label(mask, structure=_FULL)
    if count == 0:
        return mask.astype(bool)
    voxel_mm3 = float(np.prod(spacing))
    sizes = label_sizes(lab, count) * voxel_mm3
    keep = sizes >= min_volume_mm3
    keep[0] = False
    return lookup(keep, lab)


def drop_components_away_from(mask: np.ndarray, host: np.ndarray) -> np.ndarray:
    """Keep the components of ``mask`` that touch ``host`` (26-neighbourhood).

    A lung nodule lies in, or against, the lung field: a "nodule" component with no lung
    voxel next to it (outside air, bowel gas, the table) is not one.  Each component is
    tested inside its own bounding box, so the cost follows the lesions, not the volume.
    """
    lab, count = ndimage.label(mask, structure=_FULL)
    keep = np.zeros(count + 1, dtype=bool)
    for i, box in enumerate(ndimage.find_objects(lab), start=1):
        grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        near = ndimage.binary_dilation(lab[grown] == i, structure=_FULL)
        keep[i] = bool(host[grown][near].any())
    return lookup(keep, lab)


def clean_with_card(labels, lesion_prob, spacing, extra: dict, min_lesion_mm3: float | None = None,
                    lesion_threshold: float | None = None, image: np.ndarray | None = None,
                    body: np.ndarray | None = None, lesion_refine: dict | bool | None = None,
                    lesion_confident: float | bool | None = None, refined: np.ndarray | None = None) -> np.ndarray:
    """The post-processing a model card declares in ``extra`` (see ``api.segment``), applied to
    argmax ``labels``; ``lesion_prob`` is the probability of the card's first lesion class
    (only that channel: callers need not keep every class in memory; None without one).
    The keyword arguments override the card.
    ``image`` (the CT in HU, on the labels' grid) enables ``extra["inside_body"]``; ``body``
    passes its body mask instead (callers cleaning one scan several times compute it once).
    ``extra["lesion_refine"]`` (``{"reach_mm", "level"}``, see ``postprocess.refine``) moves the
    first lesion class's edges to the image's half-maximum contour; it needs ``image``.
    ``lesion_refine``: None takes the card's, False turns it off, a dict replaces it.
    ``extra["lesion_confident"]`` (a probability q) limits both the lower threshold and the
    refinement to lesion components that hold a voxel of probability >= q: a component the
    network is unsure of everywhere keeps its argmax outline.  ``lesion_confident``: None takes
    the card's, False turns it off, a number replaces it.  ``refined`` (boolean, the labels'
    shape) is marked where the refinement moved a component's edge (``refine_lesion_edges``)."""
    lesions = tuple(int(i) for i in extra.get("lesions", ()))
    if lesion_threshold is None:
        lesion_threshold = extra.get("lesion_threshold")
    if lesion_confident is None:
        lesion_confident = extra.get("lesion_confident")
    confident = _confidence_level(lesion_confident)  # checked even where no probability is given
    if lesion_prob is None:
        confident = None
    if lesions and lesion_threshold is not None and lesion_prob is not None:
        labels = relabel_above(labels, lesion_prob, lesions[0], float(lesion_threshold), confident)
    inside = inside_body_classes(extra)
    if inside and (image is not None or body is not None):
        labels = _inside_body(labels, image, spacing, inside, lesions, body)
    air = extra.get("extrapulmonary_air")
    if air and image is not None:  # before the organs keep their largest components: what it
        from .airway import drop_extrapulmonary_air  # cuts off is then dropped with them

        labels = drop_extrapulmonary_air(labels, image, spacing, **air)
    if min_lesion_mm3 is None:
        min_lesion_mm3 = float(extra.get("min_lesion_mm3", 0.0))
    organs = {int(k): int(v) for k, v in extra.get("organs", {}).items()}
    hosts = tuple(int(i) for i in extra.get("lesion_hosts", ()))
    labels = clean_segmentation(labels, spacing, organs, lesions, min_lesion_mm3, hosts)
    if lesion_refine is None:
        lesion_refine = extra.get("lesion_refine")
    if lesions and lesion_refine and image is not None:
        from .refine import refine_lesion_edges

        only = lesion_prob >= confident if confident is not None else None
        labels = refine_lesion_edges(labels, image, spacing, lesions[0], hosts, **lesion_refine, only=only,
                                     refined=refined)
        # a refined edge can split a lesion: a piece under the minimum size goes back to the host it
        # lies in (a 2 mm³ speck was reported as a nodule of its own; found by an audit helper)
        box = bounding_box(labels == lesions[0])
        if box is not None and min_lesion_mm3 > 0:
            m = labels[box] == lesions[0]
            labels[box][m & ~remove_small_components(m, min_lesion_mm3, spacing)] = hosts[0] if hosts else 0
    return labels


def _confidence_level(value) -> float | None:
    """``lesion_confident`` as a probability in (0, 1], or None (off); anything else is refused
    (a card is a text file: a typo must not silently turn the limit off)."""
    if value is None or value is False:
        return None
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not number or not 0.0 < float(value) <= 1.0:
        from ..errors import ModelError

        raise ModelError(f"lesion_confident must be a probability in (0, 1] (or false: off), got {value!r}")
    return float(value)


def inside_body_classes(extra: dict) -> list[int]:
    """The classes ``extra["inside_body"]`` keeps inside the patient's body.  Segmentation cards
    list them (``[1, 2]``); a detector card says ``true``: its organ field, the classes
    ``within_classes`` and the probability channel, lies inside the body (``findings.card_field``),
    so the same classes are kept inside it when such a card segments."""
    inside = extra.get("inside_body", ())
    if isinstance(inside, bool):
        if not inside:
            return []
        channel = extra.get("probability_channel")
        return [int(i) for i in extra.get("within_classes", ())] + ([int(channel)] if channel is not None else [])
    return [int(i) for i in inside]


def _inside_body(labels, image, spacing, classes, lesions, body=None):
    """Classes that cannot lie outside the patient (lungs, nodules) lose their voxels there.
    An organ class that would lose most of itself is left alone (the body mask failed), and
    then so are the lesion classes."""
    from .body import ORGAN_MAX_LOSS, body_mask, keep_inside_body

    if body is None:
        body = body_mask(image, spacing)
    organs = [c for c in classes if c not in lesions]
    labels, report = keep_inside_body(labels, body, organs, max_loss=ORGAN_MAX_LOSS)
    if any(lost is None for lost in report.values()):
        # a mask that fails the lung fails the nodules in it too: on a crop of a lung it cut a
        # 1186-voxel nodule to 10 voxels while the lung around it was kept whole
        return labels
    labels, _ = keep_inside_body(labels, body, [c for c in classes if c in lesions])
    return labels


def relabel_above(labels: np.ndarray, prob: np.ndarray, cls: int, threshold: float,
                  confident: float | None = None) -> np.ndarray:
    """``labels`` with every voxel where ``prob >= threshold`` set to ``cls`` (a new array);
    with ``confident``, only in the components of ``prob >= threshold`` that reach it somewhere
    (hysteresis: ``confident_components``).

    For a rare lesion class the argmax is too strict: a faint nodule can be the likeliest
    lesion voxel at p = 0.3 while background still wins.  At 0.5 or above nothing changes
    that the argmax would not already give (barring ties), so 0.5 means "argmax only".
    """
    out = np.array(labels, copy=True)
    if threshold < 0.5:
        above = prob >= threshold
        if confident is not None:
            above = confident_components(above, prob, confident)
        out[above] = cls
    return out


def confident_components(mask: np.ndarray, prob: np.ndarray, level: float) -> np.ndarray:
    """The 26-connected components of ``mask`` that hold a voxel of ``prob >= level``.

    Why: on the validation phantoms the true nodules the network finds peak at p = 1.00 (one
    48 mm³ piece of a small nodule on 5 mm slices at 0.85), while its five components that
    overlap no nodule peak at 0.50-0.88 (docs/segmentation.md); a rule that enlarges nodules (a
    lower threshold, edge refinement) should enlarge the former and leave the latter as the
    argmax drew them.  On lung1 the unlimited refinement grew the hilar false positives along
    their vessels."""
    out = np.zeros(mask.shape, dtype=bool)
    box = bounding_box(mask)
    if box is None:
        return out
    lab, n = ndimage.label(mask[box], structure=_FULL)
    if n == 0:
        return out
    # the components a voxel of p >= level lies in: ndimage.maximum per component sorted every
    # voxel of the box by label, 4 s of a 300 x 512 x 512 CT's clean-up at threshold 0.2
    sure = np.zeros(n + 1, dtype=bool)
    sure[np.unique(lab[prob[box] >= level])] = True
    sure[0] = False
    out[box] = lookup(sure, lab)
    return out


def clean_segmentation(
    labels: np.ndarray,
    spacing,
    organs: dict[int, int] | None = None,
    lesions: tuple[int, ...] = (),
    min_lesion_mm3: float = 0.0,
    lesion_hosts: tuple[int, ...] = (),
) -> np.ndarray:
    """Largest connected components for organ classes, a minimum size for lesion classes.

    ``organs`` maps class index -> number of components to keep (e.g. ``{1: 2}`` for lungs).
    ``lesion_hosts``: lesion components must touch one of these classes (after the organ
    clean-up), e.g. ``(1,)``: a lung nodule touches the lung field.
    Removed voxels become background.  Returns a new array; the input is not modified.
    """
    out = np.array(labels, copy=True)
    # Each step labels the components of one class inside that class's bounding box (grown by
    # a voxel where the lesion's neighbours are read): the same components as in the whole
    # volume, at the cost of the box. A 512 x 512 x 300 CT's nodules fill a few boxes of
    # thousands of voxels; labelling their mask in the whole volume took about a second a step.
    for cls, n in (organs or {}).items():
        box = bounding_box(out == cls)
        if box is not None:
            m = out[box] == cls
            out[box][m & ~keep_largest_components(m, n)] = 0
    for cls in lesions:
        box = bounding_box(out == cls)
        if box is not None:
            m = out[box] == cls
            out[box][m & ~remove_small_components(m, min_lesion_mm3, spacing)] = 0
    if lesion_hosts and lesions:
        for cls in lesions:
            box = bounding_box(out == cls, margin=1)
            if box is not None:
                m = out[box] == cls
                out[box][m & ~drop_components_away_from(m, np.isin(out[box], lesion_hosts))] = 0
    return out


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """The smallest box holding every True voxel of ``mask``, grown by ``margin`` voxels on
    each side within the array; None for an empty mask."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def merge_confirmed(labels: np.ndarray, lesion: int, candidates, scores: np.ndarray,
                    threshold: float, host: int = 0, drop_rejected: bool = True) -> np.ndarray:
    """A lesion class revised by a second-stage classifier (a new array).

    ``candidates``: ``inference.candidates.Candidates`` (each with its region), ``scores``: the
    classifier's score per candidate (negative: not scored).  Candidates that score at least
    ``threshold`` and overlap no lesion component of ``labels`` are added with their regions
    (the small nodules the first pass missed).  With ``drop_rejected``, a lesion component that
    overlaps rejected candidates and no confirmed one becomes ``host`` (the organ it lies in):
    the vessel segments the first pass called nodules.  A lesion no candidate covers is kept:
    there is no second opinion on it.
    """
    out = np.array(labels, copy=True)
    scores = np.asarray(scores, dtype=float)
    accepted = scores >= threshold
    confirmed = candidates.paint(accepted)
    lesion_mask = out == lesion
    if drop_rejected and lesion_mask.any():
        rejected = candidates.paint((scores >= 0) & ~accepted)
        lab, n = ndimage.label(lesion_mask, _FULL)
        index = np.arange(1, n + 1)
        has_confirmed = np.asarray(ndimage.maximum(confirmed, lab, index), bool).reshape(n)
        has_rejected = np.asarray(ndimage.maximum(rejected, lab, index), bool).reshape(n)
        drop = np.concatenate([[False], has_rejected & ~has_confirmed])
        out[lookup(drop, lab)] = host
        lesion_mask = out == lesion
    for i in np.flatnonzero(accepted):
        box, region = candidates.boxes[i], candidates.region(int(i))
        if not lesion_mask[box][region].any():
            out[box][region] = lesion
    return out


def lesion_outlines(labels: np.ndarray, lesion_prob: np.ndarray | None, spacing, lesion: int,
                    refined: np.ndarray | None = None) -> list[dict]:
    """Each 26-connected component of class ``lesion``, largest first, with the outline it has:
    ``"half-maximum"`` where the edge refinement moved it to the image's contour (``refined``, as
    ``clean_with_card`` marks it), ``"network"`` where it kept the network's outline, and
    ``"mixed"`` for a component made of both (a refined nodule grown into an unrefined neighbour).
    A reader comparing volumes across visits needs to know: on lung1 the two outlines of the
    nodule differ by 3.5 % (docs/segmentation.md).  Each row: ``center_voxel`` (z, y, x),
    ``voxels``, ``volume_ml``, ``peak_probability`` (None without ``lesion_prob``) and ``outline``."""
    found = lesion_components(labels, lesion)
    if found is None:
        return []
    box, lab, n = found
    index = np.arange(1, n + 1)
    centres = _centres(lab, n, box)
    sizes = label_sizes(lab, n)[1:]
    peaks = ([None] * n if lesion_prob is None else
             np.asarray(ndimage.maximum(lesion_prob[box], lab, index), dtype=float).reshape(n))
    # refined voxels per component: counted over the refined voxels only (no second label map)
    moved = np.zeros(n, dtype=np.int64) if refined is None else np.bincount(lab[refined[box]], minlength=n + 1)[1:]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    for centre, size, peak, done in zip(centres, sizes, peaks, moved):
        outline = outline_kind(int(done), int(size))
        rows.append({"center_voxel": centre, "voxels": int(size), "volume_ml": round(float(size) * voxel_ml, 4),
                     "peak_probability": None if peak is None else round(float(peak), 4), "outline": outline})
    return sorted(rows, key=lambda row: -row["voxels"])


def lesion_components(labels: np.ndarray, lesion: int) -> tuple[tuple[slice, ...], np.ndarray, int] | None:
    """(box, component labels inside it, count) of class ``lesion``'s 26-connected components,
    labelled inside their bounding box only (a few nodules in a 512 x 512 x 300 map); None when
    the class is absent.  ``lesion_outlines`` and the screening report number them alike."""
    mask = labels == lesion
    box = bounding_box(mask)
    if box is None:
        return None
    lab, n = ndimage.label(mask[box], structure=_FULL)
    return box, lab, n


def _centres(lab: np.ndarray, n: int, box) -> list[list[float]]:
    """Each component's centre of mass (z, y, x) on the whole grid, to 0.1 voxel."""
    centres = ndimage.center_of_mass(lab > 0, lab, np.arange(1, n + 1))
    return [[round(float(c) + b.start, 1) for c, b in zip(centre, box)] for centre in centres]


def outline_per_component(lab: np.ndarray, n: int, box, outlines: list[dict]) -> list[str]:
    """The outline kind of each component of ``lesion_components`` (index 0: background, ""),
    read from ``lesion_outlines``' rows for the same label map (matched by voxel count and
    centre, which identify a component); "" for a component no row describes."""
    kinds = {(row["voxels"], tuple(row["center_voxel"])): row["outline"] for row in outlines}
    sizes = label_sizes(lab, n)[1:]
    return ["", *(kinds.get((int(size), tuple(centre)), "")
                  for size, centre in zip(sizes, _centres(lab, n, box)))]
