"""A reader's mark measured: ``postprocess.seeded.nodule_at`` against a fixed-threshold region grow.

The reader marks a nodule the detector missed (most under 6 mm: docs/detection.md) and the
plugin measures it from that point.  On phantoms every nodule is marked, at its centre and at a
point displaced by ``--jitter-mm`` in a random in-plane direction (a reader's click is not on the
centre), and measured two ways in the same run:

* ours, ``nodule_at``: the point snaps to the core, the edge is the half-maximum contour
  between the core and the lung around it, vessels are opened off;
* the baseline: voxels above ``--baseline-hu`` (-400 HU) connected to the marked voxel,
  within the same 30 mm ball (the classical fixed-threshold region grow).

Each is measured against the phantom's reference nodule mask with the detector benchmark's
functions (``metrics.measurement_rows``): median absolute mean-diameter and volume errors, and how
often the Lung-RADS size category agrees, by reference size band, plus how many marks were
refused (a message instead of a size).  On the real lung1 CT the reference nodule is marked at
its centre and the Dice with the reference mask printed.

    .venv/bin/python benchmarks/bench_seeded.py                        # held-out phantoms 9000-9019 + lung1
    .venv/bin/python benchmarks/bench_seeded.py --seeds 2000-2011      # validation phantoms
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BANDS = ((0.0, 6.0, "< 6 mm"), (6.0, 8.0, "6-8 mm"), (8.0, 15.0, "8-15 mm"), (15.0, 1e9, ">= 15 mm"), (0.0, 1e9, "all"))


def seed_range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def fixed_threshold_nodule(hu, spacing, point, threshold_hu=-400.0, max_diameter_mm=30.0):
    """The baseline: voxels >= ``threshold_hu`` connected to the marked voxel within the ball;
    None when the marked voxel is below the threshold."""
    from scipy import ndimage

    from napari_medai.postprocess.findings import Finding, mask_measurements

    spacing = np.asarray(spacing, float)
    c = np.clip(np.rint(point).astype(int), 0, np.array(hu.shape) - 1)
    half = np.ceil(max_diameter_mm / 2 / spacing).astype(int) + 1
    lo, hi = np.maximum(c - half, 0), np.minimum(c + half + 1, hu.shape)
    crop = hu[tuple(slice(a, b) for a, b in zip(lo, hi))]
    grids = np.ogrid[tuple(slice(0, n) for n in crop.shape)]
    distance = np.sqrt(sum(((g - (ci - li)) * s) ** 2 for g, ci, li, s in zip(grids, c, lo, spacing)))
    ball = distance <= max_diameter_mm / 2
    comps, _ = ndimage.label((crop >= threshold_hu) & ball)
    label = comps[tuple(c - lo)]
    if label == 0:
        return None
    region = comps == label
    box = ndimage.find_objects(region.astype(np.uint8))[0]
    mask = region[box]
    start = lo + np.array([s.start for s in box])
    centre = np.array(ndimage.center_of_mass(mask)) + start
    return Finding(center_voxel=[float(x) for x in centre], center_mm=[0.0, 0.0, 0.0],
                   bbox_voxel=[start.tolist(), (start + np.array(mask.shape)).tolist()], score=1.0, mask=mask,
                   **mask_measurements(mask, spacing))


def marks(nodules, spacing, jitter_mm, rng):
    """(exact centre, displaced point) per nodule: the displacement is ``jitter_mm`` in-plane."""
    out = []
    for n in nodules:
        c = np.asarray(n["center_voxel"], float)
        angle = rng.uniform(0, 2 * np.pi)
        shift = np.array([0.0, jitter_mm * np.sin(angle) / spacing[1], jitter_mm * np.cos(angle) / spacing[2]])
        out.append((c, c + shift))
    return out


def band_lines(rows, refused, total):
    from napari_medai.metrics import measurement_errors

    lines = []
    for lo, hi, name in BANDS:
        sel = [r for r in rows if lo <= r["ref_diameter_mm"] < hi]
        n_total = sum(1 for d in total if lo <= d < hi)
        n_refused = sum(1 for d in refused if lo <= d < hi)
        if not n_total:
            continue
        if sel:
            e = measurement_errors(sel)
            agree = sum(r["category"] == r["ref_category"] for r in sel)
            lines.append(f"| {name} | {n_total} | {n_refused} | {e['diameter_abs_mm']:.2f} | "
                         f"{e['volume_abs_pct']:.1f} | {agree}/{len(sel)} |")
        else:
            lines.append(f"| {name} | {n_total} | {n_refused} | - | - | - |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="9000-9019", help="phantom seeds (default: the held-out 9000-9019)")
    ap.add_argument("--jitter-mm", type=float, default=2.0, help="in-plane distance of the displaced mark (mm)")
    ap.add_argument("--baseline-hu", type=float, default=-400.0, help="the baseline's fixed threshold (HU)")
    ap.add_argument("--no-lung1", action="store_true", help="skip the real lung1 CT")
    args = ap.parse_args()

    from napari_medai.errors import InputError
    from napari_medai.metrics import measurement_rows, target_mask
    from napari_medai.phantoms.tissues import NODULE
    from napari_medai.postprocess import seeded
    from napari_medai.training.phantom_dataset import phantom_for

    rng = np.random.default_rng(0)
    print(f"seeds {args.seeds}; marks at the centre and {args.jitter_mm:g} mm off it in-plane (rng seed 0); "
          f"ours: nodule_at (snap {seeded.SNAP_MM:g} mm, half-maximum edge, lung < {seeded.LUNG_HU:g} HU, "
          f"max {seeded.MAX_DIAMETER_MM:g} mm); baseline: >= {args.baseline_hu:g} HU connected to the mark")
    rows = {key: [] for key in ("ours centre", "ours off", "baseline centre", "baseline off")}
    refused = {key: [] for key in rows}
    sizes, times = [], []
    for seed in seed_range(args.seeds):
        ph = phantom_for(seed)
        nod = ph.nodules
        if not nod:
            continue
        spacing = np.asarray(ph.spacing, float)
        target = target_mask(ph.hu.shape, spacing, [n["center_voxel"] for n in nod], [n["diameter_mm"] for n in nod])
        reference = ph.labels == NODULE
        ref_d = {r["lesion"]: r["ref_diameter_mm"] for r in measurement_rows(
            reference, target, [_stub(n) for n in nod], spacing)}
        for i, (centre, off) in enumerate(marks(nod, spacing, args.jitter_mm, rng), start=1):
            d = ref_d.get(i, float(nod[i - 1]["diameter_mm"]))
            sizes.append(d)
            for where, point in (("centre", centre), ("off", off)):
                t = time.perf_counter()
                try:
                    ours = seeded.nodule_at(ph.hu, spacing, point)
                except InputError:
                    ours = None
                times.append(time.perf_counter() - t)
                base = fixed_threshold_nodule(ph.hu, spacing, point, args.baseline_hu)
                for key, found in ((f"ours {where}", ours), (f"baseline {where}", base)):
                    if found is None:
                        refused[key].append(d)
                        continue
                    # the row is this nodule's: the finding counts for lesion i whatever its centre
                    found.center_voxel = [float(x) for x in centre]
                    rows[key] += [r for r in measurement_rows(reference, target, [found], spacing) if r["lesion"] == i]
        print(f"  seed {seed}: {len(nod)} nodule(s) {[round(n['diameter_mm'], 1) for n in nod]}", flush=True)
    print(f"\n{len(sizes)} nodules; nodule_at {np.median(times) * 1000:.0f} ms median, {max(times) * 1000:.0f} ms max "
          "per mark")
    for key in rows:
        print(f"\n**{key}**\n\n| reference size | marked | refused | median abs mean-diameter error mm "
              "| median abs volume error % | Lung-RADS agrees |\n|---|---|---|---|---|---|")
        print("\n".join(band_lines(rows[key], refused[key], sizes)))
    if not args.no_lung1:
        lung1(seeded)


def _stub(n):
    """A finding at the nodule's nominal centre: lets measurement_rows measure the reference."""
    from napari_medai.postprocess.findings import Finding

    return Finding(center_voxel=list(n["center_voxel"]), center_mm=[0, 0, 0], bbox_voxel=[[0] * 3, [1] * 3],
                   diameter_mm=0, short_axis_mm=0, mean_diameter_mm=0, volume_ml=0, score=1.0, lung_rads="2")


def lung1(seeded) -> None:
    from scipy import ndimage

    from napari_medai.io import read_volume

    data = ROOT / "src" / "napari_medai" / "sample_data"
    ct, ref = read_volume(data / "lung1_ct.nii.gz"), read_volume(data / "lung1_nodule_mask.nii.gz")
    reference = np.asarray(ref.data) > 0
    centre = np.array(ndimage.center_of_mass(reference))
    f = seeded.nodule_at(ct.data, ct.spacing, centre)
    mask = np.zeros_like(reference)
    (z0, y0, x0), (z1, y1, x1) = f.bbox_voxel
    mask[z0:z1, y0:y1, x0:x1] = f.mask
    dice = 2 * (mask & reference).sum() / (mask.sum() + reference.sum())
    ml = float(np.prod(ct.spacing)) / 1000
    print(f"\nlung1: marked at the reference mask's centre ({', '.join(f'{c:.1f}' for c in centre)}): Dice {dice:.3f}, "
          f"{f.volume_ml:.2f} mL (reference {reference.sum() * ml:.2f} mL), long axis {f.diameter_mm:.1f} mm, "
          f"mean {f.mean_diameter_mm:.1f} mm, Lung-RADS {f.lung_rads}, {f.attenuation}")


if __name__ == "__main__":
    main()
