"""Box detectors (MONAI RetinaNet-style): a network that returns boxes, labels and scores.

MONAI's detection bundles (e.g. the Model Zoo's ``lung_nodule_ct_detection``) wrap their
RetinaNet in a ``RetinaNetDetector``; in eval mode it takes a (B, C, *spatial) tensor or a
list of (C, *spatial) tensors and returns, per image, a dict of

* boxes: (N, 6) in the network's voxel grid (MONAI box mode, ``xyzxyz`` by default: the
  corners along the network's array axes 0, 1, 2, in voxel-edge coordinates: voxel ``i``
  spans ``[i, i + 1)``, as in ``monai.data.box_utils`` with ``TO_REMOVE = 0``),
* labels: (N,) class of each box (not used: a finding has no class; single-class
  detectors such as the lung-nodule bundle are what this path is for), and
* scores: (N,) confidence.

:func:`run_box_detector` prepares the volume exactly as ``inference.run_model`` does
(resample to the card's spacing, intensity window, re-orient to ``card.axes``), calls the
network once on the whole volume (a RetinaNetDetector with a sliding-window inferer set by
the bundle's ``detector_ops`` uses it), maps the boxes back to the input's voxel grid and
turns each into a :class:`~napari_medai.postprocess.Finding`.

What a box cannot tell, and how it is filled in:

* diameter: the long and short axes are the box's in-plane (y, x) extents in mm, so the
  Lung-RADS size is the mean of the two (a box is a coarse measure; a segmentation-based
  detector measures the nodule itself);
* volume and mask: the ellipsoid inscribed in the box (volume ``pi/6 * dz * dy * dx``),
  voxelised on the input grid for the per-finding mask layer.

Card ``extra`` keys (all optional): ``box_mode`` (a MONAI box mode such as ``"cccwhd"``),
``box_key`` / ``score_key`` (dict keys of the network's output).
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import numpy as np
import torch

from ..errors import Cancelled, InputError, ModelError
from ..postprocess.findings import Finding, lung_rads_category, mean_diameter, rank_findings, reported_score, round_half_up

BOX_KEYS = ("boxes", "box", "pred_boxes")
SCORE_KEYS = ("scores", "labels_scores", "label_scores", "box_scores", "pred_scores")


def run_box_detector(
    loaded,
    volume: np.ndarray,
    spacing,
    affine: np.ndarray | None = None,
    score_threshold: float = 0.0,
    max_findings: int | None = None,
    settings=None,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
) -> list[Finding]:
    """Findings from a box detector, ranked by score (highest first).

    ``volume`` (z, y, x) with its ``spacing`` (mm); ``affine`` maps voxels to world mm
    (default: spacing on the diagonal).  ``progress`` gets (0, 1) before and (1, 1) after
    the single network call; ``cancel`` is checked around it.
    """
    from ..inference import CancelToken, InferenceSettings

    settings = InferenceSettings.of(settings)
    settings.validate()
    cancel = cancel or CancelToken()
    card = loaded.card
    if card.spatial_dims != 3:
        raise ModelError(f"box detector '{card.name}' must be a 3D model (spatial_dims 3)")
    if settings.tta in ("mirror", "mirror-lesions"):
        raise InputError(f"test-time mirroring averages probability maps; '{card.name}' returns boxes: "
                         "set it to auto or off")
    if progress is not None:
        progress(0, 1)
    cancel.raise_if_cancelled()
    image, spacing, work_shape, device, precision = _prepare(loaded, volume, spacing, settings)
    raw = _call_network(loaded.network, image, device, precision)
    del image
    if cancel.cancelled:
        raise Cancelled("detection was cancelled; nothing was produced")
    boxes, scores = _predictions(raw, card)
    network_shape = _network_shape(work_shape, card.axes)
    edges = boxes_to_input_grid(boxes, network_shape, card.axes, work_shape, volume_shape(volume))
    findings = boxes_to_findings(edges, scores, spacing, volume_shape(volume), affine,
                                 score_threshold=score_threshold, max_findings=max_findings)
    if progress is not None:
        progress(1, 1)
    cancel.raise_if_cancelled()
    return findings


def volume_shape(volume) -> tuple[int, int, int]:
    return tuple(int(n) for n in np.shape(volume)[-3:])


def _prepare(loaded, volume, spacing, settings):
    """The volume as the network's (1, 1, a, b, c) input, as ``run_model`` prepares it."""
    from ..inference.device import select_device
    from ..inference.engine import check_input, check_working_grid, target_spacing
    from ..inference.intensity import fit_intensity
    from ..inference.layout import to_network_axes
    from ..inference.precision import select_precision
    from ..inference.resample import resample, working_shape

    card = loaded.card
    image, spacing = check_input(volume, spacing, card)
    if spacing is None:
        raise ModelError(f"box detector '{card.name}' needs the voxel spacing to measure findings")
    device = select_device(settings.device, 3)
    precision = select_precision(device, settings.precision)
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        target = target_spacing(card, spacing)  # a card axis left None keeps the input's spacing
        work = working_shape(x.shape[1:], spacing, target)
        check_working_grid(work, tuple(x.shape[1:]), spacing, target)  # before resample allocates it
        x = resample(x, work, "linear")
        x = fit_intensity(card.intensity, x).apply(x)
        x = to_network_axes(x, card.axes)[None].to(device)
    return x, spacing, tuple(int(n) for n in work), device, precision


def _call_network(network, image: torch.Tensor, device, precision):
    from ..inference.precision import autocast

    network = network.to(device).eval()
    kwargs = {}
    # A RetinaNetDetector only uses the sliding-window inferer its bundle configured when asked.
    if getattr(network, "inferer", None) is not None and "use_inferer" in _parameters(network.forward):
        kwargs["use_inferer"] = True
    with torch.inference_mode(), autocast(device, precision):
        return network(image, **kwargs)


def _parameters(fn) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _predictions(raw, card) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (N, 6) xyzxyz, scores (N,)) from the network's output for one image."""
    from monai.data.box_utils import convert_box_mode

    result = raw[0] if isinstance(raw, (list, tuple)) and raw else raw
    if not isinstance(result, dict):
        raise ModelError(
            f"model '{card.name}' is not a box detector: it returned {type(raw).__name__}, "
            "not a dict of boxes, labels and scores (is it a segmentation model?)"
        )
    boxes = _entry(result, card.extra.get("box_key"), BOX_KEYS, card, "boxes")
    scores = _entry(result, card.extra.get("score_key"), SCORE_KEYS, card, "scores", suffix="_scores")
    boxes, scores = _as_numpy(boxes), _as_numpy(scores).reshape(-1)
    if boxes.size == 0:
        boxes = np.zeros((0, 6))
    elif boxes.ndim != 2 or boxes.shape[1] != 6:
        raise ModelError(f"model '{card.name}' returned boxes of shape {boxes.shape}; a 3D detector gives (N, 6)")
    if len(scores) != len(boxes):
        raise ModelError(f"model '{card.name}' returned {len(boxes)} boxes but {len(scores)} scores")
    _check_values(boxes, scores, card)
    mode = str(card.extra.get("box_mode", "xyzxyz"))
    if len(boxes) and mode != "xyzxyz":
        try:
            boxes = np.asarray(convert_box_mode(boxes, src_mode=mode, dst_mode="xyzxyz"), dtype=np.float64)
        except Exception as exc:  # an unknown mode name
            raise ModelError(f"model '{card.name}': box_mode {mode!r} is not a MONAI box mode ({exc})") from None
    return boxes.astype(np.float64), scores.astype(np.float64)


def _check_values(boxes: np.ndarray, scores: np.ndarray, card) -> None:
    """Refuse what would become a false finding: a NaN score passes every threshold (NaN < t is
    False) and is no JSON, an infinite corner is clipped to a box reaching the volume's edge, a
    NaN one failed as a traceback, and a logit read as a score above any threshold."""
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ModelError(f"model '{card.name}' returned NaN or infinite box corners or scores: its weights may be "
                         "broken, or it needs full precision (--precision fp32, or precision='fp32')")
    if len(scores) and (scores.min() < 0 or scores.max() > 1):
        raise ModelError(f"model '{card.name}' returned scores from {scores.min():.3g} to {scores.max():.3g}, not "
                         "probabilities in [0, 1]: apply a sigmoid or softmax to its class logits (MONAI's "
                         "RetinaNetDetector does so in its box selector)")


def _entry(result: dict, wanted, candidates, card, what: str, suffix: str | None = None):
    if wanted:
        if wanted not in result:
            raise ModelError(f"model '{card.name}' output has no '{wanted}' (keys: {sorted(result)})")
        return result[wanted]
    for key in candidates:
        if key in result:
            return result[key]
    if suffix:  # RetinaNetDetector names its scores "<label key>_scores"
        for key in result:
            if str(key).endswith(suffix):
                return result[key]
    raise ModelError(f"model '{card.name}' output has no {what} (keys: {sorted(result)})")


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _network_shape(work_shape, axes: str) -> tuple[int, int, int]:
    from ..inference.layout import sizes_to_network_axes

    return tuple(sizes_to_network_axes(work_shape, axes))


def boxes_to_input_grid(boxes: np.ndarray, network_shape, axes: str, work_shape, input_shape) -> np.ndarray:
    """(N, 6) xyzxyz boxes on the network's grid -> (N, 2, 3) corners (z, y, x) in voxel-edge
    coordinates of the input grid (voxel ``k`` spans ``[k, k + 1)``).

    Undoes ``to_network_axes`` (axis permutation and flips) and the resampling to the card's
    spacing, which keeps the field of view, so edges scale by ``input / working`` size.
    """
    from ..inference.layout import axes_permutation

    perm, flips = axes_permutation(axes)
    out = np.zeros((len(boxes), 2, 3), dtype=np.float64)
    for net_axis, (ours, flipped) in enumerate(zip(perm, flips)):
        lo, hi = boxes[:, net_axis], boxes[:, net_axis + 3]
        if flipped:
            size = network_shape[net_axis]
            lo, hi = size - hi, size - lo
        factor = input_shape[ours] / work_shape[ours]
        out[:, 0, ours] = np.minimum(lo, hi) * factor
        out[:, 1, ours] = np.maximum(lo, hi) * factor
    return out


def boxes_to_findings(edges: np.ndarray, scores: np.ndarray, spacing, shape, affine=None,
                      score_threshold: float = 0.0, max_findings: int | None = None) -> list[Finding]:
    """Findings from (N, 2, 3) voxel-edge boxes on the input grid, ranked by score."""
    spacing = np.asarray(spacing, dtype=np.float64)
    affine = np.diag([*spacing, 1.0]) if affine is None else np.asarray(affine, dtype=np.float64)
    shape = np.asarray(shape)
    found = []
    for (lo, hi), score in zip(edges, scores):
        lo, hi = np.clip(lo, 0, shape), np.clip(hi, 0, shape)
        if reported_score(score) < score_threshold or np.any(hi - lo <= 0):
            continue  # below the threshold, or a box entirely outside the volume
        found.append(_finding(lo, hi, float(score), spacing, shape, affine))
    return rank_findings(found, max_findings)


def _finding(lo, hi, score, spacing, shape, affine) -> Finding:
    centre = (lo + hi) / 2.0 - 0.5  # voxel-edge -> voxel-centre coordinates
    extent_mm = (hi - lo) * spacing
    # each axis to one decimal, then their mean (Lung-RADS; postprocess.findings.mask_measurements)
    long_ax, short_ax = round_half_up(max(extent_mm[1:])), round_half_up(min(extent_mm[1:]))
    mean_d = mean_diameter(long_ax, short_ax)
    start = np.floor(lo).astype(int)
    stop = np.minimum(np.ceil(hi).astype(int), shape)
    return Finding(
        center_voxel=[round(float(c), 2) for c in centre],
        center_mm=[round(float(c), 2) for c in affine[:3, :3] @ centre + affine[:3, 3]],
        bbox_voxel=[start.tolist(), stop.tolist()],
        diameter_mm=long_ax,
        short_axis_mm=short_ax,
        mean_diameter_mm=mean_d,
        volume_ml=round(math.pi / 6.0 * float(np.prod(extent_mm)) / 1000.0, 4),
        score=reported_score(score),
        lung_rads=lung_rads_category(mean_d),
        mask=inscribed_ellipsoid(lo, hi, start, stop),
        outline="box",
    )


def inscribed_ellipsoid(lo, hi, start, stop) -> np.ndarray:
    """Bool mask over voxels ``start:stop`` of the ellipsoid inscribed in the box [lo, hi)
    (voxel-edge coordinates); at least the voxel holding the centre."""
    centres = np.meshgrid(*[np.arange(a, b) + 0.5 for a, b in zip(start, stop)], indexing="ij")
    mid, half = (np.asarray(lo) + hi) / 2.0, (np.asarray(hi) - lo) / 2.0
    inside = sum(((c - m) / h) ** 2 for c, m, h in zip(centres, mid, half)) <= 1.0
    if not inside.any():
        index = tuple(min(int(m - a), int(b - a) - 1) for m, a, b in zip(mid, start, stop))
        inside[index] = True
    return inside
