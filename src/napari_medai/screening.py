"""The lung-nodule screening workflow in one call: (denoise →) detect → segment → measure → report.

``screen`` runs the detector and the segmentation on a chest CT and puts their results
together the way a reading radiologist wants them:

* each finding (ranked by score, the detector's measurements) with the lung it lies in, the
  third of that lung's craniocaudal extent (upper / middle / lower: a position, not a lobe,
  which the models do not segment), and the volume the segmentation gives the same nodule;
* the volume of each lung;
* the highest Lung-RADS v2022 category among the reported findings, by each nodule's
  attenuation where it was read, and by size alone beside it (no headline category when none
  is reported) — decision support, not a diagnosis;
* what produced it: each model's name and weights' sha256, the settings, the time of each step.

A reader's review (``with_review``: each finding accepted, rejected or not reviewed; see
``review``) is written into the report, and the exam's categories then leave out what the
reader rejected.

When the detector and the segmentation share one network and its settings (the built-in
models do), the network runs once and both read its probabilities.  Numpy in, plain data
out; ``screening_markdown`` / ``screening_record`` turn the result into the report files
(``medai screen``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from .api import DEFAULT_DETECTION_MODEL, DEFAULT_SEGMENTATION_MODEL
from .errors import InputError
from .postprocess.components import label_sizes
from .postprocess.findings import LUNG_RADS_NOTE, Finding, axial_slice, lps_position
from .postprocess.key_images import write_key_images
from .postprocess.report import (ATTENUATION_NOTE, attenuation_cell, craniocaudal_note, edge_notes, outline_note,
                                 score_cell)
from .review import ACCEPTED, REJECTED, checked_review, is_reviewed, not_rejected, review_counts

LUNG_RADS_ORDER = ("1", "2", "3", "4A", "4B")
DEFAULT_SCORE_THRESHOLD = 0.5  # for a detector whose card has no fitted operating point
# What a reader must know about the built-in models before trusting a low category
# (docs/segmentation.md, docs/detection.md: 0 of 21 held-out phantom nodules under 6 mm found).
SMALL_NODULE_LIMIT = ("the built-in models miss most nodules under 6 mm (none of 21 found on held-out phantoms): "
                      "a category 1 or 2 here does not rule out nodules under 6 mm")
# What the report cannot tell, stated in every report (docs/screening.md): a reader must not take
# the software's silence for a negative scan.
REPORT_LIMITS = (
    "research software, not a medical device: every finding needs a reader's confirmation on the images",
    "the built-in models were trained on synthetic phantoms and tested on one real CT; on held-out phantoms "
    "they find 68 % of nodules of 4 mm or more at one false positive per scan (docs/detection.md)",
    "not assessed: benign calcification or fat (category 1), perifissural and juxtapleural nodule features, "
    "airway nodules, cysts, growth against a prior scan (every category here is a baseline screen's), "
    "category 4X features (spiculation, lymphadenopathy) and the S modifier",
    "attenuation as read here: a solid part under 3 mm across is not counted (such a nodule reads ground "
    "glass), and a nodule at least 60 % solid by volume reads solid (a thin ground-glass rim is not counted)",
)
# lung cut by the first or last slice over more than this area: the scan may not cover the lungs
LUNG_CUT_MM2 = 500.0
# Under this share of the slices from the first to the last holding lung labelled lung, there
# are no aerated lungs to screen: lungs fill a tenth or more of their own slices (lung1: about
# a fifth), in a chest, whole-body or abdomen CT alike; a few stray voxels do not
MIN_LUNG_SHARE = 0.01
# The smaller lung holds at least this share of the larger one's voxels to be a lung at all
# (left and right differ by a fifth or so; a collapsed lung keeps more than this)
MIN_SECOND_LUNG_SHARE = 0.05
# The slice numbers the reports give, in words.  They are the image's own data index: napari's
# slider counts over the whole world range of the viewer's layers, so it differs when another
# layer (a prior scan, say) reaches further along that axis.
SLICE_CONVENTION = ("*Slice*: the image's own axial slice index, counted from 0 at the first slice of the volume "
                    "as loaded (the most inferior one for a scan read by this plugin); napari's slider shows the "
                    "same number when this image alone sets the viewer's range; "
                    "*S mm*: that position along the patient's long axis (DICOM's z), as a viewer's table position")
# A segmented volume not (all) on the CT's half-maximum edge (components.lesion_outlines); "unknown":
# a component the segmentation's run did not list (the labels were edited after it)
NOT_REFINED = ("network", "mixed", "unknown")
NOT_REFINED_MARK = "‡"  # the dock's † marks a finding's own mean diameter (widgets._tables)
NOT_REFINED_NOTE = ("*segmented* volume not (all) on the CT's half-maximum edge: on the network's outline as drawn, "
                    "or labels edited after the run; compare it across visits only with a volume outlined the same way")
KEY_IMAGE_FOV_MM = 50.0  # the magnified field of a key image: a 30 mm nodule with its surroundings
SIDES = ("right", "left")
ZONES = ("lower", "middle", "upper")  # thirds of a lung's extent, inferior to superior


@dataclass
class ScreenedFinding:
    finding: Finding
    side: str  # "right", "left", or "" when the lungs could not be told apart
    zone: str  # "upper", "middle", "lower" third of that lung's craniocaudal extent, or ""
    segmented_volume_ml: float  # the segmentation's nodule components that overlap the finding (0: none)
    # their outline (components.lesion_outlines): "half-maximum", "network", "mixed", "unknown"
    # (labels edited after the run); "": none overlaps
    segmented_outline: str = ""

    def to_dict(self) -> dict:
        return {**self.finding.to_dict(), "side": self.side, "zone": self.zone,
                "segmented_volume_ml": round(self.segmented_volume_ml, 4), "segmented_outline": self.segmented_outline}


@dataclass
class ScreeningResult:
    findings: list[ScreenedFinding]
    labels: np.ndarray  # the segmentation, (z, y, x) on the input grid
    classes: dict[int, dict]
    lung_volumes_ml: dict[str, float]  # "right", "left" (or "lungs" when they could not be told apart)
    category: str  # highest Lung-RADS size category among the detector's listed findings; "1" when there is none
    models: dict[str, dict]  # step -> {"name", "sha256", "tta"} (+ "focus_probability" for mirror-lesions)
    times_s: dict[str, float]
    score_threshold: float = 0.0
    denoised: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    at_operating_point: bool = False  # reported at the detector's operating point (notes[0] says so)
    # highest category with each finding's attenuation read from the CT ("": not read for all)
    category_by_attenuation: str = ""
    class_volumes: list[dict] = field(default_factory=list)  # the segmentation's per-class voxels and mL
    review: list[str] = field(default_factory=list)  # the reader's state per finding (``review``); []: none
    # The two lungs' positions that gave each finding its side and zone, kept so that a nodule the
    # reader adds later is placed the same way without labelling the whole map again (about 3 s
    # on 512 x 512 x 300); None: not known, ``with_added_finding`` reads them from ``labels``.
    lung_sides: dict | None = field(default=None, repr=False, compare=False)
    # the voxel -> world matrix the scan was screened with (``lung_sides`` are in its frame), so that
    # an added nodule's centre is put in the same frame; None: not known (the spacing's diagonal)
    affine: np.ndarray | None = field(default=None, repr=False, compare=False)
    # more findings reached the threshold than max_findings listed (a note says so): the counts
    # and categories are of the listed ones
    capped: bool = False
    # the segmentation's lesion components with the outline each has (SegmentationResult.lesion_outlines)
    lesion_outlines: list[dict] = field(default_factory=list)
    # where the lungs run past the scan's first or last slice ("" when they do not): part of the lungs
    # was not seen, so the exam may be Lung-RADS 0 (incomplete) whatever the findings' categories
    lungs_cut: str = ""

    @property
    def headline_category(self) -> str:
        """The category a reader acts on: with each finding's attenuation read, Lung-RADS by type
        (a 20 mm ground-glass nodule is 2, not 4B); else the size category alone."""
        return self.category_by_attenuation or self.category

    def categories_after_review(self) -> tuple[str, str]:
        """(size category, category by attenuation) of the findings the reader did not reject;
        the same as ``category`` and ``category_by_attenuation`` when nothing was rejected."""
        kept = [s.finding for s in not_rejected(self.findings, self.review)]
        by_attenuation = _highest(f.lung_rads_by_attenuation for f in kept) if self.category_by_attenuation else ""
        return _highest(f.lung_rads for f in kept), by_attenuation


def with_added_finding(result: ScreeningResult, finding: Finding, spacing, affine=None) -> ScreeningResult:
    """``result`` with ``finding`` (a nodule the reader marked, ``postprocess.seeded.nodule_at``)
    appended after the detector's findings, given its lung, zone and segmented volume like them,
    and reviewed "accepted" (the reader put it there).  ``category`` stays the detector's: the
    categories after the review count the added finding.  Its ``center_mm`` is set from its
    ``center_voxel`` with the affine ``result`` was screened with (``affine`` when given, which must
    be that one): a finding measured without the scan's affine had the spacing's diagonal for a
    frame and was put in the wrong lung."""
    spacing = np.asarray(spacing, dtype=float)
    affine = _added_affine(result.affine, affine, spacing)
    centre = np.asarray(finding.center_voxel, dtype=float)
    finding = replace(finding, center_mm=[round(float(c), 2) for c in affine[:3, :3] @ centre + affine[:3, 3]])
    lung, lesion = _class_index(result.classes, "lung"), _class_index(result.classes, "nodule")
    lungs = result.lung_sides
    if lungs is None:
        lungs = _lungs(result.labels, lung, affine) if lung is not None else {}
    segmented = _lesion_components(result.labels, lesion, float(np.prod(spacing)) / 1000.0, result.lesion_outlines)
    added = ScreenedFinding(finding, *_position(finding, lungs), *segmented(finding))
    review = checked_review(result.review, len(result.findings)) + [ACCEPTED]
    return replace(result, findings=[*result.findings, added], review=review)


def _added_affine(screened, given, spacing) -> np.ndarray:
    """The affine an added nodule is placed with: the one the scan was screened with; a different
    one given beside it is refused (the lungs' sides are in the screened frame)."""
    if given is None:
        return _affine(screened, spacing)
    given = _affine(given, spacing)
    if screened is not None and not np.allclose(given, screened, atol=1e-3):
        raise InputError("the affine given for the added nodule is not the one the scan was screened with: "
                         "its side and zone would be read in another frame")
    return given


def with_review(result: ScreeningResult, review) -> ScreeningResult:
    """``result`` with the reader's review: one state per finding in rank order, "accepted",
    "rejected" or "" (not reviewed).  The findings and the segmentation are not changed."""
    return replace(result, review=checked_review(review, len(result.findings)))


# how the refusal of max_findings 0 reads for a report (screen(), screen_cases())
REPORT_CAP_CONTEXT = " for a screening report (None lists every finding)"

def screen(volume: np.ndarray, spacing, affine: np.ndarray | None = None, *, denoise: bool = False,
           detector=DEFAULT_DETECTION_MODEL, segmenter=DEFAULT_SEGMENTATION_MODEL, denoiser=None,
           score_threshold: float | None = None, max_findings: int | None = 20, settings=None,
           progress: Callable[[int, int], None] | None = None, cancel=None) -> ScreeningResult:
    """Screen a chest CT (HU, (z, y, x), ``spacing`` in mm) for lung nodules.

    ``denoise=True`` first runs the CT denoiser (``denoiser``, default chosen for CT) and the
    models then read the denoised volume, which is returned too.  Findings under
    ``score_threshold`` are not reported, at most ``max_findings`` are; ``None`` takes the
    detector card's operating point (``medai train operating-point``), or 0.5 where it has
    none.  ``affine``: napari's voxel (z, y, x) → world (S, P, L) mm matrix (``Volume.affine``);
    without it the volume is taken as already in that orientation with ``spacing`` on the
    diagonal.  ``progress`` gets
    one bar over all steps; a cancelled ``cancel`` token stops between windows and raises
    ``Cancelled``.
    """
    from .api import _model, check_score_threshold, check_some_findings_listed, cut_to, finish_segmentation, one_more_than
    from .api import findings_from_probabilities, first_segmentation, spacing_warned, warn_if_spacing_reversed
    from .api import detect as run_detector
    from .api import segment as run_segmentation
    from .inference import InferenceSettings, run_model
    from .inference.engine import mirror_mode
    from .inference.progress import share_progress

    from .io.validate import check_spacing, check_volume

    # every input check before any model runs: not 3D, empty, constant, NaN, absurd spacing; a
    # singleton channel axis goes, as segment() and detect() drop it (the results are (z, y, x))
    volume = check_volume(volume, spacing, need_3d=True, what="CT")
    spacing = check_spacing(spacing, ndim=3)
    warn_if_spacing_reversed(spacing, stacklevel=3)  # once here: the one-network path calls neither detect() nor segment()
    max_findings = check_some_findings_listed(max_findings, context=REPORT_CAP_CONTEXT)
    if score_threshold is not None:
        score_threshold = check_score_threshold(score_threshold)
    settings = InferenceSettings.of(settings)
    affine = _affine(affine, spacing)
    det, seg = _model(detector, "detection"), _model(segmenter, "segmentation")
    settings.validate()  # the settings' and each card's mirroring (and focus level): before the denoiser runs
    modes = [mirror_mode(settings, card) for card in (det.card, seg.card)]
    score_threshold, notes = _reporting_threshold(det.card, score_threshold)
    at_operating_point = bool(notes)  # its note comes first
    shared = _one_network(det.card, seg.card, settings)
    asked = one_more_than(max_findings)  # so that the report can say the list was cut
    steps = (1 if denoise else 0) + (1 if shared else 2)
    step = 0
    times, models = {}, {}
    denoised = None
    if denoise:
        from .denoising import default_model_name
        from .denoising import denoise as run_denoiser

        t0 = time.perf_counter()
        denoised = run_denoiser(volume, spacing, model=denoiser, modality="CT", settings=settings,
                                progress=share_progress(progress, step, steps), cancel=cancel)
        times["denoise"] = time.perf_counter() - t0
        models["denoise"] = _provenance(_model(denoiser or default_model_name("CT")).card, "off")  # never mirrors
        volume, step = denoised, step + 1
    t0 = time.perf_counter()
    if shared:
        shared_settings = _shared_settings(settings, (det.card, seg.card), modes)
        probs = run_model(seg, volume, spacing, shared_settings, progress=share_progress(progress, step, steps),
                          cancel=cancel)
        # the findings first: their working arrays are gone before the argmax makes its own, so
        # the peak memory is either step's, not both together
        found = findings_from_probabilities(det, probs, volume, spacing, affine=affine,
                                            score_threshold=score_threshold, max_findings=asked)
        first = first_segmentation(seg.card, probs)
        del probs
        result = finish_segmentation(seg, first, volume, spacing, settings=settings, cancel=cancel)
        times["detect + segment (one network run)"] = time.perf_counter() - t0
        settings = shared_settings  # what both steps ran with, for the report below
    else:
        with spacing_warned():  # screen() warned already
            found = run_detector(volume, spacing, det, affine=affine, score_threshold=score_threshold,
                                 max_findings=asked, settings=settings,
                                 progress=share_progress(progress, step, steps), cancel=cancel)
            times["detect"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            result = run_segmentation(volume, spacing, seg, settings=settings,
                                      progress=share_progress(progress, step + 1, steps), cancel=cancel)
        times["segment"] = time.perf_counter() - t0
    models["detect"] = _provenance(det.card, mirror_mode(settings, det.card), settings)
    models["segment"] = _provenance(seg.card, mirror_mode(settings, seg.card), settings)

    found, capped = cut_to(found, max_findings)
    if capped:
        notes.append(capped_note(max_findings, score_threshold))
    lung, lesion = _class_index(result.classes, "lung"), _class_index(result.classes, "nodule")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    lungs = _lungs(result.labels, lung, affine) if lung is not None else {}
    if lungs:
        lung_volumes = {side: lungs[side].voxels * voxel_ml for side in SIDES}
    else:
        count = int((result.labels == lung).sum()) if lung is not None else 0
        lung_volumes = {"lungs": count * voxel_ml}
        notes.append("the segmentation does not show two lungs: findings are not given a side or zone")
    if lung is not None:
        check_lungs_found(sum(lung_volumes.values()), _lung_slab_ml(result.labels, lung, voxel_ml))
    segmented = _lesion_components(result.labels, lesion, voxel_ml, result.lesion_outlines)
    screened = [ScreenedFinding(f, *_position(f, lungs), *segmented(f)) for f in found]
    notes += edge_notes(found, volume.shape)
    elongated = craniocaudal_note(found, spacing[0])
    if elongated:
        notes.append(elongated)
    drawn = outline_note(found)
    if drawn:
        notes.append(drawn)
    cut = lungs_cut_at(result.labels, lung, spacing) if lung is not None else ""
    if cut:
        notes.append(lung_coverage_note(cut))
    category = _highest(f.lung_rads for f in found)
    read = all(f.lung_rads_by_attenuation for f in found)  # "" unless every finding's attenuation was read
    by_attenuation = _highest(f.lung_rads_by_attenuation for f in found) if read else ""
    return ScreeningResult(screened, result.labels, result.classes, lung_volumes, category, models, times,
                           float(score_threshold), denoised, notes, at_operating_point, by_attenuation,
                           result.volumes, lung_sides=lungs, affine=affine, capped=capped,
                           lesion_outlines=result.lesion_outlines, lungs_cut=cut)


def _lung_slab_ml(labels: np.ndarray, lung: int, voxel_ml: float) -> float:
    """The volume of the slices from the first to the last that holds lung: a whole-body CT's
    lungs are a small share of the whole scan but not of their own slices."""
    slices = np.flatnonzero([np.any(labels[z] == lung) for z in range(labels.shape[0])])
    if slices.size == 0:
        return float(labels[0].size) * voxel_ml  # one slice's volume: no lung at all is refused
    return float(slices[-1] - slices[0] + 1) * float(labels[0].size) * voxel_ml


def check_lungs_found(lung_ml: float, slab_ml: float) -> None:
    """Refuse to report on a scan with (almost) no lung: a report with no finding and category 1
    would read as a negative screen, on a CT that is no chest CT or whose lungs were not found.
    ``slab_ml``: the volume of the slices the lung class lies in (``_lung_slab_ml``)."""
    if lung_ml < MIN_LUNG_SHARE * slab_ml:
        raise InputError(f"no aerated lungs found: the segmentation labelled {lung_ml:.1f} mL as lung, under "
                         f"{MIN_LUNG_SHARE:.0%} of the {slab_ml / 1000:.1f} L of the slices it lies in; this does not "
                         "look like a chest CT (or its lungs could not be segmented), so no screening report was made")


def capped_note(max_findings: int, score_threshold: float) -> str:
    """The reports' note when more findings reached the threshold than ``max_findings`` lists:
    the unlisted ones (lower scores) may hold a higher category than the headline's."""
    return (f"more findings scored {score_threshold:g} or more than the {max_findings} listed (at most "
            f"{max_findings} are listed, highest score first): the categories above are of the listed findings "
            "only; list more with a larger max_findings (medai screen/batch --max-findings)")


def lungs_cut_at(labels: np.ndarray, lung: int, spacing) -> str:
    """Where the lungs run on past the scan's first or last slice, e.g. "first slice (9 cm² of
    lung on it)"; "" when neither end slice holds more than ``LUNG_CUT_MM2`` of lung."""
    pixel_mm2 = float(spacing[1]) * float(spacing[2])
    ends = [(name, float(np.count_nonzero(labels[index] == lung)) * pixel_mm2)
            for name, index in (("first", 0), ("last", -1))]
    cut = [(name, area) for name, area in ends if area > LUNG_CUT_MM2]
    return " and ".join(f"{name} slice ({area / 100:.0f} cm² of lung on it)" for name, area in cut)


def lung_coverage_note(where: str) -> str:
    """The reports' note when the lungs reach the scan's end slices (``lungs_cut_at``): the
    volumes and zones are then of the scanned part, and part of the lungs was not seen."""
    return (f"the lungs reach the scan's {where}: the scan may not cover the whole lungs, so the lung volumes "
            "and zones are of the scanned part only and nodules beyond it were not seen (Lung-RADS 0 applies "
            "where part of the lungs cannot be evaluated)")


def _highest(categories) -> str:
    """The highest Lung-RADS category of ``categories``; "1" (nothing to report) when empty."""
    return max(categories, key=LUNG_RADS_ORDER.index, default="1")


def _reporting_threshold(card, score_threshold) -> tuple[float, list[str]]:
    """The score threshold to report at (``None``: the detector card's operating point, else
    ``DEFAULT_SCORE_THRESHOLD``) and the report's note when it is the operating point, whether
    by default or set to it (the widgets start from it)."""
    from .models.card import operating_threshold

    op = operating_threshold(card)
    if score_threshold is None:
        score_threshold = DEFAULT_SCORE_THRESHOLD if op is None else op
    if op is None or abs(float(score_threshold) - op) > 1e-6:
        return float(score_threshold), []
    budget = card.extra["operating_point"].get("fp_per_scan", 1.0)
    return float(score_threshold), [
        f"findings scoring under {op:g} are not reported: the detector's operating point, fitted for at most "
        f"{budget:g} false positive(s) per scan on validation phantoms (a lower threshold lists more candidates, "
        f"most of them false)"]


def _affine(affine, spacing) -> np.ndarray:
    if affine is not None:  # a NaN or singular one crashed in _position (io.validate.check_affine)
        from .io.validate import check_affine

        return check_affine(affine, spacing=spacing)
    out = np.eye(4)
    out[:3, :3] = np.diag(np.asarray(spacing, dtype=float))
    return out


def _one_network(det_card, seg_card, settings) -> bool:
    """Whether the detector reads the segmentation network's own probabilities: same weights,
    grid, window and mirrored passes (full mirroring serves "mirror-lesions" too), and a one-stage
    segmentation-based detector."""
    from .inference.engine import mirror_passes

    same = (det_card.sha256 and det_card.sha256 == seg_card.sha256
            and det_card.weights == seg_card.weights
            and det_card.network == seg_card.network and det_card.spacing == seg_card.spacing
            and det_card.roi_size == seg_card.roi_size and det_card.intensity == seg_card.intensity
            and det_card.output == seg_card.output)
    one_stage = not det_card.draws_boxes and not det_card.extra.get("classifier")
    return bool(same and one_stage and mirror_passes(settings, det_card) == mirror_passes(settings, seg_card))


def _shared_settings(settings, cards, modes):
    """The settings of one network run serving the steps of ``cards``, which asked for the
    mirrorings ``modes``: the fuller mirroring serves both (full mirroring is what
    "mirror-lesions" stands in for), from the lower focus level of the cards mirrored at lesions
    (the lower level serves the step that asked for the higher)."""
    from .inference.engine import MIRRORING_BY_COST
    from .inference.focus import focus_level

    tta = max(modes, key=MIRRORING_BY_COST.index)
    shared = replace(settings, tta=tta)
    if tta == "mirror-lesions":
        shared = replace(shared, focus_probability=min(focus_level(settings, card)
                                                       for card, mode in zip(cards, modes) if mode == tta))
    return shared


def _provenance(card, tta: str, settings=None) -> dict:
    """The report's record of a step's model and the test-time mirroring it ran with (for
    "mirror-lesions", also the lesion probability it mirrored from)."""
    record = {"name": card.name, "sha256": card.sha256 or "", "tta": tta}
    if tta == "mirror-lesions":
        from .inference.focus import focus_level

        record["focus_probability"] = focus_level(settings, card)
    return record


def _class_index(classes: dict[int, dict], name: str) -> int | None:
    for index, c in classes.items():
        if c["name"] == name:
            return index
    return None


@dataclass
class _Lung:
    voxels: int
    mean_l_mm: float  # mean left-right world coordinate (L grows towards the patient's left)
    s_range_mm: tuple[float, float]  # craniocaudal extent, world S (inferior, superior)


def _lungs(labels: np.ndarray, lung: int, affine: np.ndarray) -> dict[str, _Lung]:
    """{"right": _Lung, "left": _Lung} from the two largest lung components; {} unless there
    are two (the card's clean-up keeps at most two) and the smaller holds
    ``MIN_SECOND_LUNG_SHARE`` of the larger."""
    from scipy import ndimage

    comps, n = ndimage.label(labels == lung)
    if n < 2:
        return {}
    sizes = label_sizes(comps, n)[1:]
    # Face-connected pieces, so that lungs touching at a corner still count as two; but then a
    # single lung (a pneumonectomy, a crop) also falls into pieces, and a few-voxel sliver must
    # not become "the other lung" and send half the findings to the wrong side
    largest = np.argsort(sizes)[::-1][:2]
    first, second = sizes[largest]
    if second < MIN_SECOND_LUNG_SHARE * first:
        return {}
    boxes = ndimage.find_objects(comps)
    found = []
    for index in largest + 1:
        box = boxes[index - 1]
        # every k-th voxel in array order: a sample is plenty for a mean and an extent (taken
        # from flat indices: argwhere held all of a lung's coordinates, 0.3 GB on 512 x 512 x 300)
        mine = comps[box] == index
        flat = np.flatnonzero(mine)[:: max(1, int(sizes[index - 1]) // 50000)]
        zyx = np.column_stack(np.unravel_index(flat, mine.shape)) + [sl.start for sl in box]
        world = zyx @ affine[:3, :3].T + affine[:3, 3]  # (S, P, L)
        found.append(_Lung(int(sizes[index - 1]), float(world[:, 2].mean()),
                           (float(world[:, 0].min()), float(world[:, 0].max()))))
    right, left = sorted(found, key=lambda lung_: lung_.mean_l_mm)
    return {"right": right, "left": left}


def _position(f: Finding, lungs: dict[str, _Lung]) -> tuple[str, str]:
    """(side, zone) of a finding's centre: the side of the midline between the two lungs'
    mean left-right positions, and the third of that lung's craniocaudal extent."""
    if not lungs:
        return "", ""
    s_mm, _, l_mm = f.center_mm
    side = "left" if l_mm > (lungs["right"].mean_l_mm + lungs["left"].mean_l_mm) / 2 else "right"
    s_min, s_max = lungs[side].s_range_mm
    if s_max <= s_min:
        return side, ""
    return side, ZONES[int(np.clip((s_mm - s_min) / (s_max - s_min) * 3, 0, 2))]


def _lesion_components(labels: np.ndarray, lesion: int | None, voxel_ml: float,
                       outlines: list[dict] = ()) -> Callable[[Finding], tuple[float, str]]:
    """A function giving, for a finding, the volume (mL) of the segmentation's lesion components
    (26-connected, as the segmentation counts them) that overlap the finding's own mask (0 when
    none does), and their outline kind from the segmentation's ``outlines``
    (``SegmentationResult.lesion_outlines``): "half-maximum", "network", "mixed" when they
    differ, "unknown" for a component no row describes (labels edited after the run: a reader's
    nodule added to them), "" when none overlaps."""
    from .postprocess.components import lesion_components, outline_per_component

    found = lesion_components(labels, lesion) if lesion is not None else None
    if found is None:
        return lambda f: (0.0, "")
    box, comps, n = found
    sizes = label_sizes(comps, n)
    kinds = outline_per_component(comps, n, box, list(outlines))
    start = np.array([b.start for b in box])
    stop = start + comps.shape

    def volume(f: Finding) -> tuple[float, str]:
        if f.mask is None:
            return 0.0, ""
        lo, hi = np.asarray(f.bbox_voxel[0]), np.asarray(f.bbox_voxel[1])
        a, b = np.maximum(lo, start), np.minimum(hi, stop)
        if np.any(b <= a):
            return 0.0, ""
        mask = f.mask[tuple(slice(int(x - o), int(y - o)) for x, y, o in zip(a, b, lo))]
        touched = np.unique(comps[tuple(slice(int(x - o), int(y - o)) for x, y, o in zip(a, b, start))][mask])
        touched = touched[touched > 0]
        found_kinds = {kinds[k] or "unknown" for k in touched}  # "": no row describes it (labels edited since)
        kind = "" if not found_kinds else found_kinds.pop() if len(found_kinds) == 1 else "mixed"
        return float(sizes[touched].sum()) * voxel_ml, kind

    return volume


def screening_record(result: ScreeningResult, source: str = "", key_images: list[str] | None = None,
                     grid: tuple | None = None) -> dict:
    """The report as plain data (``report.json``); ``key_images``: each finding's image path, in
    rank order, relative to the report (``write_key_images``); ``grid``: ``postprocess.report.
    file_grid`` of the scan, for each finding's ``center_file_voxel`` (null without it)."""
    from .postprocess.report import center_file_voxel

    images = key_images or [None] * len(result.findings)
    review = checked_review(result.review, len(result.findings))
    category, by_attenuation = result.categories_after_review()
    reported = any(not s.finding.added_by_reader for s in result.findings)  # by the detector
    kept = not_rejected(result.findings, review)
    return {
        "source": source,
        "lung_rads_note": LUNG_RADS_NOTE,
        "limits": list(REPORT_LIMITS),
        # the report's headline: the category by attenuation where it was read, else by size;
        # None when the software reported nothing, or when the review kept no finding (neither is
        # category 1, which needs a reader who has read the scan: docs/screening.md)
        "headline_category": result.headline_category if reported else None,
        "headline_category_after_review": (by_attenuation or category) if kept else None,
        "slice_convention": SLICE_CONVENTION.replace("*", ""),
        "highest_size_category": result.category,
        "highest_category_by_attenuation": result.category_by_attenuation,
        # the reader's review: the categories of the findings not rejected (equal when none was);
        # the counts are of the detector's findings; "added" counts the reader's own
        "reader_review": _detector_review_counts(result, review),
        "highest_size_category_after_review": category,
        "highest_category_by_attenuation_after_review": by_attenuation,
        "score_threshold": result.score_threshold,
        "lung_volumes_ml": {k: round(v, 1) for k, v in result.lung_volumes_ml.items()},
        "findings": [{"rank": i, "slice": axial_slice(s.finding.center_voxel), **s.to_dict(),
                      "center_lps_mm": lps_position(s.finding), "center_file_voxel": center_file_voxel(s.finding, grid),
                      "review": state,
                      **({"key_image": image} if image else {})}
                     for i, (s, image, state) in enumerate(zip(result.findings, images, review), start=1)],
        "models": result.models,
        "times_s": {k: round(v, 2) for k, v in result.times_s.items()},
        "denoised": result.denoised is not None,
        "findings_capped": result.capped,  # more reached the threshold than max_findings listed
        # where the lungs run past the scan's end slices (null: they do not): Lung-RADS 0 may apply
        "lungs_cut": result.lungs_cut or None,
        # every lesion component of the segmentation as its run made it, largest first, with its outline kind
        "segmented_lesions": result.lesion_outlines,
        "notes": result.notes,
    }


def _segmented_cell(s: ScreenedFinding) -> str:
    """The segmented volume in mm³, marked where some of it keeps the network's outline."""
    mark = NOT_REFINED_MARK if s.segmented_outline in NOT_REFINED else ""
    return f"{s.segmented_volume_ml * 1000:.0f}{mark}"


def _listed(n: int, result: ScreeningResult) -> str:
    """"3 findings with score ≥ 0.5", or, when max_findings cut the list, that they are the
    highest-scoring of more (the headline must not read as the whole list)."""
    plural = "s" if n != 1 else ""
    if result.capped:
        return (f"the {n} highest-scoring finding{plural} listed of more with score ≥ {result.score_threshold:g}: "
                "see the note on max_findings")
    return f"{n} finding{plural} with score ≥ {result.score_threshold:g}"


def screening_markdown(result: ScreeningResult, source: str = "", key_images: list[str] | None = None) -> str:
    """The report a reader opens (``report.md``); with ``key_images`` (each finding's image path,
    in rank order, relative to the report) it ends with a key image of each finding."""
    review = checked_review(result.review, len(result.findings))
    added = sum(s.finding.added_by_reader for s in result.findings)
    n = len(result.findings) - added  # the detector's
    reviewed = is_reviewed(review)
    category, by_attenuation = result.categories_after_review()
    lines = [f"# Lung-nodule screening: {source}".rstrip(": "), "", f"> {LUNG_RADS_NOTE}.", ""]
    typed = bool(result.findings and result.category_by_attenuation)  # every finding's type was read
    shown = (by_attenuation or category) if typed else category  # after the review when there is one
    what = "Lung-RADS category (v2022, baseline screen, by each nodule's attenuation)" if typed else "size category"
    if reviewed:
        counts = _detector_review_counts(result, review)
        more = (f"; the reader added {added} nodule{'s' if added != 1 else ''} the detector did not report"
                if added else "")
        # neither "the detector reported nothing" nor "the reader rejected every finding" is a
        # category 1, which needs a reader who has read the whole scan
        before = (result.headline_category if typed else result.category) if n else "no finding reported"
        if not not_rejected(result.findings, review):
            shown = "none kept (Lung-RADS 1 needs a reader who has read the scan)"
        lines += [f"**Highest {what} after the reader's review: {shown}** (of {_listed(n, result)}, the reader accepted "
                  f"{counts['accepted']}, rejected {counts['rejected']} and left {counts['not_reviewed']} not "
                  f"reviewed{more}; rejected findings do not count). Before the review: {before}.", ""]
    elif n == 0 and not added:
        lines += [f"**No nodule reported by the software** (no finding with score ≥ {result.score_threshold:g}). "
                  "This is not a negative screen: Lung-RADS 1 needs a reader who has read the scan.", ""]
    else:
        lines += [f"**Highest {what} among the reported findings: {shown}** ({_listed(n, result)}).", ""]
    if result.lungs_cut:  # Lung-RADS 0: part or all of the lungs cannot be evaluated
        lines += [f"**Lung-RADS 0 (incomplete) may apply: the lungs reach the scan's {result.lungs_cut}, so part "
                  "of them was not scanned; any category here is of the scanned part only.**", ""]
    if typed and not_rejected(result.findings, review):  # the size category alone, for comparison
        # the detector's own list empty: no category before (an empty list reads "1" in result.category)
        earlier = result.category if n else "no finding reported"
        after = f" after the review ({earlier} before)" if reviewed else ""
        lines += [f"By size alone, as if every nodule were solid: {category}{after}.", ""]
    lines.append("Lung volumes: " + ", ".join(f"{k} {v:,.0f} mL" for k, v in result.lung_volumes_ml.items()) + ".")
    if result.denoised is not None:
        lines.append("The models read the denoised volume.")
    lines.append("")
    if result.findings:
        reader = (" reader |", "---|") if reviewed else ("", "")
        lines += ["| # | score | side | zone | slice (S mm) | long axis mm | short axis mm | mean diameter mm | "
                  f"volume mm³ | segmented mm³ | size category | attenuation: category |{reader[0]}",
                  f"|---|---|---|---|---|---|---|---|---|---|---|---|{reader[1]}"]
        for i, (s, state) in enumerate(zip(result.findings, review), start=1):
            f = s.finding
            cell = f" {_reader_cell(f, state)} |" if reviewed else ""
            lines.append(f"| {i} | {score_cell(f)} | {s.side or '?'} | {s.zone or '?'} | "
                         f"{axial_slice(f.center_voxel)} ({f.center_mm[0]:.1f}) | "
                         f"{f.diameter_mm:.1f} | {f.short_axis_mm:.1f} | {f.mean_diameter_mm:.1f} | "
                         f"{f.volume_ml * 1000:.0f} | {_segmented_cell(s)} | {f.lung_rads} | "
                         f"{attenuation_cell(f)} |{cell}")
        grown = (" (for a nodule the reader added, the mask grown from the marked point: *score* reads "
                 "*reader*)") if added else ""
        lines += ["", "*Zone*: third of that lung's craniocaudal extent (not a lobe). *Axes*: on the axial slice "
                  "where the finding is largest, each to one decimal; the mean is of the two, to one decimal "
                  f"(Lung-RADS v2022). *Volume*: the detector's mask{grown}; *segmented*: the segmentation's "
                  "nodule components that overlap it (0: the segmentation did not label it). *Size category*: "
                  f"Lung-RADS for a solid nodule of that mean diameter. {SLICE_CONVENTION}.", ""]
        if any(s.segmented_outline in NOT_REFINED for s in result.findings):
            lines += [f"{NOT_REFINED_MARK} {NOT_REFINED_NOTE}.", ""]
        if any(s.finding.attenuation for s in result.findings):
            lines += [f"{ATTENUATION_NOTE}.", ""]
    for note in result.notes:
        lines.append(f"Note: {note}.")
    if shown in ("1", "2") or str(shown).startswith("none kept"):  # no nodule left: the warning as much
        lines.append(f"Limit: {SMALL_NODULE_LIMIT}.")
    lines += ["", "Limits: " + "; ".join(REPORT_LIMITS) + "."]
    lines += ["", "Models: " + "; ".join(f"{step} `{m['name']}` (sha256 {m['sha256'][:12]}, mirroring {m['tta']}"
                                        + (f" from p >= {m['focus_probability']:g}" if "focus_probability" in m else "")
                                        + ")" for step, m in result.models.items()) + ".",
              "Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.times_s.items()) + "."]
    if key_images and result.findings:
        lines += ["", "## Key images", "",
                  "Each finding on its axial slice in the lung window (W 1500 / L −600 HU), laid out as the array "
                  "is (napari-medai's readers put the patient's right on the left and anterior at the top): "
                  "the whole slice with the finding ringed and the magnified field boxed, "
                  f"then that {KEY_IMAGE_FOV_MM:g} mm field with the outline the finding was measured on and a "
                  "10 mm bar.", ""]
        for i, (s, image, state) in enumerate(zip(result.findings, key_images, review), start=1):
            f = s.finding
            how = "added by the reader" if f.added_by_reader else f"score {f.score:.2f}"
            rejected = ", rejected by the reader" if state == REJECTED else ""
            category_text = (f"{f.attenuation}, Lung-RADS {f.lung_rads_by_attenuation}" if f.lung_rads_by_attenuation
                             else f"Lung-RADS size category {f.lung_rads}")
            lines += [f"**Finding {i}** (slice {axial_slice(f.center_voxel)}; on its largest axial section, long "
                      f"axis {f.diameter_mm:.1f} mm and mean diameter {f.mean_diameter_mm:.1f} mm; {how}; "
                      f"{category_text}{rejected})", "",
                      f"![Finding {i}]({image})", ""]
    return "\n".join(lines) + "\n"


def _reader_cell(f: Finding, state: str) -> str:
    if f.added_by_reader:
        return "added, rejected" if state == REJECTED else "added"
    return state or "not reviewed"


def _detector_review_counts(result: ScreeningResult, review) -> dict:
    """The review counts of the detector's findings, and how many the reader added."""
    mine = [state for s, state in zip(result.findings, review) if not s.finding.added_by_reader]
    return {**review_counts(mine), "added": len(review) - len(mine)}


IMAGE_FILES = ("segmentation.nii.gz", "denoised.nii.gz")  # the NIfTI files write_screening writes or removes
REPORT_FILES = ("report.md", "report.json", "findings.csv", *IMAGE_FILES)  # each written, or removed
KEY_IMAGES = "key_images"  # its finding_NN.png are written, and those beyond this report's findings removed
# what report.json said while an earlier version wrote the other files one by one: they are that
# run's, not a finished report's (write_screening now renames them all into place at the end)
UNFINISHED = "a screening run began writing this folder and did not finish"


def check_out_dir(source, out_dir) -> None:
    """Refuse a report folder where ``write_screening`` would write over, or remove, a file that
    is not its own: the scan itself (``source``: its path; None: not known) — screening
    ``D/segmentation.nii.gz`` into ``D`` replaced the CT with its own labels — or any file of a
    report file's name that the folder's report.json does not list, with the content it lists
    (``files``): a reader's hand-corrected segmentation saved there, or over the old one, was
    silently replaced.  A previous report's own files may go, so re-running into a folder works.
    Callers check before any model runs."""
    from pathlib import Path

    from .models.registry import sha256_of

    out = Path(out_dir)
    if source is not None and Path(source).is_dir() and out.resolve() == Path(source).resolve():
        # a DICOM series folder: the report would be written among the user's slices
        raise InputError(f"{out_dir} is the DICOM series folder being screened, and its report would be written "
                         "among its slices; choose another folder")
    if source is not None:
        for name in IMAGE_FILES:
            if (out / name).resolve() == Path(source).resolve():
                raise InputError(f"{source} is the input itself: the report's {name} in {out_dir} would replace "
                                 "the scan; choose another folder")
    if not out.is_dir():
        return
    claims = _claims(out)
    for name in _report_files(out):
        if name not in claims:
            why = ("it is no screening report" if name == "report.json"
                   else "the folder's report.json does not list it")
            raise InputError(f"{out / name} is not a file of an earlier screening report ({why}), and a "
                             f"report written to {out} would replace or delete it; move it elsewhere or choose "
                             "another folder")
        if claims[name] is not None and sha256_of(out / name) != claims[name]:
            raise InputError(f"{out / name} was changed after the screening report in {out} wrote it (its "
                             "sha256 is not the one report.json lists), and a new report would replace or delete "
                             "it; move it elsewhere or choose another folder")


def _report_files(out) -> list[str]:
    """The files in ``out`` that ``write_screening`` would replace or delete, relative to ``out``."""
    names = [name for name in REPORT_FILES if (out / name).is_file()]
    if (out / KEY_IMAGES).is_dir():  # save_key_images rewrites or removes every finding_<rank>.png
        names += sorted(f"{KEY_IMAGES}/{p.name}" for p in (out / KEY_IMAGES).glob("finding_*.png")
                        if p.stem.removeprefix("finding_").isdigit())
    return names


def _report_record(out) -> dict | None:
    """``out/report.json`` as a dict, or None (none, unreadable, not JSON, not an object)."""
    import json

    try:
        record = json.loads((out / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none, unreadable, or not JSON: nothing there is ours
        return None
    return record if isinstance(record, dict) else None


def finished_report_files(out) -> dict:
    """``_claims`` of a finished report only: {} where the report.json there says its run did not
    finish (``UNFINISHED``), whose files are that run's, not an earlier one's."""
    record = _report_record(out)
    return {} if record is None or record.get("note") == UNFINISHED else _claims(out, record)


def _claims(out, record: dict | None = None) -> dict:
    """The files ``out/report.json`` (or ``record``, its content) says a screening wrote in ``out``:
    path -> sha256, or None where only the name is known (an unfinished run, or a report from
    before ``files``); {} without a screening's report.json there."""
    if record is None:
        record = _report_record(out)
    if record is None:
        return {}
    ours = _is_screening_record(record) or record.get("note") == UNFINISHED
    if ours and isinstance(record.get("files"), dict):  # another program's JSON may say "files" too
        return {**record["files"], "report.json": None}
    if not _is_screening_record(record):
        return {}
    # an older version's report (no ``files``): the files it wrote, by name
    names = ["report.json", "report.md", "findings.csv", "segmentation.nii.gz"]
    names += ["denoised.nii.gz"] if record.get("denoised") is True else []
    names += [f["key_image"] for f in record["findings"]
              if isinstance(f, dict) and isinstance(f.get("key_image"), str)]
    return dict.fromkeys(names)


def _is_screening_record(record) -> bool:
    """Whether a parsed JSON file is a report ``screening_record`` wrote."""
    return (isinstance(record, dict) and {"lung_rads_note", "models"} <= record.keys()
            and isinstance(record.get("findings"), list))


def check_report_json(path) -> None:
    """Refuse to replace ``path`` (a report's .json) unless it is missing or a screening report:
    the save dialog asks about the .md, and a reader's own ``notes.json`` beside a chosen
    ``notes.md`` was silently replaced."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    if not _is_screening_record(record):
        raise InputError(f"{path} exists and is not a screening report, and the report's .json would replace "
                         "it; choose another name or move that file")


def check_key_image_folder(report_json, folder: str) -> None:
    """Refuse to write a saved report's key images into ``folder`` (beside ``report_json``) when it
    already holds images that the .json being replaced does not link: another report's, whose
    name maps to the same folder ("exam report" and "exam_report" both to exam_report_key_images),
    or the reader's own.  Saving the second replaced and deleted the first report's images."""
    import json
    from pathlib import Path

    report_json = Path(report_json)
    images = sorted((report_json.parent / folder).glob("*.png"))
    if not images:
        return
    try:
        record = json.loads(report_json.read_text(encoding="utf-8")) if report_json.exists() else {}
    except (OSError, ValueError):
        record = {}
    linked = {str(f.get("key_image", "")) for f in record.get("findings", []) if isinstance(f, dict)} \
        if isinstance(record, dict) else set()
    theirs = [p.name for p in images if f"{folder}/{p.name}" not in linked]
    if theirs:
        raise InputError(f"{folder}/ beside {report_json.name} holds images this report did not write "
                         f"({', '.join(theirs[:3])}{' …' if len(theirs) > 3 else ''}): another report's, whose name "
                         "gives the same folder, would lose them; choose another name")


def write_screening(result: ScreeningResult, volume, source: str, out_dir) -> list:
    """Write ``medai screen``'s files for ``result`` into ``out_dir`` (created if missing):
    report.md, report.json, findings.csv, segmentation.nii.gz (and denoised.nii.gz; a previous
    run's is removed when this result has none, so a report never sits beside another run's
    image), on the grid and affine of ``volume`` (the ``io.Volume`` that was screened), and a key
    image of each finding on ``volume`` itself (key_images/finding_NN.png, linked from the report).
    report.json lists the other files with their sha256 (``files``): what the next run into this
    folder may replace.  Refuses (``check_out_dir``) a folder whose files would replace the scan
    ``volume`` was read from, or a file no earlier report there wrote.  The files are written all
    or none (``io.atomic.all_or_nothing``): a failed write leaves the earlier report as it was.
    Returns the paths written."""
    import json
    from pathlib import Path

    from .io import Volume, write_volume
    from .io.atomic import all_or_nothing, discard, pending, write_text_atomic
    from .models.registry import sha256_of
    from .postprocess.report import file_grid, findings_to_csv

    if not isinstance(volume, Volume):  # its grid and file are what the outputs are written on
        raise InputError(f"write_screening needs the screened scan as a Volume (read_volume's result), "
                         f"not a {type(volume).__name__}")

    out = Path(out_dir)
    check_out_dir(volume.metadata.get("source"), out)
    out.mkdir(parents=True, exist_ok=True)
    md, js, csv = out / "report.md", out / "report.json", out / "findings.csv"
    # every file or none: a run stopped halfway (disk full, Ctrl+C) left a new report.md beside the
    # earlier segmentation, under a report.json that said the run did not finish (UNFINISHED)
    with all_or_nothing():
        images = write_key_images([s.finding for s in result.findings], volume.data, volume.spacing, out,
                                  fov_mm=KEY_IMAGE_FOV_MM)
        write_text_atomic(md, screening_markdown(result, source, images))
        grid = file_grid(volume.data.shape, volume.metadata)  # center_file_voxel, where the scan is a NIfTI file
        write_text_atomic(csv, findings_to_csv([s.finding for s in result.findings], review=result.review or None,
                                               grid=grid))
        # on the input file's grid, voxel for voxel (Volume.derived)
        labels = volume.derived(result.labels, is_labels=True)
        paths = [md, js, csv, Path(write_volume(labels, out / "segmentation.nii.gz", classes=result.classes))]
        if result.denoised is not None:
            paths.append(Path(write_volume(volume.derived(result.denoised), out / "denoised.nii.gz")))
        else:  # a --denoise run's image would pass for this report's
            discard(out / "denoised.nii.gz")
        paths += [out / image for image in images]
        record = screening_record(result, source, images, grid)
        # of the files as written (still staged beside their names)
        record["files"] = {path.relative_to(out).as_posix(): sha256_of(pending(path)) for path in paths if path != js}
        write_text_atomic(js, json.dumps(record, indent=2))  # last: renamed after the files it lists
    return paths
