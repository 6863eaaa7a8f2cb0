"""Two-stage lesion scoring: a high-recall candidate model, then a patch classifier.

``score_candidates`` runs a segmentation-style candidate model (its card names the lesion
channel, the organ field and the candidate threshold, as a segmentation-based detector
does), places candidates at the thickest points of its components (``inference.candidates``),
keeps those whose component reaches the organ field, and scores each with the classifier its
card names in ``extra["classifier"]``.  Detection ranks findings by these scores;
segmentation uses them to add the small nodules its own pass missed and to drop the
components the classifier rejects (see ``postprocess.components.merge_confirmed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import ModelError
from .candidates import Candidates, classify_patches, extract_patches, find_candidates
from .progress import share_progress


@dataclass
class ScoredCandidates:
    candidates: Candidates  # candidate points and regions in the candidate model's lesion map
    scores: np.ndarray  # classifier score per candidate; -1 for those outside the organ field
    prob: np.ndarray  # lesion probability (input grid) on which the findings are measured


def classifier_input(card, volume: np.ndarray, prob: np.ndarray) -> list[np.ndarray]:
    """The classifier's input channels on the volume's grid, in the order its card lists in
    ``extra["inputs"]``: "image" (windowed with the card's intensity) and "probability"."""
    from .intensity import fit_intensity

    channels = []
    for name in card.extra.get("inputs", ["image", "probability"]):
        if name == "image":
            image = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
            channels.append(fit_intensity(card.intensity, image).apply(image).numpy())
        elif name == "probability":
            channels.append(np.asarray(prob, np.float32))
        else:
            raise ModelError(f"classifier '{card.name}': unknown input '{name}'")
    if len(channels) != card.in_channels:
        raise ModelError(f"classifier '{card.name}' takes {card.in_channels} channel(s), its inputs list {len(channels)}")
    return channels


def score_candidates(
    volume: np.ndarray,
    spacing,
    detector,
    settings=None,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
    first_pass: tuple[np.ndarray, np.ndarray] | None = None,
) -> ScoredCandidates:
    """Candidates of ``detector`` (a LoadedModel whose card has ``extra["classifier"]``) with scores.

    When the card names a ``extra["first_pass"]`` segmentation model, its lesions (probability
    >= 0.5) are candidates too and take precedence (see ``find_candidates``); a caller that has
    already run that model passes ``first_pass=(lesion_mask, lesion_probability)``.  With
    ``extra["first_pass_score"] = "max"`` those lesions score the higher of the classifier's
    score and their own peak probability.  The
    returned ``prob`` is the first pass's probability on its lesions and the candidate
    network's elsewhere, so each finding is measured on the map that proposed it.
    """
    from ..models import load_model
    from ..postprocess.findings import card_field, reaches_field
    from .device import select_device
    from .engine import InferenceSettings, run_model
    from .precision import select_precision

    extra = detector.card.extra
    channel = int(extra.get("probability_channel", detector.card.out_channels - 1))
    classifier = load_model(extra["classifier"])
    if classifier.card.task != "classification":
        raise ModelError(f"'{classifier.card.name}' is a {classifier.card.task} model, not a classifier")
    stages = 2 if extra.get("first_pass") and first_pass is None else 1
    if stages == 2:
        first = load_model(extra["first_pass"])
        # the lesion label's output channel (a multi-label card's label k + 1 is channel k: the label
        # itself indexed past the channels, found by an audit helper)
        from ..models.card import label_channel

        lesion = label_channel(first.card, int(first.card.extra.get("lesions", [first.card.out_channels - 1])[0]))
        p_first = run_model(first, volume, spacing, settings, progress=share_progress(progress, 0, 2), cancel=cancel)[lesion].copy()
        first_pass = (p_first >= 0.5, p_first)
    probs = run_model(detector, volume, spacing, settings, progress=share_progress(progress, stages - 1, stages), cancel=cancel)
    prob = probs[channel].copy()  # a copy, so the other channels can be freed
    field = card_field(probs, extra, channel, volume, spacing)
    del probs
    first_mask = first_pass[0] if first_pass is not None else None
    card = classifier.card
    cands = find_candidates(prob, spacing, float(extra.get("candidate_threshold", 0.5)), first=first_mask,
                            separation_mm=card.extra.get("candidate_separation_mm"))
    scores = np.full(len(cands), -1.0, np.float32)
    inside = np.arange(len(cands))
    if field is not None:
        near = reaches_field(cands.labels, field, spacing, float(extra.get("margin_mm", 5.0)))
        inside = np.flatnonzero(near[cands.component - 1])
    patches = extract_patches(classifier_input(card, volume, prob), cands.centres[inside], spacing,
                              shape=card.roi_size, step_mm=card.spacing)
    settings = InferenceSettings.of(settings)
    device = select_device(settings.device, 3)
    scores[inside] = classify_patches(classifier.network, patches, device,
                                      select_precision(device, settings.precision), cancel=cancel)
    if first_pass is not None:
        prob = np.where(first_pass[0], first_pass[1], prob)
        if extra.get("first_pass_score") == "max":
            # The first pass's own lesions keep its confidence (their peak probability) unless
            # the classifier is surer: the classifier can add lesions but not veto them.
            first = ~np.isfinite(cands.reach_mm) & (scores >= 0)  # whole-component candidates
            scores[first] = np.maximum(scores[first], cands.peaks(first_pass[1], first))
    return ScoredCandidates(cands, scores, prob)
