"""The Python API: ``segment``, ``detect`` and ``denoise`` a (z, y, x) volume.

Numpy in, numpy out, no Qt: the widgets and the CLI call these same functions.  ``segment``
and ``detect`` read any other array (a CPU torch tensor, a dask array) into numpy once, first.
Each takes ``settings`` (device, precision, window batch), ``progress(done, total)`` and a
``cancel`` token, and returns results on the input's grid.  A singleton channel axis
((1, z, y, x) or (z, y, x, 1)) is dropped, as the models drop it: ``segment``'s labels and
``detect``'s findings are then (z, y, x); a 2D model's (y, x) slice gets (y, x) labels (its
spacing still names the slice thickness, for the volumes); ``denoise`` returns the shape it was given.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .models.card import is_multilabel, sigmoid_offset

DEFAULT_SEGMENTATION_MODEL = "chest-ct-lung-nodule"
DEFAULT_DETECTION_MODEL = "lung-nodule-detection"


@dataclass
class SegmentationResult:
    labels: np.ndarray  # uint8/uint16 (z, y, x) on the input grid
    classes: dict[int, dict]  # index -> {"name", "color"}
    volumes: list[dict] = field(default_factory=list)  # per-class voxels and mL
    lesion_probability: np.ndarray | None = None  # float32 (z, y, x), when the model has a lesion class
    # each lesion component with the outline it got (half-maximum or the network's):
    # postprocess.components.lesion_outlines
    lesion_outlines: list[dict] = field(default_factory=list)

    def __iter__(self):  # labels, classes = segment(...)
        return iter((self.labels, self.classes))


def _argmax_small(probs: np.ndarray) -> np.ndarray:
    """``probs.argmax(0)`` straight into uint8/uint16 (first maximum wins, as argmax).

    numpy's argmax builds an int64 map (8 bytes a voxel) first; on a 512x512x300 CT that
    temporary alone was 0.6 GB and set the segmentation's peak memory.  Done slab by slab, the
    running maximum is a slab's too (it was another float32 volume).
    """
    from .postprocess.components import SLAB

    dtype = np.uint8 if probs.shape[0] < 256 else np.uint16
    labels = np.zeros(probs.shape[1:], dtype=dtype)
    for z in range(0, probs.shape[1], SLAB):  # slab by slab: the running maximum stays small too
        part, out = probs[:, z:z + SLAB], labels[z:z + SLAB]
        best = part[0].copy()
        for c in range(1, part.shape[0]):
            better = part[c] > best
            out[better] = c
            np.maximum(best, part[c], out=best)
    return labels


def _confirm_lesions(labels, lesion_prob, volume, spacing, card, confirm: dict, lesion: int, settings, progress,
                     cancel):
    """Second opinion on the lesion class (card ``extra["confirm"]``): the detector it names
    scores high-recall candidates with its classifier; confirmed ones the first pass missed
    are added, first-pass lesions that only rejected candidates cover are given back to the
    host organ (see ``postprocess.components.merge_confirmed``)."""
    from .inference.confirm import score_candidates
    from .postprocess.components import merge_confirmed

    scored = score_candidates(volume, spacing, _model(confirm["detector"]), settings, progress=progress, cancel=cancel,
                              first_pass=(labels == lesion, lesion_prob))
    hosts = [int(i) for i in card.extra.get("lesion_hosts", ())]
    return merge_confirmed(labels, lesion, scored.candidates, scored.scores, float(confirm["threshold"]),
                           host=hosts[0] if hosts else 0, drop_rejected=bool(confirm.get("drop_rejected", True)))


def _checked_call(volume, spacing, settings):
    """What segment() and detect() need before a model loads: a spacing (their clean-up and
    measurements are in mm) and settings (InferenceSettings, or a dict of its fields).  Returns
    (volume, spacing, settings): the volume as a numpy array without a singleton channel axis
    (the engine drops it, io.validate.check_volume, so the clean-up must work on the same
    (z, y, x) grid) and the spacing as three floats."""
    from .errors import InputError
    from .inference import InferenceSettings
    from .io.validate import check_spacing, without_singleton_axis

    if volume is None:  # the engine said "expects a 3D volume ... 0 dimension(s) ()"
        raise InputError("no image given: pass the volume as an array (z, y, x)")
    if isinstance(volume, (str, bytes)) or hasattr(volume, "__fspath__"):  # a file name, as medai takes
        raise InputError(f"pass the image as an array, not the file name {str(volume)!r} (read a file with "
                         "napari_medai.read_volume(path): its .data and .spacing)")
    if spacing is None:
        raise InputError("the voxel spacing is needed (mm, (z, y, x)): sizes and volumes are measured in mm")
    # a torch tensor (MONAI's MetaTensor.pixdim) failed in the clean-up's np.prod after the inference
    spacing = check_spacing(spacing, ndim=3)
    warn_if_spacing_reversed(spacing)
    # numpy once, here: the clean-up failed on a torch tensor after the whole inference, and
    # read a lazy (dask) array again at every step (32 times in segment())
    volume = np.asarray(volume)
    # (C, z, y, x) with C > 1 stays: the engine reads it as channels
    return without_singleton_axis(volume), spacing, InferenceSettings.of(settings)


# set while screen() runs: it warned about the spacing itself, so its detect() and segment() do not again
_SPACING_WARNED: ContextVar[bool] = ContextVar("napari_medai_spacing_warned", default=False)


def warn_if_spacing_reversed(spacing, stacklevel: int = 4) -> None:
    """Warn when ``spacing`` looks given as (x, y, z), the order SimpleITK's GetSpacing() and
    nibabel's header zooms use: x at least twice y while z equals y.  Read as (z, y, x), a
    (0.7, 0.7, 5) scan is resampled along the wrong axes and the results are wrong without a word
    (an audit helper saw 69 nodule voxels become 7,092).  A warning, not a refusal: a sagittal
    acquisition's thick slices do lie along x.  ``stacklevel``: the caller's frame, for the message."""
    import warnings

    if _SPACING_WARNED.get():
        return
    z, y, x = (float(v) for v in spacing)
    if x >= 2.0 * max(z, y) and abs(z - y) <= 0.01 * y:
        warnings.warn(f"spacing {tuple(spacing)} is read as (z, y, x) mm, which makes the voxels {x / y:.1f} times "
                      "longer along x than along y: if it is (x, y, z), as SimpleITK's GetSpacing() gives it, "
                      "reverse it (a sagittal scan's slices along x are the one case where this is right)",
                      UserWarning, stacklevel=stacklevel)


@contextlib.contextmanager
def spacing_warned():
    """Inside: ``warn_if_spacing_reversed`` is silent (screen() has checked the spacing once)."""
    token = _SPACING_WARNED.set(True)
    try:
        yield
    finally:
        _SPACING_WARNED.reset(token)


def check_score_threshold(value, what: str = "score_threshold") -> float:
    """A score threshold as a float in [0, 1] (scores are probabilities), checked before any
    model runs: NaN passed every comparison and listed every finding, a string failed deep inside."""
    from .errors import InputError

    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not number or not 0.0 <= float(value) <= 1.0:  # NaN fails the comparison too
        raise InputError(f"{what} must be a score between 0 and 1, got {value!r}")
    return float(value)


def _model(model, use: str | None = None):
    """The loaded model; with ``use`` ("segmentation", "detection"), one that labels voxels: a
    denoiser or a patch classifier would give labels and findings that mean nothing."""
    from .errors import ModelError
    from .models import LoadedModel, load_model

    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    card = loaded.card
    if use is not None and card.task in ("denoising", "classification"):
        hint = " (use denoise() / medai denoise)" if card.task == "denoising" else ""
        raise ModelError(f"model '{card.name}' is a {card.task} model, not a {use} model{hint}")
    # a segmentation-based detector's network draws class probabilities like a segmenter's (the
    # built-in one is the segmentation network), so its labels mean something; a box detector's none
    if use == "segmentation" and card.task == "detection" and card.draws_boxes:
        raise ModelError(f"model '{card.name}' is a box detector: it gives findings, not labels "
                         "(use detect() / medai detect)")
    # a plain segmentation card or bundle is no detector: its last class was reported as lung nodules
    # with Lung-RADS categories (a spleen as a 77 mm nodule).  A card of task "detection" is one, its
    # method "segmentation" unless it says otherwise (ModelCard.draws_boxes)
    if use == "detection" and card.task != "detection" and "method" not in (card.extra or {}):
        raise ModelError(f"model '{card.name}' is a {card.task} model, not a detector: detection takes a detector "
                         "card (extra.method \"segmentation\" with its lesion channel in extra.probability_channel, "
                         "docs/detection.md) or a box-detection bundle (metadata task mentioning detection)")
    return loaded


def segment(
    volume: np.ndarray,
    spacing,
    model=DEFAULT_SEGMENTATION_MODEL,
    *,
    settings=None,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
    min_lesion_mm3: float | None = None,
    postprocess: bool = True,
) -> SegmentationResult:
    """Label map of ``volume`` with the model's classes (0 = background).

    ``model``: a built-in name, a MONAI bundle folder, a TorchScript file or a LoadedModel.
    Post-processing (cards declare it in ``extra``): organs keep their largest connected
    components (``extra["organs"] = {"1": 2}``: lungs keep two) and lesion classes
    (``extra["lesions"]``) lose components under ``min_lesion_mm3`` and, where the card
    names ``extra["lesion_hosts"]`` (e.g. ``[1]``), components that touch none of those classes.
    ``extra["lesion_threshold"]`` (fitted by ``medai train lesion-threshold``) gives the first
    lesion class every voxel whose probability reaches it, before the clean-up.
    ``extra["inside_body"]`` (e.g. ``[1, 2]``): those classes are removed outside the patient's
    body (air under a blanket is not lung); see ``postprocess.body``.
    ``extra["confirm"]`` (``{"detector": NAME, "threshold": T}``) asks a two-stage detector for
    a second opinion on the lesion class before the clean-up (see ``_confirm_lesions``).
    ``extra["lesion_refine"]`` (``{"reach_mm": R, "level": 0.5}``, fitted by the same command)
    finally moves the first lesion class's edges to the image's half-maximum contour, within R mm
    of the network's edge, on the input grid (see ``postprocess.refine``).
    """
    from .inference import run_model
    from .inference.cancel import as_cancel_token
    from .inference.progress import share_progress

    # a (y, x) slice for a 2D model runs as a one-slice volume and gets (y, x) labels back: it used to
    # get (1, y, x), a shape the caller never gave (a 3D model gets the slice as it is, and says so)
    flat = np.ndim(volume) == 2
    if flat:
        model = _model(model, "segmentation")
        flat = model.card.spatial_dims == 2
    if flat and spacing is not None and np.size(spacing) == 2:
        from .errors import InputError

        raise InputError("a (y, x) slice needs its spacing as (slice thickness, y, x) in mm: the class volumes "
                         f"are measured in mL (got {tuple(float(v) for v in np.ravel(spacing))})")
    volume, spacing, settings = _checked_call(np.asarray(volume)[None] if flat else volume, spacing, settings)
    cancel = as_cancel_token(cancel)  # cancel=True failed at the first window with an AttributeError
    if min_lesion_mm3 is not None:
        from .errors import InputError

        # a string ("5") failed inside np.isfinite with a ufunc TypeError
        number = isinstance(min_lesion_mm3, (int, float, np.integer, np.floating)) and not isinstance(
            min_lesion_mm3, bool)
        if not number or not (np.isfinite(min_lesion_mm3) and min_lesion_mm3 >= 0):
            raise InputError(f"the minimum lesion size must be 0 mm³ or more (min_lesion_mm3: a number, or None "
                             f"for the model's), got {min_lesion_mm3!r}")
    loaded = _model(model, "segmentation")
    confirm = loaded.card.extra.get("confirm") if postprocess else None
    stages = 2 if confirm else 1
    probs = run_model(loaded, volume, spacing, settings, progress=share_progress(progress, 0, stages), cancel=cancel)
    first = first_segmentation(loaded.card, probs)
    del probs  # the full probabilities (C floats a voxel) are not needed past this point
    result = finish_segmentation(loaded, first, volume, spacing, min_lesion_mm3=min_lesion_mm3,
                                 postprocess=postprocess, settings=settings,
                                 progress=share_progress(progress, 1, stages), cancel=cancel)
    return _as_slice(result) if flat else result


def _as_slice(result: SegmentationResult) -> SegmentationResult:
    """A one-slice result on the (y, x) grid of the slice it came from: labels and lesion
    probability lose their z axis, the lesion outlines' centres are (y, x)."""
    from dataclasses import replace

    prob = result.lesion_probability
    outlines = [{**row, "center_voxel": tuple(row["center_voxel"])[1:]} for row in result.lesion_outlines]
    return replace(result, labels=result.labels[0], lesion_probability=None if prob is None else prob[0],
                   lesion_outlines=outlines)


def _multilabel_small(probs: np.ndarray, offset: int = 1) -> np.ndarray:
    """Label map of independent (sigmoid) channels: label k + 1 where channel k reaches 0.5,
    0 (background) where none does.  Where several do, the channel whose region (its voxels
    >= 0.5 in this volume) is smallest wins, ties to the later channel: nested regions in any
    channel order (BraTS tumour core, whole tumour, enhancing tumour) then each keep their own
    layer instead of the outermost covering the rest, as an argmax over them could."""
    labels = np.zeros(probs.shape[1:], dtype=np.uint8 if probs.shape[0] < 256 else np.uint16)
    sizes = [np.count_nonzero(channel >= 0.5) for channel in probs]  # one boolean channel at a time
    for c in sorted(range(probs.shape[0]), key=lambda c: -sizes[c]):  # largest first: smaller ones paint over
        if c + offset:  # a channel that is background draws nothing
            labels[probs[c] >= 0.5] = c + offset
    return labels


def first_segmentation(card, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The labels and a copy of the first lesion class's probability (None without one) from
    the class probabilities ``probs`` (C, z, y, x): all ``finish_segmentation`` needs, so the
    caller can free ``probs`` before the clean-up (and ``screening`` can also detect on them).
    Softmax outputs give the argmax; sigmoid (multi-label) ones label k + 1 where channel k
    reaches 0.5 (``_multilabel_small``), so their lesion label k + 1 reads channel k."""
    multilabel = is_multilabel(card, probs.shape[0])
    offset = sigmoid_offset(card) if multilabel else 0
    labels = _multilabel_small(probs, offset) if multilabel else _argmax_small(probs)
    lesions = tuple(int(i) for i in card.extra.get("lesions", ()))
    if not lesions:
        return labels, None
    channel = max(lesions[0] - offset, 0)
    return labels, probs[channel].copy()


def _label_classes(card) -> dict[int, dict]:
    """Label value -> name and colour.  A multi-label card's label k + 1 is channel k and 0 is
    background (``bundle.sigmoid_classes``: a lone ``{"0": "spleen"}`` becomes label 1, so the
    volume table and ``medai evaluate`` name it); unnamed classes are "class k"."""
    from .models.bundle import sigmoid_classes

    classes = card.classes
    if is_multilabel(card, card.out_channels):
        unnamed = [{"index": i + 1, "name": f"class {i + 1}"} for i in range(card.out_channels)]
        classes = sigmoid_classes(classes or unnamed, card.out_channels)
    return {int(c["index"]): {"name": c["name"], "color": c.get("color")} for c in classes} or {
        i: {"name": f"class {i}", "color": None} for i in range(card.out_channels)}


def finish_segmentation(model, first, volume: np.ndarray, spacing, *, min_lesion_mm3: float | None = None,
                        postprocess: bool = True, settings=None, progress=None, cancel=None) -> SegmentationResult:
    """``segment``'s second half: the card's second opinion and clean-up on ``first_segmentation``'s
    output, then the class table and volumes."""
    from .postprocess import class_volumes
    from .postprocess.components import clean_with_card, lesion_outlines

    loaded = _model(model)
    card = loaded.card
    labels, lesion_prob = first
    lesions = tuple(int(i) for i in card.extra.get("lesions", ()))
    classes = _label_classes(card)
    confirm = card.extra.get("confirm") if postprocess else None
    if confirm and lesions:
        labels = _confirm_lesions(labels, lesion_prob, volume, spacing, card, confirm, lesions[0], settings,
                                  progress, cancel)
    # where the clean-up moves a lesion's edge to the image's contour: each lesion's outline kind
    refined = np.zeros(labels.shape, dtype=bool) if postprocess and lesions and card.extra.get("lesion_refine") else None
    if postprocess:
        labels = clean_with_card(labels, lesion_prob, spacing, card.extra, min_lesion_mm3, image=volume,
                                 refined=refined)
    names = {i: c["name"] for i, c in classes.items()}
    outlines = lesion_outlines(labels, lesion_prob, spacing, lesions[0], refined) if lesions else []
    return SegmentationResult(labels, classes, class_volumes(labels, spacing, names), lesion_prob, outlines)


def check_max_findings(max_findings, name: str = "max_findings", least: int = 0, context: str = "") -> int | None:
    """The cap on findings as an int, checked before any model runs (a slice with -1 dropped the
    last finding instead); None lists every finding, 0 none.  ``name``: the option, as the
    message names it (``--max-findings`` said "max_findings ... 0 or more", then refused 0);
    ``least``: the smallest cap the caller takes."""
    from .errors import InputError

    if max_findings is None:
        return None
    number = isinstance(max_findings, (int, float, np.integer, np.floating)) and not isinstance(max_findings, bool)
    if not number or not float(max_findings).is_integer() or max_findings < least:
        raise InputError(f"{name} must be a whole number of findings, {least} or more{context}, got {max_findings!r}")
    return int(max_findings)


def check_some_findings_listed(max_findings, name: str = "max_findings", context: str = "") -> int | None:
    """``check_max_findings``, refusing 0 too: where the findings are listed (``medai detect``'s
    summary, a screening report), a list of none headed "No nodule reported" over found ones."""
    from .errors import InputError

    if isinstance(max_findings, (int, np.integer)) and not isinstance(max_findings, bool) and max_findings == 0:
        raise InputError(f"{name} must be 1 or more{context}, got 0")
    return check_max_findings(max_findings, name, least=1, context=context)


def one_more_than(max_findings: int | None) -> int | None:
    """The cap to ask ``detect`` for so that ``cut_to`` can tell whether ``max_findings`` cut the
    list: the unlisted findings could hold a higher category, and the reader must be told."""
    return None if max_findings is None else max_findings + 1


def cut_to(found: list, max_findings: int | None) -> tuple[list, bool]:
    """(at most ``max_findings`` of ``found``, whether any were left out)."""
    capped = max_findings is not None and len(found) > max_findings
    return (found[:max_findings] if capped else found), capped


def detect(
    volume: np.ndarray,
    spacing,
    model=DEFAULT_DETECTION_MODEL,
    *,
    affine: np.ndarray | None = None,
    score_threshold: float = 0.0,
    max_findings: int | None = 50,
    settings=None,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
    refine_masks: bool = True,
):
    """Findings (napari_medai.postprocess.Finding) ranked by score, highest first: those scoring
    at least ``score_threshold`` (a number in [0, 1]), at most ``max_findings``.

    Segmentation-based detection: the model's lesion-probability channel
    (``extra["probability_channel"]``) is split into connected components, each scored by
    its peak probability and measured on its own mask.  Candidates must reach within
    ``extra["margin_mm"]`` of the model's organ field (``extra["within_classes"]``) so that
    findings outside the lungs are not reported; with ``extra["inside_body"]`` that field
    excludes everything outside the patient's body.  With ``extra["classifier"]`` (a built-in
    classification model) the components above ``extra["candidate_threshold"]`` are candidates
    instead, each scored by that classifier from a patch around it (two-stage detection, see
    ``inference.confirm``).  ``extra["mask_refine"]`` (``{"reach_mm", "level"}``) measures each
    finding on its mask moved to the image's half-maximum contour (``postprocess.refine``);
    ``refine_masks=False`` keeps the masks as the network draws them (centres and scores are
    the same either way).
    ``affine`` maps voxels to world mm
    (default: spacing on the diagonal).
    """
    from .errors import InputError, ModelError
    from .inference import run_model
    from .inference.cancel import as_cancel_token

    max_findings = check_max_findings(max_findings)
    score_threshold = check_score_threshold(score_threshold)
    volume, spacing, settings = _checked_call(volume, spacing, settings)
    cancel = as_cancel_token(cancel)
    if isinstance(model, np.ndarray) and model.shape == (4, 4):  # screen() takes the affine third
        raise InputError("detect()'s third argument is the model, and this looks like an affine: "
                         "pass the affine as affine=...")
    if affine is not None:  # shape, NaN, singular: a NaN affine gave NaN centres (io.validate.check_affine)
        from .io.validate import check_affine

        affine = check_affine(affine, spacing=spacing)
    loaded = _model(model, "detection")
    card = loaded.card
    extra = card.extra
    if card.draws_boxes:
        from .models.detection import run_box_detector  # RetinaNet-style bundles

        found = run_box_detector(loaded, volume, spacing, affine=affine, score_threshold=score_threshold,
                                 max_findings=max_findings, settings=settings, progress=progress, cancel=cancel)
        return _with_attenuation(card, found, volume, spacing)
    channel = int(extra.get("probability_channel", card.out_channels - 1))
    if not 0 <= channel < card.out_channels:
        raise ModelError(f"model '{card.name}': probability channel {channel} does not exist")
    if extra.get("classifier"):  # two stages: candidates scored by a patch classifier
        from .inference.confirm import score_candidates
        from .postprocess.findings import findings_from_scored_components

        scored = score_candidates(volume, spacing, loaded, settings, progress=progress, cancel=cancel)
        found = findings_from_scored_components(
            scored.candidates, scored.prob, scored.scores, spacing, affine,
            mask_threshold=float(extra.get("mask_threshold", 0.5)), score_threshold=score_threshold,
            min_volume_mm3=float(extra.get("min_volume_mm3", 0.0)), max_findings=max_findings)
        return _with_attenuation(card, found, volume, spacing)
    probs = run_model(loaded, volume, spacing, settings, progress=progress, cancel=cancel)
    return findings_from_probabilities(loaded, probs, volume, spacing, affine=affine,
                                       score_threshold=score_threshold, max_findings=max_findings,
                                       refine_masks=refine_masks)


def findings_from_probabilities(model, probs: np.ndarray, volume: np.ndarray, spacing, *, affine=None,
                                score_threshold: float = 0.0, max_findings: int | None = 50,
                                refine_masks: bool = True):
    """``detect`` for a one-stage segmentation-based detector, from its class probabilities
    ``probs`` (C, z, y, x) on the input grid (``run_model``'s output)."""
    from .errors import ModelError
    from .postprocess import findings_from_probability
    from .postprocess.findings import card_field

    card = _model(model).card
    extra = card.extra
    if card.draws_boxes or extra.get("classifier"):
        raise ModelError(f"model '{card.name}' does not detect from one probability map")
    channel = int(extra.get("probability_channel", card.out_channels - 1))
    if not 0 <= channel < probs.shape[0]:
        raise ModelError(f"model '{card.name}': probability channel {channel} does not exist")
    prob = probs[channel]
    organ = card_field(probs, extra, channel, volume, spacing)
    del probs
    found = findings_from_probability(
        prob, spacing, affine,
        candidate_threshold=float(extra.get("candidate_threshold", 0.1)),
        mask_threshold=float(extra.get("mask_threshold", 0.5)),
        score_threshold=score_threshold,
        min_volume_mm3=float(extra.get("min_volume_mm3", 0.0)),
        field=organ, field_margin_mm=float(extra.get("margin_mm", 5.0)),
        max_findings=max_findings,
    )
    if refine_masks and extra.get("mask_refine"):  # measure each finding on the image's half-maximum contour
        from .postprocess.refine import refine_findings

        found = refine_findings(found, volume, spacing, organ, **extra["mask_refine"])
    return _with_attenuation(card, found, volume, spacing)


def _with_attenuation(card, found, volume, spacing):
    """A CT detector's findings with their attenuation and its Lung-RADS category, read from the
    HU under each mask (``postprocess.attenuation``); other modalities have no HU to read."""
    if card.modality != "CT":
        return found
    from .postprocess.attenuation import add_attenuation

    return add_attenuation(found, np.asarray(volume), spacing)


def denoise(volume, spacing, model=None, **kwargs):
    """Denoised copy of ``volume`` (see napari_medai.denoising.denoise)."""
    from .denoising import denoise as _denoise

    return _denoise(volume, spacing, model=model, **kwargs)
