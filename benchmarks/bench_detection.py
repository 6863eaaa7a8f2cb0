"""Detection benchmark: the shipped nodule detector against a classical blob_log baseline.

Prints, in one run:
1. FROC sensitivities at 1/8 ... 8 false positives per scan and their mean (MONAI's FROC
   functions) on held-out phantoms, for all nodules and for nodules >= 4 mm, for the model
   and for scikit-image ``blob_log`` inside a classical lung mask;
   With several ``--model`` names every model runs on the same phantoms, side by side.
2. on the real lung1 CT (and with ``--lung2`` on pyradiomics' lung2): the rank of the true
   lesion among the findings and how many false positives score above it; for a detector whose card has an operating point (its default
   score threshold), what a reader is shown at it, there and on the phantoms;
3. detection time on a 512x512x300 volume;
4. how well the found nodules are measured: for each held-out nodule the detector hits, its
   best-scoring finding's mean axial diameter and volume against the same measurements of the
   phantom's reference nodule mask (``postprocess.findings``' own definitions), and whether
   the Lung-RADS size category agrees; beside it, in the same run, the same network's findings
   with their masks as drawn (``refine_masks=False``, read from the same network run; skipped
   with ``--no-mask-baseline`` or when the card refines no masks).

    .venv/bin/python benchmarks/bench_detection.py            # full run
    .venv/bin/python benchmarks/bench_detection.py --quick    # 3 small phantoms
    .venv/bin/python benchmarks/bench_detection.py --model A B --seeds 2000 2006 --no-blob
        # two detectors side by side on validation phantoms (where a choice between them is made)
    .venv/bin/python benchmarks/bench_detection.py --tta-baseline mirror --no-blob
        # the first detector also with every window mirrored (its card's mirror-lesions' baseline)
    .venv/bin/python benchmarks/bench_detection.py --lung2 --real-only
        # lung1 and a second real CT, pyradiomics' lung2 (a 48 mL tumour; no detector has seen it)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from baselines import blob_log_candidates, classical_lung_mask  # noqa: E402
from real_cases import real_case  # noqa: E402

HELD_OUT_SEEDS = range(9000, 9020)
QUICK_SHAPE = (48, 256, 256)  # --quick: crop each held-out phantom's grid to this


def _fmt(r):
    s = " ".join(f"{v:.3f}" for v in r["sensitivity"].values())
    return f"{s} | mean {r['mean']:.3f} ({r['targets']} nodules, {r['scans']} scans)"


def phantom_froc(models, seeds, quick, blob=True, compare_masks=True, settings=None):
    """FROC rows per model (each phantom generated once, every model run on it) and blob_log's.
    ``settings``: per model name, the InferenceSettings it runs with (default: the card's); a
    name may be a row label standing for another model (``model_of``)."""
    from napari_medai.api import detect, findings_from_probabilities
    from napari_medai.inference import run_model
    from napari_medai.models import load_model
    from napari_medai.metrics import froc, measurement_rows, target_mask
    from napari_medai.phantoms.tissues import NODULE
    from napari_medai.training.phantom_dataset import phantom_for

    rows = {k: [] for k in ("blob", "blob_4mm")}
    times = {"blob_log": 0.0}
    measured = {}  # per model, one row per nodule hit: reference and finding measurements
    loaded = {}
    settings = settings or {}
    for name in models:
        loaded[name] = load_model(model_of(name))
        rows[name], rows[name + " >= 4 mm"], times[name] = [], [], 0.0
        measured[name] = []
    # the masks-as-drawn baseline reads the same network run (a one-stage detector's probabilities)
    first = loaded[models[0]]
    extra = first.card.extra
    compare = (compare_masks and bool(extra.get("mask_refine"))
               and extra.get("method", "segmentation") == "segmentation" and not extra.get("classifier"))
    if compare:
        measured["as drawn"] = []
    for seed in seeds:
        ph = phantom_for(seed, max_shape=QUICK_SHAPE if quick else None)
        spacing = ph.spacing
        nod = ph.nodules
        mask = target_mask(ph.hu.shape, spacing, [n["center_voxel"] for n in nod], [n["diameter_mm"] for n in nod])
        small = [i + 1 for i, n in enumerate(nod) if n["diameter_mm"] < 4.0]
        reference, nominal = ph.labels == NODULE, [n["diameter_mm"] for n in nod]
        line = [f"  seed {seed}: {len(nod)} nodule(s) {[round(n['diameter_mm'], 1) for n in nod]}"]
        for name in models:
            t = time.perf_counter()
            probs = None
            if compare and name == models[0]:
                probs = run_model(first, ph.hu, spacing)
                found = findings_from_probabilities(first, probs, ph.hu, spacing, max_findings=None)
            else:
                found = detect(ph.hu, spacing, model=loaded[name], max_findings=None, settings=settings.get(name))
            times[name] += time.perf_counter() - t
            scores = [f.score for f in found]
            centres = np.array([f.center_voxel for f in found]).reshape(-1, 3)
            rows[name].append((scores, centres, mask, []))
            rows[name + " >= 4 mm"].append((scores, centres, mask, small))
            measured[name] += measurement_rows(reference, mask, found, spacing, nominal)
            if probs is not None:  # the same network run, its masks as drawn: the measurement's baseline
                plain = findings_from_probabilities(first, probs, ph.hu, spacing, max_findings=None,
                                                    refine_masks=False)
                measured["as drawn"] += measurement_rows(reference, mask, plain, spacing, nominal)
                del probs
            top = np.clip(np.rint(centres[:10]).astype(int), 0, np.array(mask.shape) - 1)
            hits = len(set(mask[tuple(top.T)].tolist()) - {0}) if len(top) else 0
            line.append(f"{name} {len(found)} finding(s), {hits} hit in the top 10")
        t = time.perf_counter()
        b_scores, b_centres = [], np.zeros((0, 3))
        if blob:
            lung = classical_lung_mask(ph.hu)
            b_scores, b_centres, _ = blob_log_candidates(ph.hu, lung, spacing)
        times["blob_log"] += time.perf_counter() - t
        rows["blob"].append((b_scores, b_centres, mask, []))
        rows["blob_4mm"].append((b_scores, b_centres, mask, small))
        if blob:
            line.append(f"blob_log {len(b_scores)} candidates")
        print("; ".join(line), flush=True)
    if not blob:
        del times["blob_log"]
    return ({k: froc(v) for k, v in rows.items() if blob or not k.startswith("blob")}, times, measured, rows)


def model_of(label: str) -> str:
    """The detector a row label runs: "NAME (tta MODE)" is NAME run with that mirroring."""
    return label.split(" (tta ")[0]


def operating_point_lines(models, rows) -> list[str]:
    """What each detector with a fitted operating point (its card's default score threshold,
    ``medai train operating-point``) shows a reader on these phantoms."""
    from napari_medai.metrics import at_threshold
    from napari_medai.models import load_model
    from napari_medai.models.card import operating_threshold

    lines = []
    for name in models:
        t = operating_threshold(load_model(model_of(name)).card)
        if t is None:
            lines.append(f"{name}: no operating point on its card")
            continue
        a, b = at_threshold(rows[name], t), at_threshold(rows[name + " >= 4 mm"], t)
        lines.append(f"{name} at its operating point (score >= {t:.2f}): {a['fp_per_scan']:.2f} false positives per "
                     f"scan; sensitivity {a['sensitivity']:.3f} ({a['lesions_found']}/{a['lesions']}) all nodules, "
                     f"{b['sensitivity']:.3f} ({b['lesions_found']}/{b['lesions']}) >= 4 mm")
    return lines


def measurement_summary(rows) -> list[str]:
    """Lines of the measurement table: per reference size band, median absolute diameter error,
    median absolute and signed volume error (% of the reference), Lung-RADS category agreement,
    and how many of the findings were measured on the CT's half-maximum edge (``Finding.outline``;
    the rest kept the network's outline: no lung or no contrast around them, or no refinement)."""
    from napari_medai.metrics import measurement_errors

    bands = (("< 6 mm", 0, 6), ("6-8 mm", 6, 8), ("8-15 mm", 8, 15), (">= 15 mm", 15, 1e9), ("all", 0, 1e9))
    lines = [f"{'reference size':<16}{'hits':>5}{'|d diam| mm':>13}{'|d vol| %':>11}{'vol bias %':>12}{'category':>10}"
             f"{'refined':>9}"]
    for name, lo, hi in bands:
        band = [r for r in rows if lo <= r["ref_diameter_mm"] < hi]
        e = measurement_errors(band)
        if not e["n"]:
            lines.append(f"{name:<16}{0:>5}")
            continue
        agree = f"{e['category_agree']}/{e['n']}"
        refined = f"{sum(r.get('outline') == 'half-maximum' for r in band)}/{e['n']}"
        lines.append(f"{name:<16}{e['n']:>5}{e['diameter_abs_mm']:>13.2f}{e['volume_abs_pct']:>11.1f}"
                     f"{e['volume_bias_pct']:>+12.1f}{agree:>10}{refined:>9}")
    return lines


def real_rank(model, settings=None, case="lung1"):
    from scipy import ndimage

    from napari_medai.api import detect

    volume, spacing, affine, truth = real_case(case)
    # a finding hits when its centre lies in the nodule (one voxel of tolerance)
    hit_zone = ndimage.binary_dilation(truth, iterations=1)
    t = time.perf_counter()
    found = detect(volume, spacing, model=model, affine=affine, max_findings=None, settings=settings)
    dt = time.perf_counter() - t
    for rank, f in enumerate(found, start=1):
        c = tuple(np.clip(np.rint(f.center_voxel).astype(int), 0, np.array(truth.shape) - 1))
        if hit_zone[c]:
            return {"rank": rank, "false_positives_above": rank - 1, "finding": f.to_dict(), "n_findings": len(found),
                    "seconds": dt, "truth_ml": float(truth.sum() * np.prod(spacing) / 1000), "findings": found}
    return {"rank": None, "false_positives_above": len(found), "n_findings": len(found), "seconds": dt,
            "findings": found}


def big_volume_time(model, settings=None):
    from napari_medai.api import detect
    from napari_medai.phantoms import make_chest_ct

    ph = make_chest_ct(77, shape=(300, 512, 512), spacing=(1.25, 0.7, 0.7), n_nodules=3)
    t = time.perf_counter()
    found = detect(ph.hu, (1.25, 0.7, 0.7), model=model, settings=settings)
    return time.perf_counter() - t, len(found)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", nargs="+", default=["lung-nodule-detection"],
                    help="one or more detectors, all run on the same phantoms (the first is the one measured "
                         "against its masks as drawn, on lung1 and on the big volume)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs=2, metavar=("FIRST", "STOP"),
                    help="other phantoms than the held-out 9000-9019, e.g. 2000 2006: the validation phantoms "
                         "choices between models are made on (then lung1 and the big volume are skipped)")
    ap.add_argument("--no-big", action="store_true")
    ap.add_argument("--no-mask-baseline", action="store_true",
                    help="skip the baseline that re-measures the same run's findings with their masks as drawn")
    ap.add_argument("--no-blob", action="store_true",
                    help="skip the blob_log baseline (comparing models against figures of an earlier full run)")
    ap.add_argument("--tta-baseline", choices=("off", "mirror", "mirror-lesions"),
                    help="also run the first detector with this test-time mirroring instead of its card's, "
                         "as a row of its own (e.g. mirror: every window mirrored, what mirror-lesions stands in for)")
    ap.add_argument("--lung2", action="store_true",
                    help="also rank the tumour of pyradiomics' lung2 CT, a second real scan (fetched with pip on "
                         "first use into ~/.cache/napari-medai; needs pynrrd)")
    ap.add_argument("--real-only", action="store_true",
                    help="only the real CTs (lung1, and lung2 with --lung2): no phantoms, no big volume")
    args = ap.parse_args()
    import torch

    from napari_medai.models import load_model
    from napari_medai.models.card import operating_threshold

    from napari_medai.inference import InferenceSettings

    models = list(dict.fromkeys(args.model))
    settings = {}
    if args.tta_baseline:
        label = f"{models[0]} (tta {args.tta_baseline})"
        models.append(label)
        settings[label] = InferenceSettings(tta=args.tta_baseline)
    seeds = list(HELD_OUT_SEEDS)[:3] if args.quick else list(HELD_OUT_SEEDS)
    if args.seeds:
        seeds = list(range(*args.seeds))
    print(f"models {', '.join(models)}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          "default InferenceSettings" + (f" (mirroring as each card says, except the '(tta {args.tta_baseline})' "
                                         "row)" if args.tta_baseline else ""))
    if not args.real_only:
        print(f"== FROC on {'validation' if args.seeds else 'held-out'} phantoms, seeds {seeds[0]}..{seeds[-1]}: sensitivity at 1/8 1/4 1/2 1 2 4 8 FP/scan")
        res, times, measured, rows = phantom_froc(models, seeds, args.quick, blob=not args.no_blob,
                                                  compare_masks=not args.no_mask_baseline, settings=settings)
        width = max(len(m) for m in models) + 18
        for name in models:
            print(f"{name + ', all nodules':<{width}}{_fmt(res[name])}")
            print(f"{name + ', nodules >= 4 mm':<{width}}{_fmt(res[name + ' >= 4 mm'])}")
        if args.no_blob:
            print("blob_log baseline skipped (--no-blob)")
        else:
            print(f"{'blob_log, all nodules':<{width}}{_fmt(res['blob'])}")
            print(f"{'blob_log, >= 4 mm':<{width}}{_fmt(res['blob_4mm'])}")
        at_1fp = ", ".join(f"{m} {res[m + ' >= 4 mm']['sensitivity'][1]:.3f}" for m in models)
        print(f"goal: mean >= 0.90 and sensitivity at 1 FP >= 0.90 for nodules >= 4 mm "
              f"(at 1 FP: {at_1fp}); anchor: MONAI LUNA16 detector 0.936 mean on real scans")
        for line in operating_point_lines(models, rows):
            print(line)
        print("time over " + f"{len(seeds)} scans: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
        print("== measurements of the nodules found (best finding per hit nodule) against the reference mask, "
              "medians; Lung-RADS size category agreement")
        for name in models:
            refine = load_model(model_of(name)).card.extra.get("mask_refine")
            print(f"-- {name} as its card says (finding masks "
                  + (f"refined within {refine['reach_mm']} mm)" if refine else "as drawn)"))
            for line in measurement_summary(measured[name]):
                print(line)
        if measured.get("as drawn"):
            print(f"-- baseline, {models[0]}'s same network run: finding masks as drawn "
                  "(probability >= 0.5, refine_masks=False)")
            for line in measurement_summary(measured["as drawn"]):
                print(line)
    if args.seeds:  # a choice made on validation phantoms must not look at the test data
        return
    for case in ("lung1", "lung2") if args.lung2 else ("lung1",):
        print(f"== real CT {case} (test only)")
        for name in models:
            r = real_rank(model_of(name), settings.get(name), case)
            above_half = sum(f.score >= 0.5 for f in r["findings"])
            if r["rank"] is None:
                print(f"{name}: the true lesion is NOT among the {r['n_findings']} findings ({above_half} score >= 0.5; "
                      f"{r['seconds']:.1f} s)")
            else:
                f = r["finding"]
                print(f"{name}: true lesion ranked {r['rank']} of {r['n_findings']} ({r['false_positives_above']} false "
                      f"positive(s) above it, {above_half} finding(s) score >= 0.5); score {f['score']:.3f}, long axis "
                      f"{f['diameter_mm']} mm, volume {f['volume_ml']:.2f} mL (reference {r['truth_ml']:.2f} mL), "
                      f"Lung-RADS {f['lung_rads']}; {r['seconds']:.1f} s")
            t = operating_threshold(load_model(model_of(name)).card)
            if t is not None:
                shown = [f for f in r["findings"] if f.score >= t]
                where = (f"the true lesion is number {r['rank']} of them" if r["rank"] is not None
                         and r["rank"] <= len(shown) else "the true lesion is not among them")
                print(f"{name} at its operating point (score >= {t:.2f}): {len(shown)} finding(s) listed, {where}")
    if not (args.quick or args.no_big or args.real_only):
        for name in models:
            dt, n = big_volume_time(model_of(name), settings.get(name))
            print(f"== 512x512x300 volume (0.7x0.7x1.25 mm), {name}: detection {dt:.1f} s, {n} finding(s)")


if __name__ == "__main__":
    main()
