"""``medai train detection``: fit the segmentation-based nodule detector on validation phantoms."""

from __future__ import annotations


def add_parser(sub) -> None:
    from ._common import FIT_DEVICE_NOTE, add_training_device

    p = sub.add_parser("detection", help="fit the nodule detector's post-processing on validation phantoms")
    p.add_argument("--from", dest="seg_model", default="chest-ct-lung-nodule",
                   help="built-in segmentation model whose nodule probability the detector uses")
    p.add_argument("--seeds", type=int, nargs=2, default=(2000, 2006), metavar=("FIRST", "STOP"),
                   help="phantom seeds to fit on (default 2000-2005: used neither in training nor in the benchmark)")
    p.add_argument("--measure-seeds", type=int, nargs=2, default=(2000, 2012), metavar=("FIRST", "STOP"),
                   help="phantom seeds on which the finding masks' refinement is chosen by diameter error "
                        "(default 2000-2011: used neither in training nor in the benchmark)")
    p.add_argument("--name", default="lung-nodule-detection")
    p.add_argument("--candidate-weights", help="two stages: a high-recall state dict of the --from network "
                   "proposes candidates (its weights ship with the detector) ...")
    p.add_argument("--classifier", help="... and this built-in classifier scores them (medai train nodule-classifier)")
    p.add_argument("--first-pass-score", choices=("classifier", "max"), default="classifier",
                   help="score of the --from model's own nodules: the classifier's, or the higher of it and "
                        "their peak probability (the classifier adds nodules but cannot veto them)")
    add_training_device(p, FIT_DEVICE_NOTE)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.detection import fit_detector, fit_two_stage_detector

    from ._common import check_device, check_seeds

    if bool(args.candidate_weights) != bool(args.classifier):
        from ..errors import InputError

        raise InputError("--candidate-weights and --classifier go together (two-stage detection)")
    check_seeds(args.seeds)  # before the model loads or any phantom is made
    check_device(args.device)
    if args.classifier:
        card, _ = fit_two_stage_detector(args.seg_model, args.candidate_weights, args.classifier,
                                         list(range(*args.seeds)), out_name=args.name,
                                         first_pass_score=args.first_pass_score, device=args.device)
        print(f"{card.name}: two stages, validation mean FROC {card.scores['validation_froc_mean']:.3f}")
        return 0

    check_seeds(args.measure_seeds, "--measure-seeds")  # only the one-stage fit measures
    card, scores = fit_detector(args.seg_model, list(range(*args.seeds)), out_name=args.name,
                                measure_seeds=list(range(*args.measure_seeds)), device=args.device)
    refine = card.extra.get("mask_refine")
    print(f"{card.name}: candidate threshold {card.extra['candidate_threshold']}, "
          f"validation mean FROC {card.scores['validation_froc_mean']:.3f}, finding masks "
          + (f"refined within {refine['reach_mm']} mm" if refine else "as drawn"))
    return 0
