"""Screening benchmark: ``screening.screen`` against its baseline, ``detect`` then ``segment``.

The built-in detector and segmentation share one network, so ``screen`` runs it once where
the two separate calls run it twice.  In one run this prints, each measured in a fresh
process (time and peak RSS are that process's own):

1. the real lung1 CT (48 x 386 x 512 voxels): time, peak RSS, and whether the findings and labels
   are identical to the separate calls' (where the labels differ, by how many voxels per class:
   the shared run mirrors from the lower of the two cards' focus levels, docs/screening.md);
2. a 512 x 512 x 300 phantom CT (0.7 x 0.7 x 1.25 mm, as bench_segmentation.py): the same;
3. with ``--thin``: a thin-slice 512 x 512 x 600 phantom CT (0.625 mm slices, the same extent as
   the 300-slice one, as low-dose screening CTs are often reconstructed): the same;
4. with ``--low-dose PHOTONS``: does the workflow's optional first step, the CT denoiser, help
   on low-dose CT?  The 20 held-out phantoms (seeds 9000-9019, as bench_detection.py and
   bench_segmentation.py) get simulated low-dose noise (``phantoms.simulate_low_dose``, PHOTONS
   per ray); ``screen`` runs on them as they are (the baseline) and denoised first, in the
   same run: detection FROC (MONAI's functions, all nodules and >= 4 mm) and per-scan lung and
   nodule Dice.

    .venv/bin/python benchmarks/bench_screening.py            # both volumes (~4 min on 2 cores)
    .venv/bin/python benchmarks/bench_screening.py --no-big   # lung1 only
    .venv/bin/python benchmarks/bench_screening.py --no-big --low-dose 2e4   # + low dose (~40 min)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LUNG1 = ROOT / "src" / "napari_medai" / "sample_data" / "lung1_ct.nii.gz"
BIG_SHAPE, BIG_SPACING = (300, 512, 512), (1.25, 0.7, 0.7)
BIG_FILE = Path("/tmp/bench_seg_big_hu.npy")  # shared with bench_segmentation.py
THIN_SHAPE, THIN_SPACING = (600, 512, 512), (0.625, 0.7, 0.7)  # thin-slice reconstruction, same extent
THIN_FILE = Path("/tmp/bench_screening_thin_hu.npy")
OUT = Path("/tmp/bench_screening")

RUN = """
import json, pickle, time, numpy as np
from napari_medai.io import read_volume
from napari_medai.inference import InferenceSettings
def peak_mb():  # VmHWM: this process's own peak
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
source, how, out = {source!r}, {how!r}, {out!r}
if source.endswith(".npy"):
    hu, spacing, affine = np.load(source), {npy_spacing!r}, None
else:
    vol = read_volume(source)
    hu, spacing, affine = vol.data, vol.spacing, vol.affine
rss0 = peak_mb()
t = time.perf_counter()
if how.startswith("screen"):
    from napari_medai.screening import screen
    settings = InferenceSettings(tta="mirror") if how == "screen-mirror" else None
    r = screen(hu, spacing, affine, score_threshold=0.0, max_findings=50, settings=settings)
    findings, labels = [s.finding.to_dict() for s in r.findings], r.labels
else:
    from napari_medai.api import detect, segment
    findings = [f.to_dict() for f in detect(hu, spacing, affine=affine, score_threshold=0.0, max_findings=50)]
    labels = segment(hu, spacing).labels
dt = time.perf_counter() - t
np.save(out + ".npy", labels)
open(out + ".json", "w").write(json.dumps(findings))
print(json.dumps({{"seconds": dt, "peak_rss_mb": peak_mb(), "rss_before_mb": rss0, "findings": len(findings)}}))
"""


def run(source: Path, how: str, spacing=BIG_SPACING) -> dict:
    out = str(OUT / f"{source.stem}_{how}")
    code = RUN.format(source=str(source), how=how, out=out, npy_spacing=spacing)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(source: Path, title: str, spacing=BIG_SPACING, mirror_baseline: bool = False) -> None:
    print(f"== {title}")
    hows = ("separate", "screen") + (("screen-mirror",) if mirror_baseline else ())
    rows = {how: run(source, how, spacing) for how in hows}
    labels = {"separate": "baseline: detect() then segment()", "screen": "screen(), one network run",
              "screen-mirror": "screen(), every window mirrored"}
    for how in hows:
        label, r = labels[how], rows[how]
        print(f"{label:<36} {r['seconds']:6.1f} s, peak RSS {r['peak_rss_mb']:5.0f} MB "
              f"(before {r['rss_before_mb']:.0f} MB), {r['findings']} findings")
    a, b = (OUT / f"{source.stem}_separate", OUT / f"{source.stem}_screen")
    la, lb = np.load(f"{a}.npy"), np.load(f"{b}.npy")
    same_labels = np.array_equal(la, lb)
    same_findings = json.loads(Path(f"{a}.json").read_text()) == json.loads(Path(f"{b}.json").read_text())
    speedup = rows["separate"]["seconds"] / rows["screen"]["seconds"]
    print(f"speed-up {speedup:.2f}x; identical labels: {same_labels}; identical findings: {same_findings}")
    if not same_labels:  # screen() mirrors from the lower of the two cards' focus levels, segment() from its own
        differ = la != lb
        per_class = ", ".join(f"class {c}: {int((la == c).sum())} vs {int((lb == c).sum())} voxels"
                              for c in np.union1d(np.unique(la), np.unique(lb)) if c)
        print(f"  labels differ on {int(differ.sum())} voxels ({100 * differ.mean():.4f} %); separate vs screen: "
              f"{per_class}")
    if mirror_baseline:  # what screen() ran before the detector mirrored only where a nodule may be (11-28)
        c = OUT / f"{source.stem}_screen-mirror"
        lc = np.load(f"{c}.npy")
        same = json.loads(Path(f"{b}.json").read_text()) == json.loads(Path(f"{c}.json").read_text())
        print(f"screen() vs every window mirrored: speed-up {rows['screen-mirror']['seconds'] / rows['screen']['seconds']:.2f}x; "
              f"labels agree on {100 * (lb == lc).mean():.4f} % of voxels (nodule voxels {int((lb == 2).sum())} vs "
              f"{int((lc == 2).sum())}); identical findings: {same}")


def low_dose(photons: float, seeds=range(9000, 9020)) -> None:
    import time

    from napari_medai.metrics import froc, target_mask
    from napari_medai.phantoms import simulate_low_dose
    from napari_medai.screening import screen
    from napari_medai.training.phantom_dataset import phantom_for
    from napari_medai.training.seg_data import chest_targets

    print(f"== held-out phantoms {seeds.start}-{seeds.stop - 1} at {photons:.0e} photons/ray: screen() on the "
          "low-dose scan (baseline) and with denoise=True, every finding")
    modes = {"low dose (baseline)": False, "low dose, denoised first": True}
    rows = {m: {"all": [], "4mm": [], "lung": [], "nodule": [], "s": 0.0} for m in modes}
    for seed in seeds:
        ph = phantom_for(seed)
        low = simulate_low_dose(ph.hu, photons, seed=seed, spacing=ph.spacing)
        nod = ph.nodules
        mask = target_mask(ph.hu.shape, ph.spacing, [n["center_voxel"] for n in nod], [n["diameter_mm"] for n in nod])
        small = [i + 1 for i, n in enumerate(nod) if n["diameter_mm"] < 4.0]
        truth = chest_targets(ph.labels)
        line = []
        for mode, denoise in modes.items():
            t = time.perf_counter()
            r = screen(low, ph.spacing, denoise=denoise, score_threshold=0.0, max_findings=None)
            rows[mode]["s"] += time.perf_counter() - t
            scores = [f.finding.score for f in r.findings]
            centres = np.array([f.finding.center_voxel for f in r.findings]).reshape(-1, 3)
            rows[mode]["all"].append((scores, centres, mask, []))
            rows[mode]["4mm"].append((scores, centres, mask, small))
            dice = {}
            for c, name in ((1, "lung"), (2, "nodule")):
                a, b = r.labels == c, truth == c
                if b.any():
                    dice[name] = 2.0 * (a & b).sum() / (a.sum() + b.sum())
                    rows[mode][name].append(dice[name])
            line.append(f"{'denoised' if denoise else 'as is'}: {len(scores)} findings, "
                        + ", ".join(f"{k} Dice {v:.3f}" for k, v in dice.items()))
        print(f"  seed {seed}: {len(nod)} nodule(s); " + "; ".join(line), flush=True)
    for mode, r in rows.items():
        a, b = froc(r["all"]), froc(r["4mm"])
        fmt = lambda x: " ".join(f"{v:.3f}" for v in x["sensitivity"].values())  # noqa: E731
        print(f"{mode}: FROC all {fmt(a)} | mean {a['mean']:.3f}; >= 4 mm {fmt(b)} | mean {b['mean']:.3f}")
        print(f"{'':<{len(mode)}}  lung Dice {np.mean(r['lung']):.3f} (n={len(r['lung'])}), nodule Dice "
              f"{np.mean(r['nodule']):.3f} (n={len(r['nodule'])}); {r['s']:.0f} s over {len(seeds)} scans")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-big", action="store_true", help="lung1 only")
    ap.add_argument("--low-dose", type=float, default=None, metavar="PHOTONS",
                    help="also screen the held-out phantoms at this simulated dose, without and with denoising")
    ap.add_argument("--low-dose-only", action="store_true", help="only the low-dose section")
    ap.add_argument("--mirror-baseline", action="store_true",
                    help="also screen() with every window mirrored (what it ran before 11-28), in the same run")
    ap.add_argument("--thin", action="store_true",
                    help="also a thin-slice CT: 512 x 512 x 600 at 0.625 mm, the same extent as the 300-slice one")
    args = ap.parse_args()
    import torch

    OUT.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; built-in models, default settings "
          "(the cards' test-time mirroring); every finding (score >= 0, at most 50)")
    if args.low_dose_only:
        low_dose(args.low_dose or 2e4)
        return
    compare(LUNG1, "real CT lung1 (512 x 512 x 48, 0.57 x 0.57 x 5 mm)", mirror_baseline=args.mirror_baseline)
    if args.low_dose:
        low_dose(args.low_dose)
    if not args.no_big:
        if not BIG_FILE.exists():
            from napari_medai.phantoms import make_chest_ct

            np.save(BIG_FILE, make_chest_ct(77, shape=BIG_SHAPE, spacing=BIG_SPACING, n_nodules=3).hu)
        compare(BIG_FILE, "phantom CT 512 x 512 x 300 (0.7 x 0.7 x 1.25 mm)", mirror_baseline=args.mirror_baseline)
    if args.thin:
        if not THIN_FILE.exists():
            from napari_medai.phantoms import make_chest_ct

            np.save(THIN_FILE, make_chest_ct(77, shape=THIN_SHAPE, spacing=THIN_SPACING, n_nodules=3).hu)
        compare(THIN_FILE, "thin-slice phantom CT 512 x 512 x 600 (0.7 x 0.7 x 0.625 mm)", THIN_SPACING,
                mirror_baseline=args.mirror_baseline)


if __name__ == "__main__":
    main()
