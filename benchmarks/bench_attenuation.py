"""Attenuation benchmark: is each detected nodule read as solid, part-solid or ground-glass, and
does the Lung-RADS category for that type beat the type-blind size category?

On phantoms whose nodule types and solid-part diameters are known, the built-in detector runs
as `medai detect` would (findings at its operating point); each reference nodule takes the
highest-scoring finding whose centre lies in it.  Printed, with the settings:
1. a confusion table of true against read attenuation (postprocess.attenuation);
2. how often the reported category matches the true one (Lung-RADS v2022 baseline, from the
   phantom's true type, diameter and solid-part diameter): the baseline is the type-blind
   solid-nodule size category (`lung_rads`), ours `lung_rads_by_attenuation`, and, to tell type
   errors from size errors, the category from the true type with the measured sizes;
3. the measured against the true solid-part diameter of part-solid nodules;
4. the attenuation read on the real lung1 nodule (a solid tumour).

    .venv/bin/python benchmarks/bench_attenuation.py                       # held-out phantoms 9000-9019
    .venv/bin/python benchmarks/bench_attenuation.py --seeds 2000-2011     # validation phantoms
    .venv/bin/python benchmarks/bench_attenuation.py --seeds 2100-2107 --nodules 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("solid", "part-solid", "ground-glass")


def seed_range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def match_nodules(ph, findings):
    """(nodule record, the highest-scoring finding whose centre lies in it, or None) per nodule."""
    from napari_medai.metrics import target_mask

    nod = ph.nodules
    mask = target_mask(ph.hu.shape, ph.spacing, [n["center_voxel"] for n in nod], [n["diameter_mm"] for n in nod])
    best = {}
    for f in findings:  # ranked by score: the first hit is the best
        idx = np.clip(np.floor(np.asarray(f.center_voxel) + 0.5).astype(int), 0, np.array(mask.shape) - 1)
        hit = int(mask[tuple(idx)])
        if hit and hit not in best:
            best[hit] = f
    return [(n, best.get(i + 1)) for i, n in enumerate(nod)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="9000-9019", help="phantom seeds, e.g. 9000-9019 (default: held out)")
    ap.add_argument("--nodules", type=int, default=None, help="nodules per phantom (default: the phantom's own 0-4)")
    ap.add_argument("--threshold", type=float, default=None,
                    help="score threshold (default: the detector's operating point)")
    ap.add_argument("--no-lung1", action="store_true", help="skip the real lung1 CT")
    args = ap.parse_args()

    from napari_medai.api import DEFAULT_DETECTION_MODEL, detect
    from napari_medai.models import load_model
    from napari_medai.models.card import operating_threshold
    from napari_medai.postprocess import attenuation as att
    from napari_medai.training.phantom_dataset import phantom_for

    model = load_model(DEFAULT_DETECTION_MODEL)
    threshold = args.threshold if args.threshold is not None else operating_threshold(model.card)
    seeds = seed_range(args.seeds)
    print(f"model {model.card.name}, score threshold {threshold}, seeds {args.seeds} "
          f"({'phantom default' if args.nodules is None else args.nodules} nodules each)")
    print(f"attenuation: solid voxels >= {att.SOLID_HU:g} HU; solid when >= {att.SOLID_SHARE:g} of the mask; "
          f"else opened with a {att.OPENING_MM:g} mm ball, a solid component at least {att.MIN_COMPONENT_MM:g} mm "
          f"wide and elongated at most {att.ELONGATION_MAX:g}")
    rows, missed, t_model = [], 0, 0.0
    for seed in seeds:
        kwargs = {} if args.nodules is None else {"n_nodules": args.nodules}
        ph = phantom_for(seed, **kwargs)
        if not ph.nodules:
            continue
        t = time.perf_counter()
        found = detect(ph.hu, ph.spacing, model=model, score_threshold=threshold, max_findings=None)
        t_model += time.perf_counter() - t
        for n, f in match_nodules(ph, found):
            if f is None:
                missed += 1
                continue
            truth = att.lung_rads_by_attenuation(n["type"], n["diameter_mm"], n["solid_diameter_mm"])
            oracle = att.lung_rads_by_attenuation(n["type"], f.mean_diameter_mm, f.solid_diameter_mm)
            rows.append(dict(seed=seed, type=n["type"], d=n["diameter_mm"], solid=n["solid_diameter_mm"],
                             read=f.attenuation, d_read=f.mean_diameter_mm, solid_read=f.solid_diameter_mm,
                             truth=truth, blind=f.lung_rads, ours=f.lung_rads_by_attenuation, oracle=oracle))
            print(f"  seed {seed}: {n['type']:12s} {n['diameter_mm']:5.1f} mm (solid {n['solid_diameter_mm']:4.1f}) "
                  f"-> read {f.attenuation:12s} {f.mean_diameter_mm:5.1f} mm (solid {f.solid_diameter_mm:4.1f}); "
                  f"category true {truth}, type-blind {f.lung_rads}, ours {f.lung_rads_by_attenuation}", flush=True)

    print(f"\n{len(rows)} nodules found at the threshold, {missed} not found; detection {t_model:.0f} s")
    print("\n1. attenuation, true (rows) against read (columns):")
    print(f"   {'':14s}" + "".join(f"{k:>14s}" for k in KINDS))
    for k in KINDS:
        print(f"   {k:14s}" + "".join(f"{sum(r['type'] == k and r['read'] == j for r in rows):14d}" for j in KINDS))
    right = sum(r["type"] == r["read"] for r in rows)
    print(f"   read right: {right}/{len(rows)}")
    print("\n2. Lung-RADS v2022 baseline category equal to the true one:")
    for label, key in (("type-blind size category (baseline, lung_rads)", "blind"),
                       ("by the attenuation read (ours, lung_rads_by_attenuation)", "ours"),
                       ("by the true attenuation, measured sizes (type errors removed)", "oracle")):
        per = ", ".join(f"{k} {sum(r[key] == r['truth'] for r in rows if r['type'] == k)}/"
                        f"{sum(r['type'] == k for r in rows)}" for k in KINDS)
        print(f"   {label}: {sum(r[key] == r['truth'] for r in rows)}/{len(rows)} ({per})")
    part = [r for r in rows if r["type"] == "part-solid" and r["read"] == "part-solid"]
    if part:
        err = np.array([r["solid_read"] - r["solid"] for r in part])
        print(f"\n3. solid part of part-solid nodules read as part-solid ({len(part)}): measured - true "
              f"{err.mean():+.1f} ± {err.std():.1f} mm (median {np.median(err):+.1f})")
    else:
        print("\n3. no part-solid nodule was read as part-solid")
    if not args.no_lung1:
        from napari_medai.io import read_volume

        ct = read_volume(ROOT / "sample_data" / "lung1_ct.nii.gz")
        found = detect(ct.data, ct.spacing, model=model, score_threshold=threshold, max_findings=None)
        ref = read_volume(ROOT / "sample_data" / "lung1_nodule_mask.nii.gz").data > 0
        for rank, f in enumerate(found, start=1):
            idx = tuple(np.floor(np.asarray(f.center_voxel) + 0.5).astype(int))
            if ref[idx]:
                print(f"\n4. lung1 nodule (rank {rank}): read {f.attenuation}, solid share of the mask "
                      f"{att.attenuation(f.mask, ct.data[tuple(slice(a, b) for a, b in zip(*f.bbox_voxel))], ct.spacing).solid_share:.2f}, "
                      f"mean diameter {f.mean_diameter_mm:.1f} mm, solid {f.solid_diameter_mm:.1f} mm; "
                      f"type-blind {f.lung_rads}, ours {f.lung_rads_by_attenuation}")
                break
        else:
            print("\n4. lung1: the nodule is not among the findings at this threshold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
