"""``medai train operating-point``: fit a detector's default score threshold on validation phantoms."""

from __future__ import annotations


def add_parser(sub) -> None:
    from ..training.operating_point import DEFAULT_FP_PER_SCAN, DEFAULT_SEEDS

    from ._common import FIT_DEVICE_NOTE, add_training_device

    p = sub.add_parser(
        "operating-point",
        help="choose a built-in detector's default score threshold on validation phantoms",
        description="Runs the detector on validation phantoms and writes into its card the lowest score "
        "threshold (two decimals) at which its findings make at most --fp-per-scan false positives per scan. "
        "The detection and screening widgets and screen() start from it; detect() still returns every finding.",
    )
    p.add_argument("--model", default="lung-nodule-detection", help="built-in detection model")
    p.add_argument("--seeds", type=int, nargs=2, default=(DEFAULT_SEEDS.start, DEFAULT_SEEDS.stop),
                   metavar=("FIRST", "STOP"),
                   help="phantom seeds (default 2000-2011: used neither in training nor in the benchmark)")
    p.add_argument("--fp-per-scan", type=float, default=DEFAULT_FP_PER_SCAN,
                   help="false positives per scan allowed at the threshold (default 1, the detection goal's point)")
    p.add_argument("--dry-run", action="store_true", help="print the result, leave the card as it is")
    add_training_device(p, FIT_DEVICE_NOTE)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import InputError, MedaiError
    from ..training.operating_point import fit_operating_point

    from ._common import check_device

    # InputError: "medai train: error: ..." and exit 2, as the other train tasks say it
    if not args.fp_per_scan >= 0:
        raise InputError("--fp-per-scan must be 0 or more")
    if args.seeds[1] <= args.seeds[0]:
        raise InputError("--seeds FIRST STOP needs STOP > FIRST")
    check_device(args.device)  # before the model loads or any phantom is made
    try:
        fit_operating_point(args.model, range(*args.seeds), fp_per_scan=args.fp_per_scan, install=not args.dry_run,
                            device=args.device)
    except MedaiError:
        raise
    except ValueError as exc:  # a card that is no detector's
        raise InputError(str(exc)) from None
    return 0
