"""``medai train segmentation``: train or fine-tune a 3D segmentation model."""

from __future__ import annotations

from ._common import ProgressBar, add_replace_option, add_training_device


def add_parser(sub) -> None:
    p = sub.add_parser(
        "segmentation",
        help="train/fine-tune on a folder of NIfTI image/label pairs",
        description="Train or fine-tune a MONAI 3D UNet on <case>_image.nii.gz/<case>_label.nii.gz pairs. "
        "Keeps the checkpoint with the best validation Dice; a killed run resumes from OUT/last.pt (with the same "
        "settings and data; a complete run is not trained again, and --install-as still installs it).",
    )
    p.add_argument("--data", required=True, help="folder of image/label pairs")
    p.add_argument("--out", required=True, help="output folder (best.pt, last.pt, training.json)")
    p.add_argument("--phantoms", type=int, default=0, metavar="N",
                   help="first generate N phantom chest CTs into --data (seeds from --phantom-seed)")
    p.add_argument("--phantom-seed", type=int, default=1000)
    p.add_argument("--phantom-nodules", type=int, default=None, metavar="K",
                   help="nodules per generated phantom (default: the phantom's own 0-4)")
    p.add_argument("--phantom-max-diameter", type=float, default=None, metavar="MM",
                   help="generated phantoms get nodules of at most MM mm (default 30): a set rich in small nodules")
    p.add_argument("--class-ratios", type=float, nargs="+", default=None, metavar="R",
                   help="crop-centre sampling weight per class (default 1 1 3 for three classes, else equal)")
    p.add_argument("--balance-components", type=int, nargs="+", default=(), metavar="C",
                   help="classes (e.g. 2 for nodules) whose connected components are equally likely crop "
                   "centres, so small lesions are seen as often as large ones (default: voxel-weighted)")
    p.add_argument("--dice-per-crop", action="store_true",
                   help="Dice loss per training crop rather than over the batch, so small lesions weigh as much "
                   "as large ones in the other crops")
    p.add_argument("--component-loss", type=int, nargs="+", default=(), metavar="C",
                   help="classes (e.g. 2 for nodules) that also get a Dice + CE per connected lesion, averaged over "
                   "lesions, so a 4 mm nodule counts as much as a 25 mm one (blob loss)")
    p.add_argument("--component-loss-weight", type=float, default=1.0, metavar="W",
                   help="weight of that per-lesion term beside the Dice+CE loss (default 1)")
    p.add_argument("--component-ce-weight", type=float, default=1.0, metavar="W",
                   help="weight of the CE inside the per-lesion term (0: Dice only; default 1)")
    p.add_argument("--min-component-voxels", type=int, default=1, metavar="N",
                   help="components under N voxels on the model grid (spicule fragments) are neither balanced "
                   "crop centres nor scored per lesion (default 1: all)")
    p.add_argument("--hard-negatives", type=int, nargs="+", default=(), metavar="V",
                   help="label values of the files (before --label-map folds them; phantom vessels 3, airways "
                   "4) whose voxels get their own cross-entropy against the lesion classes, so that look-alikes "
                   "of a small lesion are not called lesions")
    p.add_argument("--hard-negative-weight", type=float, default=1.0, metavar="W",
                   help="weight of that hard-negative term (default 1)")
    p.add_argument("--init", help="start from a built-in model name, a model card (.json), a MONAI bundle folder "
                   "or a .pt file (weights, or another run's best.pt or last.pt): fine-tuning. Tensors that do "
                   "not fit (an output layer for other classes) start fresh; with the same classes the model's "
                   "post-processing is kept")
    p.add_argument("--label-map", choices=["none", "chest"], default="none",
                   help="'chest' folds phantom labels into 0 background / 1 lung / 2 nodule")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--iters-per-epoch", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--spacing", type=float, nargs=3, default=(2.0, 1.0, 1.0), metavar=("Z", "Y", "X"))
    p.add_argument("--roi", type=int, nargs=3, default=(48, 96, 96), metavar=("Z", "Y", "X"))
    # the network's shape; the default is the built-in chest model's.  A stride of 1 first keeps a
    # level at the full grid (the default's first layer already halves it; docs/segmentation.md)
    p.add_argument("--channels", type=int, nargs="+", default=(16, 32, 64, 128), metavar="C",
                   help="UNet feature channels per level, finest first (default 16 32 64 128)")
    p.add_argument("--strides", type=int, nargs="+", default=(2, 2, 2), metavar="S",
                   help="the downsampling between levels, one fewer than --channels (default 2 2 2)")
    p.add_argument("--res-units", type=int, default=2, metavar="N",
                   help="residual units per UNet level (default 2)")
    p.add_argument("--classes", nargs="+", default=["background", "lung", "nodule"],
                   help="a name per label value, background first (default: background lung nodule)")
    p.add_argument("--intensity", choices=("ct_window", "percentile", "zscore"), default=None,
                   help="how intensities reach the network (recorded in the card, so inference does the "
                   "same): ct_window (HU in --ct-window to 0..1; the default for CT), percentile (each "
                   "image's 0.5-99.5 %% range to 0..1; the default for MR) or zscore")
    p.add_argument("--ct-window", type=float, nargs=2, default=(-1000.0, 400.0), metavar=("LOW", "HIGH"),
                   help="the HU window for --intensity ct_window (default -1000 400: lungs and soft tissue; "
                   "bone and contrast above 400 HU are clipped)")
    p.add_argument("--modality", choices=("CT", "MR"), default="CT",
                   help="the images' modality, written into the card: a CT model refuses MR images and the "
                   "reverse (default CT)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fp32", action="store_true", help="train in fp32 even where bf16 is supported")
    add_training_device(p)
    p.add_argument("--install-as", metavar="NAME",
                   help="write the weights (see --install-checkpoint) and a model card into the package's built-in models")
    p.add_argument("--install-checkpoint", choices=("best", "last"), default="best",
                   help="which weights --install-as ships: the best-scoring epoch (default) or the final one")
    add_replace_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.segmentation import SegTrainConfig, train_segmentation

    cfg = SegTrainConfig(
        data=args.data, out=args.out, init=args.init, label_map=args.label_map, spacing=tuple(args.spacing),
        roi=tuple(args.roi), channels=tuple(args.channels), strides=tuple(args.strides),
        num_res_units=args.res_units, class_names=tuple(args.classes), epochs=args.epochs,
        iters_per_epoch=args.iters_per_epoch, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        threads=args.threads, bf16=not args.fp32, device=args.device, balance_components=tuple(args.balance_components),
        dice_per_crop=args.dice_per_crop, component_loss=tuple(args.component_loss),
        component_loss_weight=args.component_loss_weight, component_ce_weight=args.component_ce_weight,
        min_component_voxels=args.min_component_voxels, hard_negatives=tuple(args.hard_negatives),
        hard_negative_weight=args.hard_negative_weight, ct_window=tuple(args.ct_window), modality=args.modality,
        intensity=args.intensity or ("ct_window" if args.modality == "CT" else "percentile"),
    )
    for option, classes in (("--balance-components", cfg.balance_components),
                            ("--component-loss", cfg.component_loss)):
        bad = [c for c in classes if not 0 < c < len(cfg.class_names)]
        if bad:
            from ..errors import InputError

            raise InputError(f"{option}: {bad} are not foreground classes of {cfg.class_names}")
    if args.class_ratios:
        if len(args.class_ratios) != len(cfg.class_names):
            from ..errors import InputError

            raise InputError(f"--class-ratios needs one weight per class ({len(cfg.class_names)}), "
                             f"got {len(args.class_ratios)}")
        cfg.class_ratios = tuple(args.class_ratios)
    elif len(cfg.class_names) != 3:  # the default ratios favour class 2 (nodule) of the chest model
        cfg.class_ratios = tuple([1] * len(cfg.class_names))
    from ..training.segmentation import check_config

    from ._common import check_device, check_install_as, check_writable, typed_command

    check_config(cfg)  # before phantoms are generated or any file is read
    check_device(args.device)  # as well (it was looked at once every case had loaded)
    check_writable(args.out, "--out", folder=True)
    check_install_as(args)  # an installed name only with --replace, said before any training
    _check_resume_before_phantoms(args, cfg)
    if args.phantoms:
        from ..training.phantom_dataset import write_phantom_dataset

        write_phantom_dataset(args.data, range(args.phantom_seed, args.phantom_seed + args.phantoms),
                              n_nodules=args.phantom_nodules, max_nodule_diameter_mm=args.phantom_max_diameter)
    progress = ProgressBar(unit="it", mininterval=5)
    try:
        summary = train_segmentation(cfg, progress=progress)
    finally:
        progress.close()  # before the last messages, so the bar's line does not follow them
    took = f" in {summary['time_s']:.0f} s" if summary.get("time_s") is not None else ""  # not in an old last.pt
    print(f"best validation score {summary['best_score']:.4f}{took} -> {args.out}/best.pt "
          f"(its card: {args.out}/best.json, e.g. medai segment IN OUT --model {args.out}/best.pt)")
    if args.install_as:
        from ..training.segmentation import install_builtin

        path = install_builtin(args.install_as, cfg, summary, " ".join(typed_command(args)), checkpoint=args.install_checkpoint,
                               replace=args.replace)
        print(f"installed built-in model card {path}")
    return 0


def _check_resume_before_phantoms(args, cfg) -> None:
    """With --phantoms and a run in --out to resume, whether it may resume is decided before any
    phantom is written.  New phantoms used to go into --data first: a re-run with a larger N (or
    another --phantom-seed) changed the data the run started with, the resume was refused, and
    the new cases stayed in --data until deleted by hand.  Refused here, with --data as it was:
    other settings (the trainer's own check) and pairs other than those the run started on once
    the phantoms are written.  Phantoms of the run missing from --data (a deleted folder) are made
    again, the same files from the same seeds, and the trainer compares their sha256 after."""
    from pathlib import Path

    from ..errors import InputError
    from ..training.phantom_dataset import case_name
    from ..training.seg_data import case_name as seg_case
    from ..training.seg_data import find_pairs
    from ..training.segmentation import run_files

    if not args.phantoms:
        return
    started_on = run_files(args.out, cfg)
    if started_on is None:
        return
    data = Path(args.data)
    present = {image.relative_to(data).as_posix() for image, _ in find_pairs(data)} if data.is_dir() else set()
    seeds = range(args.phantom_seed, args.phantom_seed + args.phantoms)
    after = present | {f"{case_name(seed)}_image.nii.gz" for seed in seeds}
    added, missing = sorted(after - set(started_on)), sorted(set(started_on) - after)
    if added or missing:
        what = "; ".join(f"{label}: {', '.join(seg_case(k) for k in keys[:5])}{' ...' if len(keys) > 5 else ''}"
                         for label, keys in (("added", added), ("missing", missing)) if keys)
        raise InputError(f"--phantoms {args.phantoms} --phantom-seed {args.phantom_seed} would change the pairs in "
                         f"{data} ({what}), and the run in {args.out} resumes only on the data it started with; "
                         "no phantom was written. Give the --phantoms and --phantom-seed it started with to resume "
                         "it, choose another --out to train on other phantoms, or delete its last.pt to start over")
