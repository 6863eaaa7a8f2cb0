"""Fit the lesion probability threshold of a segmentation model on validation phantoms.

The argmax hands a voxel to the nodule class only when the nodule is the most likely class;
small or faint nodules (ground glass, thick slices) often peak below that.  A lower threshold
on the lesion probability recovers them at the cost of more false-positive voxels.  The
threshold is chosen for the best mean per-scan nodule Dice on validation phantoms that
neither the training nor the benchmark uses, with the card's full post-processing applied,
and is written into the card's ``extra["lesion_threshold"]`` (read by ``api.segment``); 0.5 means
the argmax alone.

The same fit decides the card's test-time mirroring (``extra["tta"]``, see
``inference.engine``): averaging the volume's and its three mirror images' probabilities costs
up to four times the inference time, so it is switched on only where its best threshold beats
the plain run's best by ``MARGIN``.  By default the mirrored choice tried is "mirror-lesions"
(``inference.focus``: the mirrored passes only where the plain pass sees a possible lesion);
"mirror" mirrors every window.

Asked to (``reaches``), it also decides an edge refinement (``extra["lesion_refine"]``, see
``postprocess.refine``): each reach is scored at every threshold, and the refinement is
switched on only where it beats the unrefined best by ``MARGIN``; among the reaches within
``MARGIN`` of the best, the shortest is taken (the less it may move, the less it can go wrong
on a scan unlike the validation phantoms).  Unlimited, the refinement lowered the nodule Dice on
the real lung1 CT by growing small false positives along their vessels; limited to confident
components (below) it raised it (docs/segmentation.md).

Asked to (``confidences``), each of those is also scored with the lower threshold and the
refinement limited to components that reach a confidence level q somewhere
(``extra["lesion_confident"]``); among the levels within ``MARGIN`` of the best, the highest
is taken (the fewer components a rule enlarges, the less it can enlarge a false positive on a
scan unlike the phantoms), and None (every component) only where no level comes within it.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np

THRESHOLDS = (0.5, 0.4, 0.3, 0.2, 0.15, 0.1)
MARGIN = 0.005  # mean Dice a lower threshold must gain to be chosen
REACHES_MM = (1.0, 1.5, 2.0)  # edge refinement reaches tried (at the half-maximum level)
# confidence levels tried for limiting the lower threshold and the refinement to components that
# reach them (``postprocess.components.confident_components``); None: every component
CONFIDENCES = (0.9, 0.99)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / s if s else float("nan")


def choose_threshold(means: dict[float, float], margin: float = MARGIN) -> float:
    """The highest threshold whose mean Dice is within ``margin`` of the best: a lower threshold
    must earn its extra false-positive voxels by a real gain, not by noise on a dozen scans."""
    scored = {t: m for t, m in means.items() if m == m}  # NaN: no scan had a nodule
    if not scored:
        return 0.5
    top = max(scored.values())
    return max(t for t, m in scored.items() if m >= top - margin)


def validation_scans(seeds, lesion: int, inside_body: bool):
    """For each validation phantom with a lesion: (seed, phantom, reference lesion mask, the body
    mask or None).  Scans without a lesion are skipped: Dice is undefined there."""
    from ..postprocess.body import body_mask
    from .phantom_dataset import phantom_for
    from .seg_data import chest_targets

    for seed in seeds:
        ph = phantom_for(int(seed))
        truth = chest_targets(ph.labels) == lesion
        if truth.any():
            yield seed, ph, truth, body_mask(ph.hu, ph.spacing) if inside_body else None


def model_run(loaded, ph, settings=None):
    """The model's class probabilities on phantom ``ph`` and their argmax."""
    from ..api import _argmax_small
    from ..inference import run_model

    probs = run_model(loaded, ph.hu, ph.spacing, settings)
    return probs, _argmax_small(probs)


def validation_cases(loaded, seeds, lesion: int, inside_body: bool, settings=None):
    """``validation_scans`` with the model's run on each: (seed, phantom, reference lesion mask,
    class probabilities, their argmax, the body mask or None)."""
    for seed, ph, truth, body in validation_scans(seeds, lesion, inside_body):
        probs, base = model_run(loaded, ph, settings)
        yield seed, ph, truth, probs, base, body
        del probs, base  # before the next scan's probabilities exist


def choose_mirroring(best_means: dict[str, float], margin: float = MARGIN) -> str:
    """``best_means``: {mirroring choice: its best mean Dice}.  A mirrored choice only where the
    best of them beats the plain run's by ``margin``; then the cheapest within ``margin`` of
    that best (the refinement's rule)."""
    off = best_means.get("off", math.nan)
    mirrored = {m: v for m, v in best_means.items() if m != "off" and not math.isnan(v)}
    if not mirrored:
        return "off"
    top = max(mirrored.values())
    if not math.isnan(off) and top < off + margin:
        return "off"
    from ..inference.engine import MIRRORING_BY_COST

    return min((m for m, v in mirrored.items() if v >= top - margin), key=MIRRORING_BY_COST.index)


def choose_confidence(best_means: dict, margin: float = MARGIN):
    """``best_means``: {None (every component) or a confidence level: best mean Dice}.  The
    highest level within ``margin`` of the best; None only where no level comes within it."""
    scored = {q: m for q, m in best_means.items() if not math.isnan(m)}
    if not scored:
        return None
    top = max(scored.values())
    near = [q for q, m in scored.items() if m >= top - margin]
    levels = [q for q in near if q is not None]
    return max(levels) if levels else None


def choose_clean_up(means: dict) -> tuple:
    """``means``: {gate: {reach: {threshold: mean Dice}}} of one mirroring choice.  Per gate the
    threshold (``choose_threshold``) for each reach, then the reach (``choose_refinement``);
    then the gate (``choose_confidence``).  Returns (gate, reach, threshold, mean)."""
    per_gate = {}  # gate -> (reach, threshold, mean)
    for q, by_reach in means.items():
        best_t = {r: choose_threshold(by_threshold) for r, by_threshold in by_reach.items()}
        reach = choose_refinement({r: by_reach[r][t] for r, t in best_t.items()})
        per_gate[q] = (reach, best_t[reach], by_reach[reach][best_t[reach]])
    gate = choose_confidence({q: v[2] for q, v in per_gate.items()})
    return (gate, *per_gate[gate])


def choose_refinement(best_means: dict, margin: float = MARGIN):
    """``best_means``: {None (no refinement) or reach in mm: best mean Dice}.  The shortest reach
    within ``margin`` of the best, if that best beats no refinement by ``margin``; else None."""
    off = best_means.get(None, math.nan)
    reaches = {r: m for r, m in best_means.items() if r is not None and not math.isnan(m)}
    if not reaches:
        return None
    top = max(reaches.values())
    if not math.isnan(off) and top < off + margin:
        return None
    return min(r for r, m in reaches.items() if m >= top - margin)


def fit_lesion_threshold(model: str, seeds, log=print, install: bool = True,
                         mirroring=("off", "mirror-lesions"), reaches=(), install_as: str | None = None,
                         device: str = "auto", confidences=(), thresholds=THRESHOLDS) -> dict:
    """Mean per-scan lesion Dice for each threshold in ``thresholds`` (all of ``THRESHOLDS`` by
    default; 0.5 alone keeps the argmax), without and with test-time
    mirroring (``mirroring``: the choices to try), each also with edge refinement at each of
    ``reaches`` (mm; none by default) and with both limited to confident components at each of
    ``confidences`` (none by default); the best choice goes on the card, or on a new card
    ``install_as`` for the same weights.  ``device``: where the network runs."""
    from ..inference import InferenceSettings
    from ..models import load_model
    from ..models.card import save_card
    from ..models import registry
    from ..postprocess.components import clean_with_card
    from ..postprocess.refine import HALF_MAXIMUM, refine_lesion_edges

    from ..errors import InputError

    from .phantom_dataset import validation_seeds

    t0 = time.time()
    from ..inference.engine import MIRRORING_BY_COST

    unknown = [m for m in mirroring if m not in MIRRORING_BY_COST]
    if unknown or not mirroring:
        raise InputError(f"mirroring choices must be some of off, mirror-lesions, mirror; got {list(mirroring)}")
    seeds = validation_seeds(seeds, "the lesion threshold")
    loaded = load_model(model)
    card = loaded.card
    extra = card.extra
    if not extra.get("lesions"):  # before any phantom is made
        raise InputError(f"model '{card.name}' names no lesion class (extra['lesions']): "
                         "only a lesion segmentation model has a lesion threshold")
    if install and install_as:  # a new built-in card names the weights by file name: they must be built-in
        if not registry.in_weights_dir(card):
            raise InputError(f"--install-as {install_as}: the weights of {model} ({card.weights_path()}) are not a "
                             "built-in model's, so a built-in card cannot name them: install the model first, "
                             "or fit its own card (without --install-as)")
        target = registry.WEIGHTS_DIR / f"{install_as}.json"
    elif install:  # the card given, written back where it is (a run's card stays in its run)
        target = registry.fitted_card_path(model)
    lesion = int(extra["lesions"][0])
    hosts = tuple(int(i) for i in extra.get("lesion_hosts", ()))
    variants = (None, *reaches)
    gates = (None, *confidences)
    # dice[tta][gate][reach][threshold]: one value per scan with a lesion
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds or any(not 0.0 < t <= 0.5 for t in thresholds):
        raise InputError(f"lesion thresholds must lie in (0, 0.5] (0.5: the argmax alone), got {list(thresholds)}")
    dice = {tta: {q: {r: {t: [] for t in thresholds} for r in variants} for q in gates} for tta in mirroring}
    # each phantom (and its body mask) is made once and run once per mirroring choice
    for seed, ph, truth, body in validation_scans(seeds, lesion, bool(extra.get("inside_body"))):
        for tta in mirroring:
            probs, base = model_run(loaded, ph, InferenceSettings(tta=tta, device=device))
            for q in gates:
                only = probs[lesion] >= q if q is not None else None
                for t in thresholds:
                    # no image: the airway rule (lung class only) is left out; the nodules it cannot change
                    labels = clean_with_card(base, probs[lesion], ph.spacing, extra, lesion_threshold=t, body=body,
                                             lesion_refine=False, lesion_confident=False if q is None else q)
                    dice[tta][q][None][t].append(_dice(labels == lesion, truth))
                    for r in reaches:  # refinement is the last step of the clean-up: apply it to its result
                        refined = refine_lesion_edges(labels, ph.hu, ph.spacing, lesion, hosts, r, HALF_MAXIMUM,
                                                      only=only)
                        dice[tta][q][r][t].append(_dice(refined == lesion, truth))
                log(f"validation phantom {seed}, mirroring {tta}{_gate_name(q)}: "
                    + "; ".join(f"{_name(r)} " + ", ".join(f"{t}: {dice[tta][q][r][t][-1]:.3f}" for t in thresholds)
                                for r in variants))
            del probs, base
    n_cases = len(dice[mirroring[0]][None][None][thresholds[0]])
    if not n_cases:  # every mean would be NaN: nothing to choose, and the card must not get NaN scores
        raise InputError(f"none of the {len(seeds)} validation phantom(s) holds a lesion, so there is no Dice "
                         "to fit the threshold on: choose other seeds; the card is left as it was")
    means = {tta: {q: {r: {t: float(np.mean(v)) if v else float("nan") for t, v in dice[tta][q][r].items()}
                       for r in variants} for q in gates} for tta in mirroring}
    for tta in mirroring:
        for q in gates:
            for r in variants:
                log(f"mirroring {tta}{_gate_name(q)}, {_name(r)}: mean nodule Dice per threshold "
                    + json.dumps({str(t): round(m, 4) for t, m in means[tta][q][r].items()}))
    chosen = {tta: choose_clean_up(means[tta]) for tta in mirroring}  # tta -> (gate, reach, threshold, mean)
    tta = choose_mirroring({m: chosen[m][3] for m in mirroring}) if len(mirroring) > 1 else mirroring[0]
    gate, reach, threshold, mean = chosen[tta]
    if threshold >= 0.5 and reach is None:
        gate = None  # nothing for a confidence level to limit
    log(f"chosen: mirroring {tta}, lesion threshold {threshold}, {_name(reach)}{_gate_name(gate)} ({mean:.4f}; "
        f"the first threshold tried, no refinement, mirroring {mirroring[0]}: "
        f"{means[mirroring[0]][None][None][thresholds[0]]:.4f})")
    if install:
        if install_as:
            card.name = install_as
            card.description = f"{card.description}; lesion edges refined (medai train lesion-threshold)"
            card.train_command = f"{card.train_command}; then " + fit_command(
                model, mirroring, reaches, confidences, thresholds, install_as)
            # the model's benchmark figures (every "benchmark..." entry) are not this card's: it is
            # measured on its own
            card.scores = {k: v for k, v in card.scores.items() if not k.startswith("benchmark")}
        card.extra = {k: v for k, v in extra.items() if k not in ("lesion_refine", "lesion_confident")}
        if install_as:
            card.extra["variant_of"] = extra.get("variant_of", model)  # pickers list the model first
        card.extra.update(lesion_threshold=threshold, tta=tta)
        if reach is not None:
            card.extra["lesion_refine"] = {"reach_mm": reach, "level": HALF_MAXIMUM}
        if gate is not None:
            card.extra["lesion_confident"] = gate
        fit = {"seeds": [int(s) for s in seeds], "cases_with_nodules": n_cases,
               "mean_nodule_dice": {m: {str(t): round(v, 4) for t, v in means[m][None][None].items()}
                                    for m in mirroring},
               "mean_nodule_dice_refined": {m: {str(r): {str(t): round(v, 4) for t, v in means[m][None][r].items()}
                                                for r in reaches} for m in mirroring}}
        if confidences:  # {mirroring: {level: {reach ("none": not refined): {threshold: mean}}}}
            fit["mean_nodule_dice_confident"] = {
                m: {str(q): {"none" if r is None else str(r): {str(t): round(v, 4) for t, v in means[m][q][r].items()}
                             for r in variants} for q in confidences} for m in mirroring}
        fit.update(chosen={"tta": tta, "lesion_threshold": threshold, "lesion_refine_reach_mm": reach,
                           "lesion_confident": gate}, time_s=round(time.time() - t0),
                   command=fit_command(model, mirroring, reaches, confidences, thresholds, install_as))
        card.scores = {**card.scores, "lesion_threshold_fit": fit}
        path = save_card(card, target)
        log(f"wrote {path}")
    return {"means": {m: means[m][None][None] for m in mirroring},
            "refined_means": {m: means[m][None] for m in mirroring}, "confident_means": means,
            "best": threshold, "tta": tta, "refine_reach_mm": reach, "confident": gate}


def fit_command(model, mirroring, reaches, confidences, thresholds, install_as=None) -> str:
    """The ``medai train lesion-threshold`` command line that makes this fit (for the card)."""
    parts = ["medai train lesion-threshold", f"--model {model}"]
    if tuple(mirroring) != ("off", "mirror-lesions"):
        parts.append("--mirroring " + " ".join(mirroring))
    if tuple(thresholds) != THRESHOLDS:
        parts.append("--thresholds " + " ".join(f"{t:g}" for t in thresholds))
    if reaches:
        parts.append("--try-refinement")
    if confidences:
        parts.append("--try-confidence")
    if install_as:
        parts.append(f"--install-as {install_as}")
    return " ".join(parts)


def _name(reach) -> str:
    return "no refinement" if reach is None else f"edges refined within {reach} mm"


def _gate_name(gate) -> str:
    return "" if gate is None else f", only components reaching p >= {gate}"
