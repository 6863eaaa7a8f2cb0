"""Two-stage lesion scoring: a high-recall candidate model, then a patch classifier.

``score_candidates`` runs a segmentation-style candidate model (its card names the lesion
channel, the organ field and the candidate threshold, as a segmentation-based detector
does), keeps the components that reach the organ field, and scores each with the classifier
its card names in ``extra["classifier"]``.  Detection ranks findings by these scores;
segmentation uses them to add the small nodules its own pass missed and to drop the
components the classifier rejects (see ``postprocess.components.merge_confirmed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ModelError
from .candidates import Candidates, classify_patches, extract_patches, find_candidates


@dataclass
class ScoredCandidates:
    candidates: Candidates  # components of the candidate model's lesion probability
    scores: np.ndarray  # classifier score per candidate; -1 for those outside the organ field
    prob: np.ndarray  # the candidate model's lesion probability (input grid)

    def accepted(self, threshold: float) -> np.ndarray:
        """Bool mask of the candidates' voxels whose component scores at least ``threshold``."""
        keep = np.concatenate([[False], self.scores >= threshold])
        return keep[self.candidates.labels]


def classifier_input(card, volume: np.ndarray, prob: np.ndarray) -> list[np.ndarray]:
    """The classifier's input channels on the volume's grid, in the order its card lists in
    ``extra["inputs"]``: "image" (windowed with the card's intensity) and "probability"."""
    spec = card.intensity
    channels = []
    for name in card.extra.get("inputs", ["image", "probability"]):
        if name == "image":
            if spec.get("kind") != "ct_window":
                raise ModelError(f"classifier '{card.name}': only a ct_window intensity is supported")
            scaled = (np.asarray(volume, np.float32) - spec["a_min"]) / (spec["a_max"] - spec["a_min"])
            scaled = np.clip(scaled, 0.0, 1.0) if spec.get("clip", True) else scaled
            channels.append(scaled * (spec["b_max"] - spec["b_min"]) + spec["b_min"])
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
) -> ScoredCandidates:
    """Candidates of ``detector`` (a LoadedModel whose card has ``extra["classifier"]``) with scores."""
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
    probs = run_model(detector, volume, spacing, settings, progress=progress, cancel=cancel)
    prob = probs[channel].copy()  # a copy, so the other channels can be freed
    field = card_field(probs, extra, channel, volume, spacing)
    del probs
    cands = find_candidates(prob, spacing, float(extra.get("candidate_threshold", 0.5)))
    scores = np.full(len(cands), -1.0, np.float32)
    inside = np.arange(len(cands))
    if field is not None:
        inside = np.flatnonzero(reaches_field(cands.labels, field, spacing, float(extra.get("margin_mm", 5.0))))
    card = classifier.card
    patches = extract_patches(classifier_input(card, volume, prob), cands.centres[inside], spacing,
                              shape=card.roi_size, step_mm=card.spacing)
    settings = settings or InferenceSettings()
    device = select_device(settings.device, 3)
    scores[inside] = classify_patches(classifier.network, patches, device,
                                      select_precision(device, settings.precision), cancel=cancel)
    return ScoredCandidates(cands, scores, prob)
