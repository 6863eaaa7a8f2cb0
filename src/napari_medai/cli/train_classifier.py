"""``medai train nodule-classifier``: the second-stage classifier that confirms nodule candidates."""

from __future__ import annotations

from ._common import add_replace_option, add_training_device


def add_parser(sub) -> None:
    p = sub.add_parser(
        "nodule-classifier",
        help="train the classifier that keeps the nodules among a high-recall model's candidates",
        description="Runs the candidate model over every training scan, places candidates at the thickest "
        "points of its nodule components, labels each (a nodule if it lies within a voxel of label 2 in the "
        "reference labels), and trains a small 3D classifier on patches around them; validation phantoms "
        "pick the best epoch.",
    )
    p.add_argument("--data", nargs="+", required=True, help="folders of <case>_image/<case>_label NIfTI pairs")
    p.add_argument("--out", required=True, help="output folder (best.pt, history.json, candidates.npz cache)")
    p.add_argument("--candidate-model", default="chest-ct-lung-nodule",
                   help="segmentation model whose network proposes the candidates")
    p.add_argument("--candidate-weights", help="state dict (.pt) to use in that network (the high-recall run)")
    p.add_argument("--candidate-separation", type=float, default=5.0, metavar="MM",
                   help="a candidate at every local maximum of component thickness this far apart (0: one per component)")
    p.add_argument("--val-seeds", type=int, nargs=2, default=(2000, 2012), metavar=("FIRST", "STOP"),
                   help="validation phantom seeds (default 2000-2011: used neither in training nor in the benchmark)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--max-negatives", type=int, default=400, help="random negative candidates kept per scan")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fp32", action="store_true", help="train in fp32 even where bf16 is supported (bit for bit repeatable)")
    add_training_device(p)
    p.add_argument("--install-as", metavar="NAME", help="install the best weights as this built-in classifier")
    add_replace_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.candidate_classifier import (ClassifierTrainConfig, check_config, install_classifier,
                                                 train_classifier)
    from ._common import check_device, check_install_as, check_seeds, check_writable, typed_command

    check_seeds(args.val_seeds, "--val-seeds")  # before candidates are drawn for minutes
    check_device(args.device)  # the training's: it was looked at after the candidates, in a folder then made
    check_writable(args.out, "--out", folder=True)  # before candidates are drawn for minutes
    check_install_as(args)  # an installed name only with --replace, said before any training
    cfg = ClassifierTrainConfig(data=tuple(args.data), out=args.out, candidate_model=args.candidate_model,
                                candidate_weights=args.candidate_weights, val_seeds=tuple(args.val_seeds),
                                candidate_separation_mm=args.candidate_separation or None, epochs=args.epochs, max_negatives=args.max_negatives,
                                threads=args.threads, device=args.device, bf16=not args.fp32)
    check_config(cfg)  # the options, then the data folders and weights: --out is made only after
    summary = train_classifier(cfg, log=lambda m: print(m, flush=True))
    print(f"best validation mean sensitivity {summary['best_val_mean_sensitivity']:.3f} "
          f"(AUC {summary['best_val_auc']:.4f}) in {summary['time_s']} s -> {args.out}/best.pt")
    if args.install_as:
        path = install_classifier(args.out, args.install_as, " ".join(typed_command(args)), replace=args.replace)
        print(f"installed built-in classifier {path}")
    return 0
