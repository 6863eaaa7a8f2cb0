"""``medai evaluate --data DIR --model A [B ...]``: score segmentation models on annotated volumes."""

from __future__ import annotations


def add_parser(sub) -> None:
    from ..api import DEFAULT_SEGMENTATION_MODEL
    from ._common import add_runtime_options

    p = sub.add_parser(
        "evaluate", help="score segmentation models on your own annotated volumes (Dice, HD95, lesions found)",
        description="Segments every image/label pair of DIR (<case>_image.nii.gz with <case>_label.nii.gz, or "
        "images/<case>.nii.gz with labels/<case>.nii.gz: the layout of `medai train segmentation`) with each model, "
        "as `medai segment` does, and prints per case and per class the Dice and HD95 against the labels, then "
        "each model's mean. Keep the cases you evaluate on out of training.")
    p.add_argument("--data", required=True, help="folder of image/label pairs")
    p.add_argument("--model", nargs="+", default=[DEFAULT_SEGMENTATION_MODEL],
                   help="one or more segmentation models (names, bundle folders, TorchScript files, cards)")
    p.add_argument("--label-map", choices=["none", "chest"], default="none",
                   help="chest: the labels are phantom labels, folded into background / lung / nodule")
    p.add_argument("--out", help="also write every row to this .csv file")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import csv
    from pathlib import Path

    from ..errors import InputError
    from ..evaluation import evaluate_segmentation, summarise
    from ..training.seg_data import find_pairs
    from ._common import runtime

    if args.out and not args.out.lower().endswith(".csv"):
        raise InputError(f"--out must end in .csv, got {Path(args.out).name}")
    pairs = find_pairs(args.data)
    settings, _ = runtime(args)
    print(f"{len(pairs)} annotated case(s); model(s): {', '.join(map(str, args.model))}", flush=True)

    def on_case(case, model, dice):
        print(f"  {case} · {model}: " + ", ".join(f"{name} Dice {d:.3f}" for name, d in dice.items()), flush=True)

    rows = evaluate_segmentation(pairs, args.model, label_map=args.label_map, settings=settings, on_case=on_case)
    print(f"{'model':<28}{'class':<14}{'cases':>6}{'Dice mean ± sd':>18}{'HD95 median mm':>16}"
          f"{'FP cases':>10}{'lesions found':>15}")
    for s in summarise(rows):
        found = f"{s['lesions_found']}/{s['lesions']}" if "lesions" in s else ""
        print(f"{s['model']:<28}{s['class']:<14}{s['cases']:>6}{s['dice_mean']:>11.3f} ± {s['dice_sd']:.3f}"
              f"{s['hd95_median_mm']:>16.1f}{s['false_positive_cases']:>10}{found:>15}")
    if args.out:
        fields = ["case", "model", "class", "dice", "hd95_mm", "reference_ml", "predicted_ml", "lesions",
                  "lesions_found"]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        print(f"rows written to {args.out}")
    return 0
