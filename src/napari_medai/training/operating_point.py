"""A detector's operating point: the default score threshold, fitted on validation phantoms.

A detector returns every candidate with a score; what a reader is shown by default should be
a stated trade-off, not an arbitrary 0.5.  The fit runs the detector on validation phantoms
(trained on by no model, not in the benchmark, never lung1), pools the false positives of all
scans, and takes the lowest threshold (two decimals, rounded up) at which findings scoring at
least that much make at most ``fp_per_scan`` false positives a scan: 1 by default, the point
the detection goal is stated at.  The threshold goes on the card (``extra.operating_point``);
the widgets and ``screen()`` start from it, and ``detect()`` keeps returning everything.
"""

from __future__ import annotations

import time

DEFAULT_SEEDS = range(2000, 2012)  # the lesion-threshold fit's validation phantoms
DEFAULT_FP_PER_SCAN = 1.0


def validation_rows(model, seeds, log=print, settings=None) -> list[tuple]:
    """One ``metrics.froc`` row per validation phantom: every finding of ``model`` (a loaded
    model), scored, against balls around the phantom's nodules."""
    from ..api import detect
    from .detection import froc_row
    from .phantom_dataset import phantom_for

    rows = []
    for seed in seeds:
        ph = phantom_for(seed)
        # centres and scores do not depend on mask refinement: skip it
        found = detect(ph.hu, ph.spacing, model=model, max_findings=None, settings=settings, refine_masks=False)
        rows.append(froc_row(found, ph.hu.shape, ph.spacing, ph.nodules))
        log(f"validation phantom {seed}: {len(ph.nodules)} nodule(s), {len(found)} finding(s)")
    return rows


def fit_operating_point(model: str, seeds=DEFAULT_SEEDS, fp_per_scan: float = DEFAULT_FP_PER_SCAN, log=print,
                        install: bool = True, rows=None, card_path=None, device: str = "auto") -> dict:
    """Fit and (with ``install``) write ``extra.operating_point`` into detector card ``model``
    (a built-in name, or a card path, written back in place); ``rows`` (precomputed
    ``validation_rows``) skips running the detector; ``card_path`` writes the card elsewhere;
    ``device``: where the detector runs."""
    from ..inference import InferenceSettings
    from ..metrics import froc, operating_point
    from ..models import load_model
    from ..models.card import save_card
    from ..models.registry import fitted_card_path

    t0 = time.time()
    loaded = load_model(model)
    card = loaded.card
    if card.task != "detection":
        raise ValueError(f"model '{card.name}' is a {card.task} model, not a detector")
    seeds = [int(s) for s in seeds]
    if install and card_path is None:  # before the detector runs: a model with no card file is said now
        card_path = fitted_card_path(model)
    if rows is None:
        rows = validation_rows(loaded, seeds, log=log, settings=InferenceSettings(device=device))
    try:
        op = operating_point(rows, fp_per_scan=fp_per_scan)
    except ValueError as exc:  # false positives at the top score: said in one sentence, the card unchanged
        from ..errors import ModelError

        raise ModelError(f"'{card.name}' on phantoms {seeds[0]}-{seeds[-1]}: {exc}") from None
    curve = froc(rows)
    log(f"operating point at <= {fp_per_scan:g} false positive(s) per scan: score >= {op['score_threshold']:.2f}, "
        f"{op['lesions_found']}/{op['lesions']} nodules found, {op['fp_per_scan']:.2f} false positives per scan "
        f"({op['scans']} scans); FROC mean {curve['mean']:.3f}")
    if install:
        card.extra = {**card.extra, "operating_point": {"score_threshold": op["score_threshold"],
                                                        "fp_per_scan": float(fp_per_scan)}}
        card.scores = {**card.scores, "operating_point_fit": {
            "seeds": seeds, **{k: op[k] for k in ("sensitivity", "lesions_found", "lesions", "fp_per_scan", "scans")},
            "command": f"medai train operating-point --model {card.name} --seeds {seeds[0]} {seeds[-1] + 1} "
                       f"--fp-per-scan {fp_per_scan:g}",
            "time_s": round(time.time() - t0)}}
        path = save_card(card, card_path)
        log(f"wrote {path}")
    return op
