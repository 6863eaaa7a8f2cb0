"""``medai evaluate --data DIR --model A [B ...]``: score segmentation models on annotated volumes."""

from __future__ import annotations


def add_parser(sub) -> None:
    from ..api import DEFAULT_DETECTION_MODEL, DEFAULT_SEGMENTATION_MODEL
    from ._common import add_runtime_options

    p = sub.add_parser(
        "evaluate", help="score segmentation models (Dice, HD95, lesions found) or detectors (FROC) on your own "
        "annotated volumes",
        description="Segments every image/label pair of DIR (<case>_image.nii.gz with <case>_label.nii.gz, or "
        "images/<case>.nii.gz with labels/<case>.nii.gz: the layout of `medai train segmentation`) with each model, "
        "as `medai segment` does, and prints per case and per class the Dice and HD95 against the labels, then "
        "each model's mean; with --task detection, each detector's FROC against the labelled lesions. Keep the "
        "cases you evaluate on out of training.")
    p.add_argument("--data", required=True, help="folder of image/label pairs")
    p.add_argument("--task", choices=["segmentation", "detection"], default="segmentation",
                   help="detection: run detectors and score their findings against the labelled lesions (FROC)")
    p.add_argument("--model", nargs="+",
                   help="one or more models (names, bundle folders, TorchScript files, cards); default: the "
                        f"built-in {DEFAULT_SEGMENTATION_MODEL} (segmentation) or {DEFAULT_DETECTION_MODEL} (detection)")
    p.add_argument("--lesion-label", type=int, default=2,
                   help="detection: the label value of the lesions in the label files (after --label-map)")
    p.add_argument("--label-map", choices=["none", "chest"], default="none",
                   help="chest: the labels are phantom labels, folded into background / lung / nodule")
    p.add_argument("--out", help="also write every row to this .csv file")
    add_runtime_options(p, quiet_help="no line per case scored (skipped cases are still printed)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..errors import InputError
    from ..evaluation import evaluate_segmentation, summarise
    from ..training.seg_data import find_pairs
    from ._common import check_writable, runtime

    from ..api import DEFAULT_DETECTION_MODEL, DEFAULT_SEGMENTATION_MODEL

    if args.out and not args.out.lower().endswith(".csv"):
        raise InputError(f"--out must end in .csv, got {Path(args.out).name}")
    if args.out:
        check_writable(args.out, "--out")
    pairs = find_pairs(args.data, log=print)  # images without a label are named, as training names them
    settings, _ = runtime(args)
    detection = args.task == "detection"
    models = args.model or [DEFAULT_DETECTION_MODEL if detection else DEFAULT_SEGMENTATION_MODEL]
    print(f"{len(pairs)} annotated case(s); model(s): {', '.join(map(str, models))}", flush=True)
    skipped = []

    def on_skip(case, reason):
        skipped.append(case)
        print(f"  {case}: skipped: {reason}", flush=True)

    if detection:
        return _detection(args, pairs, models, settings, on_skip) or _skipped(skipped, len(pairs))

    def on_case(case, model, dice):
        if not args.quiet:  # --quiet did nothing here: evaluate shows no progress bar (an audit helper)
            print(f"  {case} · {model}: " + ", ".join(f"{name} Dice {d:.3f}" for name, d in dice.items()), flush=True)

    rows = evaluate_segmentation(pairs, models, label_map=args.label_map, settings=settings, on_case=on_case,
                                 on_skip=on_skip)
    summary = summarise(rows)
    width = _name_width(s["model"] for s in summary)
    print(f"{'model':<{width}}{'class':<14}{'cases':>6}{'Dice mean ± sd':>18}{'HD95 median mm':>16}"
          f"{'FP cases':>10}{'lesions found':>15}")
    for s in summary:
        found = f"{s['lesions_found']}/{s['lesions']}" if "lesions" in s else ""
        # a class no reference holds has no Dice or HD95 to average: "no cases", not "nan ± nan"
        dice = f"{s['dice_mean']:>11.3f} ± {s['dice_sd']:.3f}" if s["cases"] else f"{'no cases':>18}"
        hd95 = f"{s['hd95_median_mm']:.1f}" if s["hd95_cases"] else ("none" if s["cases"] else "")
        if s["missed_cases"]:  # the median is over the cases the model labelled the class in
            hd95 += f" ({s['missed_cases']} missed)"
        print(f"{s['model']:<{width}}{s['class']:<14}{s['cases']:>6}{dice}"
              f"{hd95:>16}{s['false_positive_cases']:>10}{found:>15}")
    if args.out:
        _write_rows(args.out, ["case", "model", "class", "dice", "hd95_mm", "reference_ml", "predicted_ml", "lesions",
                               "lesions_found"], rows)
    return _skipped(skipped, len(pairs))


def _skipped(skipped, total) -> int:
    """Exit status: 1 when a case was skipped (the figures are of the others), else 0."""
    if not skipped:
        return 0
    print(f"{len(skipped)} of {total} case(s) skipped, the figures are of the others: {', '.join(skipped)}")
    return 1


def _write_rows(path, fields, rows) -> None:
    """The rows as CSV at ``path``, whole or not at all; none scored: the file is left as it was
    (a run whose every case was skipped replaced an earlier run's scores with a header)."""
    import csv
    import io
    from pathlib import Path

    from ..io.atomic import write_text_atomic

    if not rows:
        print(f"no case was scored: {path} was not written")
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    write_text_atomic(path, buffer.getvalue())
    print(f"rows written to {path}")


def _detection(args, pairs, models, settings, on_skip) -> int:
    import sys

    from ..evaluation import evaluate_detection

    def on_case(case, model, hit, lesions):
        if not args.quiet:
            print(f"  {case} · {model}: {hit} of {lesions} lesion(s) hit", flush=True)

    results = evaluate_detection(pairs, models, lesion=args.lesion_label, label_map=args.label_map,
                                 settings=settings, on_case=on_case, on_skip=on_skip,
                                 on_note=lambda text: print(f"warning: {text}", file=sys.stderr))
    print("FROC: sensitivity at 1/8 1/4 1/2 1 2 4 8 false positives per scan, and their mean")
    width = _name_width(results)
    for name, r in results.items():
        f = r["froc"]
        points = " ".join(f"{v:.3f}" for v in f["sensitivity"].values())
        print(f"{name:<{width}}{points} | mean {f['mean']:.3f} ({f['targets']} lesions, {f['scans']} scans)")
        op = r["operating_point"]
        if op is not None:
            print(f"{'':<{width}}at its operating point (score >= {op['score_threshold']:.2f}): sensitivity "
                  f"{op['sensitivity']:.3f} ({op['lesions_found']}/{op['lesions']}), "
                  f"{op['fp_per_scan']:.2f} false positives per scan")
    if args.out:
        _write_rows(args.out, ["model", "case", "lesions", "lesions_hit", "findings"],
                    [{"model": name, **c} for name, r in results.items() for c in r["cases"]])
    return 0


def _name_width(names) -> int:
    """The model column's width: 28, or the longest name and two spaces (a longer one ran into the
    next column; found by an audit helper)."""
    return max([28, *(len(str(n)) + 2 for n in names)])


def _cell(value):
    """A CSV cell: floats (numpy's too) to 4 decimals (0.9601378285250997 was written), NaN empty."""
    import numbers

    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        value = float(value)
        return "" if value != value else round(value, 4)
    return value
