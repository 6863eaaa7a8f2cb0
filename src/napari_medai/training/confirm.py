"""Fit how a segmentation model takes the two-stage detector's second opinion on its lesions.

For each classifier threshold (and with or without dropping first-pass lesions that only
rejected candidates cover) the validation phantoms are segmented with the card's full
post-processing and scored by mean per-scan nodule Dice, as ``lesion_threshold`` does.  The
best setting goes into the card's ``extra["confirm"]``; if none beats the first pass alone by
``MARGIN``, the card gets no second stage (and keeps its speed).
"""

from __future__ import annotations

import json
import time

import numpy as np

THRESHOLDS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
MARGIN = 0.005


def fit_confirm(model: str, detector: str, seeds, log=print, install: bool = True, device: str = "auto") -> dict:
    """``device``: where the networks run ("auto", "cpu", "cuda", "cuda:N")."""
    from ..inference import InferenceSettings
    from ..inference.confirm import score_candidates
    from ..models import load_model
    from ..models.card import save_card
    from ..models.registry import fitted_card_path
    from ..postprocess.components import clean_with_card, merge_confirmed
    from .lesion_threshold import _dice, validation_cases

    from ..errors import InputError

    from .phantom_dataset import validation_seeds

    t0 = time.time()
    seeds = validation_seeds(seeds, "the second stage")
    loaded, det = load_model(model), load_model(detector)
    card = loaded.card
    # before any phantom is made: both models must be of the kind the fit needs
    if not card.extra.get("lesions"):
        raise InputError(f"model '{card.name}' names no lesion class (extra['lesions']): "
                         "only a lesion segmentation model can take a second opinion")
    if not det.card.extra.get("classifier"):
        raise InputError(f"detector '{det.card.name}' names no classifier (extra['classifier']): "
                         "the second opinion comes from a two-stage detector")
    # the card given, written back where it is (a run's card stays in its run); said before any phantom
    target = fitted_card_path(model) if install else None
    extra = {k: v for k, v in card.extra.items() if k != "confirm"}
    lesion = int(extra["lesions"][0])
    host = int(extra.get("lesion_hosts", [0])[0])
    settings = [None] + [(t, d) for d in (False, True) for t in THRESHOLDS]
    dice = {s: [] for s in settings}
    run = InferenceSettings(device=device)
    for seed, ph, truth, probs, base, body in validation_cases(loaded, seeds, lesion, bool(extra.get("inside_body")),
                                                               run):
        scored = score_candidates(ph.hu, ph.spacing, det, run, first_pass=(base == lesion, probs[lesion]))
        for s in settings:
            labels = base if s is None else merge_confirmed(base, lesion, scored.candidates, scored.scores,
                                                            s[0], host=host, drop_rejected=s[1])
            labels = clean_with_card(labels, probs[lesion], ph.spacing, extra, image=ph.hu, body=body)
            dice[s].append(_dice(labels == lesion, truth))
        del probs
        log(f"validation phantom {seed}: first pass {dice[None][-1]:.3f}, best confirmed "
            f"{max(dice[s][-1] for s in settings[1:]):.3f}")
    if not dice[None]:  # every mean would be NaN: the card must not lose its setting to NaN scores
        raise InputError(f"none of the {len(seeds)} validation phantom(s) holds a lesion, so there is no Dice "
                         "to fit the second stage on: choose other seeds; the card is left as it was")
    means = {s: float(np.mean(v)) for s, v in dice.items()}
    best = max(settings[1:], key=lambda s: means[s])
    use = means[best] >= means[None] + MARGIN
    table = {("first pass" if s is None else f"threshold {s[0]}, drop {s[1]}"): round(m, 4) for s, m in means.items()}
    log("mean nodule Dice: " + json.dumps(table))
    log(f"best: {best} ({means[best]:.4f}; first pass alone {means[None]:.4f}) -> "
        f"{'second stage on' if use else 'no second stage'}")
    if install:
        card.extra = dict(extra)
        if use:
            card.extra["confirm"] = {"detector": detector, "threshold": best[0], "drop_rejected": best[1]}
        card.scores = {**card.scores, "confirm_fit": {
            "seeds": [int(s) for s in seeds], "cases_with_nodules": len(dice[None]),
            "mean_nodule_dice": table, "time_s": round(time.time() - t0)}}
        log(f"wrote {save_card(card, target)}")
    return {"means": means, "best": best, "used": use}
