"""``medai train confirm``: let a segmentation model take the two-stage detector's second opinion."""

from __future__ import annotations


def add_parser(sub) -> None:
    from ._common import FIT_DEVICE_NOTE, add_training_device

    p = sub.add_parser(
        "confirm",
        help="fit how a segmentation model adds confirmed and drops rejected nodule candidates",
        description="Segments validation phantoms, scores the nodule Dice with the detector's classifier "
        "at several thresholds, and writes the best into the card's extra['confirm'] (or none, when the "
        "first pass alone is as good).",
    )
    p.add_argument("--model", default="chest-ct-lung-nodule", help="built-in segmentation model")
    p.add_argument("--detector", default="lung-nodule-detection", help="built-in two-stage detector")
    p.add_argument("--seeds", type=int, nargs=2, default=(2000, 2012), metavar=("FIRST", "STOP"))
    p.add_argument("--dry-run", action="store_true", help="print the scores, leave the card as it is")
    add_training_device(p, FIT_DEVICE_NOTE)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.confirm import fit_confirm

    from ._common import check_device, check_seeds

    check_seeds(args.seeds)  # before the models load or any phantom is made
    check_device(args.device)
    fit_confirm(args.model, args.detector, list(range(*args.seeds)), install=not args.dry_run, device=args.device)
    return 0
