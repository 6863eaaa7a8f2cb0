"""The built-in nodule detector: segmentation-based detection on top of the segmentation model.

Detection reuses the segmentation network's nodule probability (one network, one pass; see
docs/detection.md for why).  "Training" the detector is choosing its post-processing on
validation phantoms (never the benchmark's held-out seeds, never lung1): the candidate
threshold that maximises the mean FROC sensitivity, then how each finding is measured: its
mask as the network draws it, or moved to the CT's half-maximum contour within a reach
(``postprocess.refine``), whichever measures the validation nodules' diameters best.  The
result is a model card that points at the segmentation weights file, with that file's sha256.
"""

from __future__ import annotations

import time

import numpy as np

DEFAULT_EXTRA = {
    "method": "segmentation",
    "probability_channel": 2,
    "within_classes": [1],
    "margin_mm": 5.0,
    "inside_body": True,  # the lung field excludes air outside the patient (postprocess.body)
    "field_components": 2,  # ... and anything but its two largest parts (stomach gas, the chin)
    "mask_threshold": 0.5,
    "min_volume_mm3": 0.0,
}
CANDIDATE_THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
REFINE_REACHES_MM = (1.0, 1.5, 2.0)  # mask refinement reaches tried (half-maximum contour)
MEASURE_MARGIN_MM = 0.1  # median diameter error a refinement must save to be chosen
MEASURE_SEEDS = range(2000, 2012)  # validation phantoms (the lesion-threshold fit's): not trained on, not benchmarked


def builtin_card(name: str):
    """The card of built-in model ``name``.  The detector's card names its weights file in the
    weights folder (with its sha256), so it can only build on a built-in model: a card or
    weights path is refused here, before any phantom is made, not after the whole fit."""
    from pathlib import Path

    from ..errors import ModelError
    from ..models.registry import WEIGHTS_DIR, get_card

    if Path(name).name != name or Path(name).suffix in (".json", ".pt", ".ts"):
        raise ModelError(f"'{name}' is a file path: the detector builds on a built-in model, so name one "
                         f"(a card in {WEIGHTS_DIR}, without .json)")
    return get_card(name)


def _require_nodules(nodule_lists, seeds, what: str) -> None:
    """Refuse phantoms without a nodule among them (``nodule_lists``: each phantom's nodules):
    every FROC or error would be NaN, and NaN would pick a setting at random and go into the card."""
    from ..errors import InputError

    if not any(nodule_lists):
        raise InputError(f"none of the {len(seeds)} validation phantom(s) holds a nodule, so {what} cannot be "
                         "fitted: choose other seeds; no card was written")


def phantom_case_findings_inputs(seed: int):
    """(hu, spacing, nodules) of validation phantom ``seed`` with its training acquisition."""
    from .phantom_dataset import phantom_for

    ph = phantom_for(seed)
    return ph.hu, ph.spacing, ph.nodules


def froc_row(found, shape, spacing, nodules) -> tuple:
    """One scan's (scores, centres, lesion mask, excluded) row for ``metrics.froc``."""
    from ..metrics import target_mask

    mask = target_mask(shape, spacing, [n["center_voxel"] for n in nodules], [n["diameter_mm"] for n in nodules])
    return [f.score for f in found], [f.center_voxel for f in found] or np.zeros((0, 3)), mask, []


def detector_card(seg_card, **fields):
    """A detection card on ``seg_card``'s network, geometry, classes and intensity."""
    from ..models.card import ModelCard

    return ModelCard(task="detection", modality=seg_card.modality, spacing=seg_card.spacing,
                     roi_size=seg_card.roi_size, spatial_dims=3, in_channels=1, out_channels=seg_card.out_channels,
                     classes=seg_card.classes, intensity=seg_card.intensity, network=seg_card.network,
                     output=seg_card.output, **fields)


def nodule_froc(prob_maps, cases, candidate_threshold: float, extra: dict) -> dict:
    """FROC of findings extracted from precomputed (probability, field, spacing) triples."""
    from ..metrics import froc
    from ..postprocess import findings_from_probability

    rows = []
    for (prob, field, spacing), (shape, nodules) in zip(prob_maps, cases):
        found = findings_from_probability(prob, spacing, candidate_threshold=candidate_threshold,
                                          mask_threshold=float(extra["mask_threshold"]),
                                          field=field, field_margin_mm=float(extra["margin_mm"]))
        rows.append(froc_row(found, shape, spacing, nodules))
    return froc(rows)


def choose_mask_refinement(errors: dict, margin: float = MEASURE_MARGIN_MM):
    """``errors``: {None (no refinement) or reach mm: median absolute diameter error (mm)}.  The
    shortest reach within ``margin`` of the smallest error, if it beats no refinement by
    ``margin``; else None (the segmentation fit's rule, on errors instead of Dice)."""
    from .lesion_threshold import choose_refinement

    return choose_refinement({r: -e for r, e in errors.items()}, margin)


def measurement_fit(cases, extra: dict, reaches=REFINE_REACHES_MM, log=print) -> tuple:
    """Median measurement errors of the findings on ``cases`` ((prob, field, hu, spacing, nodule
    mask, nodules) each) without and with mask refinement at each reach; returns (chosen reach or
    None, {reach: metrics.measurement_errors})."""
    from ..metrics import measurement_errors, measurement_rows, target_mask
    from ..postprocess import findings_from_probability
    from ..postprocess.refine import refine_findings

    rows = {r: [] for r in (None, *reaches)}
    for prob, field, hu, spacing, reference, nodules in cases:
        found = findings_from_probability(prob, spacing, candidate_threshold=float(extra["candidate_threshold"]),
                                          mask_threshold=float(extra["mask_threshold"]), field=field,
                                          field_margin_mm=float(extra["margin_mm"]))
        target = target_mask(hu.shape, spacing, [n["center_voxel"] for n in nodules],
                             [n["diameter_mm"] for n in nodules])
        rows[None] += measurement_rows(reference, target, found, spacing)
        for r in reaches:
            rows[r] += measurement_rows(reference, target, refine_findings(found, hu, spacing, field, r), spacing)
    errors = {r: measurement_errors(v) for r, v in rows.items()}
    for r, e in errors.items():
        log(f"masks {'as drawn' if r is None else f'refined within {r} mm'}: {e['n']} nodules hit, median |diameter "
            f"error| {e['diameter_abs_mm']:.2f} mm, |volume error| {e['volume_abs_pct']:.1f} %, "
            f"Lung-RADS agrees {e['category_agree']}/{e['n']}")
    return choose_mask_refinement({r: e["diameter_abs_mm"] for r, e in errors.items()}), errors


def fit_detector(seg_model: str, seeds, out_name: str = "lung-nodule-detection", log=print, install=True,
                 measure_seeds=MEASURE_SEEDS, device: str = "auto"):
    """Choose the candidate threshold (FROC on ``seeds``) and the finding masks' refinement
    (diameter error on ``measure_seeds``) on validation phantoms; write the detector's card.
    ``device``: where the segmentation network runs ("auto", "cpu", "cuda", "cuda:N")."""
    from ..inference import InferenceSettings, run_model
    from ..models import load_model
    from ..phantoms.tissues import NODULE
    from ..postprocess.refine import HALF_MAXIMUM
    from ..postprocess.findings import card_field
    from ..models.card import save_card
    from ..models.registry import WEIGHTS_DIR, sha256_of
    from ..inference.focus import focus_level
    from .phantom_dataset import phantom_for

    from .phantom_dataset import validation_seeds

    t0 = time.time()
    seeds = validation_seeds(seeds, "the detector's fit")
    measure_seeds = validation_seeds(measure_seeds, "the measurement fit")
    seg_card = builtin_card(seg_model)  # before any phantom: the card is written on it
    seg = load_model(seg_model)
    extra = dict(DEFAULT_EXTRA)
    if "tta" in seg.card.extra:  # the probabilities fitted on are mirrored as the segmentation's are
        extra["tta"] = seg.card.extra["tta"]
        if extra["tta"] == "mirror-lesions":  # ... but from a lower level than the segmentation's: the
            # candidates start at CANDIDATE_THRESHOLDS[0], and a voxel the plain pass puts under half
            # of that reaches it only where the mirrored views average 2.3 times more
            extra["focus_probability"] = min(min(CANDIDATE_THRESHOLDS) / 2, focus_level(None, seg.card))
    prob_maps, cases, measure_cases = [], [], []
    for seed in sorted(set(seeds) | set(measure_seeds)):  # each phantom is run once
        ph = phantom_for(seed)
        hu, spacing, nodules = ph.hu, ph.spacing, ph.nodules
        probs = run_model(seg, hu, spacing, InferenceSettings(device=device, tta=extra.get("tta", "auto"),
                                                              focus_probability=extra.get("focus_probability")))
        field = card_field(probs, extra, extra["probability_channel"], hu, spacing)
        prob = probs[extra["probability_channel"]].copy()
        del probs
        if seed in seeds:
            prob_maps.append((prob, field, spacing))
            cases.append((hu.shape, nodules))
        if seed in measure_seeds:
            measure_cases.append((prob, field, hu, spacing, ph.labels == NODULE, nodules))
        log(f"validation phantom {seed}: {len(nodules)} nodule(s)")
    _require_nodules([nodules for _, nodules in cases], seeds, "the candidate threshold")
    _require_nodules([case[-1] for case in measure_cases], measure_seeds, "the measurement")
    scores = {t: nodule_froc(prob_maps, cases, t, extra) for t in CANDIDATE_THRESHOLDS}
    for t, r in scores.items():
        log(f"candidate threshold {t}: mean FROC {r['mean']:.3f} {r['sensitivity']}")
    best = max(CANDIDATE_THRESHOLDS, key=lambda t: (scores[t]["mean"], -t))
    extra["candidate_threshold"] = best
    reach, errors = measurement_fit(measure_cases, extra, log=log)
    if reach is not None:
        extra["mask_refine"] = {"reach_mm": reach, "level": HALF_MAXIMUM}
    log(f"chosen: candidate threshold {best}, finding masks "
        + ("as drawn" if reach is None else f"refined within {reach} mm"))
    card = detector_card(
        seg_card, name=out_name,
        description=("Lung-nodule detector: connected components of the nodule probability of "
                     f"'{seg_model}' inside the lung field, scored by peak probability"),
        weights=seg_card.weights,
        sha256=sha256_of(WEIGHTS_DIR / seg_card.weights),
        train_command=f"medai train detection --from {seg_model} --seeds {seeds[0]} {seeds[-1] + 1}",
        training={"method": "post-processing fitted on validation phantoms", "seeds": list(seeds),
                  "candidate_thresholds_tried": list(CANDIDATE_THRESHOLDS),
                  "measurement_seeds": measure_seeds, "mask_refine_reaches_tried_mm": list(REFINE_REACHES_MM),
                  "time_s": round(time.time() - t0)},
        scores={"validation_froc_mean": scores[best]["mean"],
                "validation_froc": {str(k): v for k, v in scores[best]["sensitivity"].items()},
                "validation_measurement": {"as drawn" if r is None else f"refined {r} mm": e
                                           for r, e in errors.items()}},
        extra=extra,
    )
    if install:
        path = save_card(card, WEIGHTS_DIR / f"{out_name}.json")
        log(f"wrote {path}")
    return card, scores


def fit_two_stage_detector(seg_model: str, candidate_weights: str, classifier: str, seeds,
                           out_name: str = "lung-nodule-detection", log=print, install=True,
                           first_pass_score: str = "classifier", device: str = "auto"):
    """The two-stage detector: ``candidate_weights`` (a high-recall run of ``seg_model``'s
    network) proposes components above the classifier's candidate threshold, ``classifier``
    scores them.  Nothing is chosen here; the validation FROC goes on the card.  ``device``:
    where the networks run."""
    import shutil

    import torch

    from ..inference import InferenceSettings
    from ..inference.confirm import score_candidates
    from ..metrics import froc
    from ..models.card import save_card
    from ..models.loading import LoadedModel
    from ..models.registry import WEIGHTS_DIR, sha256_of
    from ..postprocess.findings import findings_from_scored_components

    from .phantom_dataset import validation_seeds

    t0 = time.time()
    seeds = validation_seeds(seeds, "the two-stage fit")
    seg_card, clf_card = builtin_card(seg_model), builtin_card(classifier)
    extra = dict(DEFAULT_EXTRA, classifier=classifier, first_pass=seg_model, first_pass_score=first_pass_score,
                 candidate_threshold=float(clf_card.extra.get("candidate_threshold", 0.5)))
    card = detector_card(
        seg_card, name=out_name,
        description=(f"Two-stage lung-nodule detector: the nodules of '{seg_model}' and the further candidates "
                     "of a high-recall nodule network inside the lung field, each scored by the classifier "
                     f"'{classifier}' from a patch around it"),
        extra=extra,
        train_command=(f"medai train detection --from {seg_model} --candidate-weights {candidate_weights} "
                       f"--classifier {classifier} --first-pass-score {first_pass_score} "
                       f"--seeds {seeds[0]} {seeds[-1] + 1}"),
    )
    from ..models.networks import build_network

    network = build_network(card)
    network.load_state_dict(torch.load(candidate_weights, map_location="cpu", weights_only=True))
    detector = LoadedModel(card, network.eval())
    rows, nodule_lists = [], []
    for seed in seeds:
        hu, spacing, nodules = phantom_case_findings_inputs(seed)
        scored = score_candidates(hu, spacing, detector, InferenceSettings(device=device))
        found = findings_from_scored_components(scored.candidates, scored.prob, scored.scores, spacing)
        rows.append(froc_row(found, hu.shape, spacing, nodules))
        log(f"validation phantom {seed}: {len(nodules)} nodule(s), {len(found)} scored candidates")
        nodule_lists.append(nodules)
    _require_nodules(nodule_lists, seeds, "the two-stage FROC")
    result = froc(rows)
    log(f"validation mean FROC {result['mean']:.3f} {result['sensitivity']}")
    card.training = {"method": "two-stage: high-recall candidates + patch classifier; FROC on validation phantoms",
                     "seeds": list(seeds), "candidate_weights": str(candidate_weights), "time_s": round(time.time() - t0)}
    card.scores = {"validation_froc_mean": result["mean"],
                   "validation_froc": {str(k): v for k, v in result["sensitivity"].items()}}
    if install:
        weights = WEIGHTS_DIR / f"{out_name}.pt"
        shutil.copyfile(candidate_weights, weights)
        card.weights, card.sha256, card.source_dir = weights.name, sha256_of(weights), WEIGHTS_DIR
        log(f"wrote {save_card(card, WEIGHTS_DIR / f'{out_name}.json')}")
    return card, result
