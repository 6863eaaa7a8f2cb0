"""Detection benchmark: the shipped nodule detector against a classical blob_log baseline.

Prints, in one run:
1. FROC sensitivities at 1/8 ... 8 false positives per scan and their mean (MONAI's FROC
   functions) on held-out phantoms, for all nodules and for nodules >= 4 mm, for the model
   and for scikit-image ``blob_log`` inside a classical lung mask;
2. on the real lung1 CT: the rank of the true nodule among the findings and how many false
   positives score above it;
3. detection time on a 512x512x300 volume;
4. how well the found nodules are measured: for each held-out nodule the detector hits, its
   best-scoring finding's mean axial diameter and volume against the same measurements of the
   phantom's reference nodule mask (``postprocess.findings``' own definitions), and whether
   the Lung-RADS size category agrees; beside it, in the same run, the same network's findings
   with their masks as drawn (``refine_masks=False``, read from the same network run; skipped
   with ``--no-mask-baseline`` or when the card refines no masks).

    .venv/bin/python benchmarks/bench_detection.py            # full run
    .venv/bin/python benchmarks/bench_detection.py --quick    # 3 small phantoms
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

HELD_OUT_SEEDS = range(9000, 9020)
QUICK_SHAPE = (48, 256, 256)  # --quick: crop each held-out phantom's grid to this


def _fmt(r):
    s = " ".join(f"{v:.3f}" for v in r["sensitivity"].values())
    return f"{s} | mean {r['mean']:.3f} ({r['targets']} nodules, {r['scans']} scans)"


def phantom_froc(model, seeds, quick, blob=True, compare_masks=True):
    from napari_medai.api import detect, findings_from_probabilities
    from napari_medai.inference import run_model
    from napari_medai.models import load_model
    from napari_medai.metrics import froc, measurement_rows, target_mask
    from napari_medai.phantoms.tissues import NODULE
    from napari_medai.training.phantom_dataset import phantom_for

    rows = {k: [] for k in ("model", "model_4mm", "blob", "blob_4mm")}
    measured = {"card": [], "as drawn": []}  # one row per nodule hit: reference and finding measurements
    loaded = load_model(model)
    extra = loaded.card.extra
    # the masks-as-drawn baseline reads the same network run (a one-stage detector's probabilities)
    compare = (compare_masks and bool(extra.get("mask_refine"))
               and extra.get("method", "segmentation") == "segmentation" and not extra.get("classifier"))
    t_model = t_blob = 0.0
    for seed in seeds:
        ph = phantom_for(seed, max_shape=QUICK_SHAPE if quick else None)
        spacing = ph.spacing
        nod = ph.nodules
        mask = target_mask(ph.hu.shape, spacing, [n["center_voxel"] for n in nod], [n["diameter_mm"] for n in nod])
        small = [i + 1 for i, n in enumerate(nod) if n["diameter_mm"] < 4.0]
        t = time.perf_counter()
        if compare:
            probs = run_model(loaded, ph.hu, spacing)
            found = findings_from_probabilities(loaded, probs, ph.hu, spacing, max_findings=None)
        else:
            found = detect(ph.hu, spacing, model=loaded, max_findings=None)
        t_model += time.perf_counter() - t
        scores = [f.score for f in found]
        centres = np.array([f.center_voxel for f in found]).reshape(-1, 3)
        rows["model"].append((scores, centres, mask, []))
        reference, nominal = ph.labels == NODULE, [n["diameter_mm"] for n in nod]
        measured["card"] += measurement_rows(reference, mask, found, spacing, nominal)
        if compare:  # the same network run, its masks as drawn: the measurement's baseline
            plain = findings_from_probabilities(loaded, probs, ph.hu, spacing, max_findings=None, refine_masks=False)
            measured["as drawn"] += measurement_rows(reference, mask, plain, spacing, nominal)
            del probs
        rows["model_4mm"].append((scores, centres, mask, small))
        t = time.perf_counter()
        b_scores, b_centres = [], np.zeros((0, 3))
        if blob:
            lung = classical_lung_mask(ph.hu)
            b_scores, b_centres, _ = blob_log_candidates(ph.hu, lung, spacing)
        t_blob += time.perf_counter() - t
        rows["blob"].append((b_scores, b_centres, mask, []))
        rows["blob_4mm"].append((b_scores, b_centres, mask, small))
        top = np.clip(np.rint(centres[:10]).astype(int), 0, np.array(mask.shape) - 1)
        hits = len(set(mask[tuple(top.T)].tolist()) - {0}) if len(top) else 0
        print(f"  seed {seed}: {len(nod)} nodule(s) {[round(n['diameter_mm'], 1) for n in nod]}, "
              f"model {len(found)} finding(s), {hits} hit in the top 10; blob_log {len(b_scores)} candidates", flush=True)
    return ({k: froc(v) for k, v in rows.items() if blob or not k.startswith("blob")},
            {"model": t_model, "blob_log": t_blob}, measured)


def measurement_summary(rows) -> list[str]:
    """Lines of the measurement table: per reference size band, median absolute diameter error,
    median absolute and signed volume error (% of the reference), Lung-RADS category agreement."""
    from napari_medai.metrics import measurement_errors

    bands = (("< 6 mm", 0, 6), ("6-8 mm", 6, 8), ("8-15 mm", 8, 15), (">= 15 mm", 15, 1e9), ("all", 0, 1e9))
    lines = [f"{'reference size':<16}{'hits':>5}{'|d diam| mm':>13}{'|d vol| %':>11}{'vol bias %':>12}{'category':>10}"]
    for name, lo, hi in bands:
        e = measurement_errors([r for r in rows if lo <= r["ref_diameter_mm"] < hi])
        if not e["n"]:
            lines.append(f"{name:<16}{0:>5}")
            continue
        agree = f"{e['category_agree']}/{e['n']}"
        lines.append(f"{name:<16}{e['n']:>5}{e['diameter_abs_mm']:>13.2f}{e['volume_abs_pct']:>11.1f}"
                     f"{e['volume_bias_pct']:>+12.1f}{agree:>10}")
    return lines


def lung1_rank(model, settings=None):
    from scipy import ndimage

    from napari_medai.api import detect
    from napari_medai.io import read_volume

    ct = read_volume(ROOT / "sample_data" / "lung1_ct.nii.gz")
    truth = read_volume(ROOT / "sample_data" / "lung1_nodule_mask.nii.gz").data > 0
    # a finding hits when its centre lies in the nodule (one voxel of tolerance)
    hit_zone = ndimage.binary_dilation(truth, iterations=1)
    t = time.perf_counter()
    found = detect(ct.data, ct.spacing, model=model, affine=ct.affine, max_findings=None, settings=settings)
    dt = time.perf_counter() - t
    for rank, f in enumerate(found, start=1):
        c = tuple(np.clip(np.rint(f.center_voxel).astype(int), 0, np.array(truth.shape) - 1))
        if hit_zone[c]:
            return {"rank": rank, "false_positives_above": rank - 1, "finding": f.to_dict(), "n_findings": len(found),
                    "seconds": dt, "truth_ml": float(truth.sum() * np.prod(ct.spacing) / 1000), "findings": found}
    return {"rank": None, "false_positives_above": len(found), "n_findings": len(found), "seconds": dt,
            "findings": found}


def big_volume_time(model):
    from napari_medai.api import detect
    from napari_medai.phantoms import make_chest_ct

    ph = make_chest_ct(77, shape=(300, 512, 512), spacing=(1.25, 0.7, 0.7), n_nodules=3)
    t = time.perf_counter()
    found = detect(ph.hu, (1.25, 0.7, 0.7), model=model)
    return time.perf_counter() - t, len(found)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="lung-nodule-detection")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-big", action="store_true")
    ap.add_argument("--no-mask-baseline", action="store_true",
                    help="skip the baseline that re-measures the same run's findings with their masks as drawn")
    ap.add_argument("--no-blob", action="store_true",
                    help="skip the blob_log baseline (comparing models against figures of an earlier full run)")
    args = ap.parse_args()
    import torch

    from napari_medai.models import load_model

    seeds = list(HELD_OUT_SEEDS)[:3] if args.quick else list(HELD_OUT_SEEDS)
    print(f"model {args.model}; torch {torch.__version__}, {torch.get_num_threads()} threads; default InferenceSettings")
    print(f"== FROC on held-out phantoms, seeds {seeds[0]}..{seeds[-1]}: sensitivity at 1/8 1/4 1/2 1 2 4 8 FP/scan")
    res, times, measured = phantom_froc(args.model, seeds, args.quick, blob=not args.no_blob,
                                        compare_masks=not args.no_mask_baseline)
    print(f"model, all nodules      {_fmt(res['model'])}")
    print(f"model, nodules >= 4 mm  {_fmt(res['model_4mm'])}")
    if args.no_blob:
        print("blob_log baseline skipped (--no-blob)")
    else:
        print(f"blob_log, all nodules   {_fmt(res['blob'])}")
        print(f"blob_log, >= 4 mm       {_fmt(res['blob_4mm'])}")
    print(f"goal: mean >= 0.90 and sensitivity at 1 FP >= 0.90 for nodules >= 4 mm "
          f"(model at 1 FP: {res['model_4mm']['sensitivity'][1]:.3f}); anchor: MONAI LUNA16 detector 0.936 mean on real scans")
    print(f"time: model {times['model']:.1f} s, blob_log baseline {times['blob_log']:.1f} s over {len(seeds)} scans")
    print("== measurements of the nodules found (best finding per hit nodule) against the reference mask, "
          "medians; Lung-RADS size category agreement")
    refine = load_model(args.model).card.extra.get("mask_refine")
    print(f"-- {args.model} as its card says (finding masks "
          + (f"refined within {refine['reach_mm']} mm)" if refine else "as drawn)"))
    for line in measurement_summary(measured["card"]):
        print(line)
    if measured["as drawn"]:
        print("-- baseline, same network and run: finding masks as drawn (probability >= 0.5, refine_masks=False)")
        for line in measurement_summary(measured["as drawn"]):
            print(line)
    print("== real CT lung1 (test only)")
    r = lung1_rank(args.model)
    if r["rank"] is None:
        print(f"the true nodule is NOT among the {r['n_findings']} findings ({r['seconds']:.1f} s)")
    else:
        f = r["finding"]
        print(f"true nodule ranked {r['rank']} of {r['n_findings']} ({r['false_positives_above']} false positive(s) above it); "
              f"score {f['score']:.3f}, long axis {f['diameter_mm']} mm, volume {f['volume_ml']:.2f} mL "
              f"(reference {r['truth_ml']:.2f} mL), Lung-RADS {f['lung_rads']}; {r['seconds']:.1f} s")
    if not (args.quick or args.no_big):
        dt, n = big_volume_time(args.model)
        print(f"== 512x512x300 volume (0.7x0.7x1.25 mm): detection {dt:.1f} s, {n} finding(s)")


if __name__ == "__main__":
    main()
