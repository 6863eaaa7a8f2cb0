"""``medai train lesion-threshold``: fit a segmentation model's lesion probability threshold."""

from __future__ import annotations


def add_parser(sub) -> None:
    from ._common import FIT_DEVICE_NOTE, add_replace_option, add_training_device

    p = sub.add_parser(
        "lesion-threshold",
        help="choose the lesion probability threshold, test-time mirroring and edge refinement of a built-in "
        "segmentation model on validation phantoms",
        description="Segments validation phantoms without and with test-time mirroring, scores the nodule Dice "
        "for each threshold in 0.5 (argmax only) ... 0.1 with the card's post-processing, and writes the best "
        "pair into the card (mirroring, up to 4x the inference time, only where it gains 0.005 in mean Dice). "
        "With --try-refinement each is also scored with the lesion edges moved to the image's half-maximum "
        "contour within 1, 1.5 and 2 mm (extra.lesion_refine), switched on only where it gains 0.005. "
        "With --try-confidence, the lower threshold and the refinement are also scored limited to components "
        "whose peak probability reaches 0.9 or 0.99 (extra.lesion_confident); the highest level within 0.005 "
        "of the best is taken.",
    )
    p.add_argument("--model", default="chest-ct-lung-nodule", help="built-in segmentation model")
    p.add_argument("--seeds", type=int, nargs=2, default=(2000, 2012), metavar=("FIRST", "STOP"),
                   help="phantom seeds (default 2000-2011: used neither in training nor in the benchmark)")
    p.add_argument("--mirroring", nargs="+", choices=("off", "mirror-lesions", "mirror"),
                   default=("off", "mirror-lesions"),
                   help="the test-time mirroring choices to try (default: off and mirror-lesions, which mirrors only "
                   "the windows where the plain run sees a possible lesion; mirror mirrors every window)")
    p.add_argument("--try-refinement", action="store_true",
                   help="also score edge refinement (postprocess.refine) at 1, 1.5 and 2 mm")
    p.add_argument("--thresholds", type=float, nargs="+", metavar="P",
                   help="lesion thresholds to try, each in (0, 0.5] (default 0.5 0.4 0.3 0.2 0.15 0.1; 0.5 alone keeps "
                   "the argmax and fits only mirroring, refinement and confidence)")
    p.add_argument("--try-confidence", action="store_true",
                   help="also score limiting the lower threshold and refinement to components reaching p 0.9 or 0.99")
    p.add_argument("--install-as", metavar="NAME",
                   help="write the result as a new built-in card NAME for the same weights, not over the model's own")
    p.add_argument("--dry-run", action="store_true", help="print the scores, leave the card as it is")
    add_replace_option(p)
    add_training_device(p, FIT_DEVICE_NOTE)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.lesion_threshold import CONFIDENCES, REACHES_MM, THRESHOLDS, fit_lesion_threshold

    from ._common import check_device, check_install_as, check_seeds

    check_seeds(args.seeds)  # before the model loads or any phantom is made
    check_device(args.device)
    # the name becomes the card's file name in the weights folder; an installed card of that name
    # only with --replace (a dry run writes none); the weights are not written
    check_install_as(args, replace=args.replace or args.dry_run, weights=False)
    fit_lesion_threshold(args.model, list(range(*args.seeds)), install=not args.dry_run,
                         mirroring=tuple(args.mirroring), reaches=REACHES_MM if args.try_refinement else (),
                         install_as=args.install_as, device=args.device,
                         confidences=CONFIDENCES if args.try_confidence else (),
                         thresholds=tuple(args.thresholds) if args.thresholds else THRESHOLDS)
    return 0
