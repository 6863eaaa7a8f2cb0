"""Segmentation benchmark: the shipped chest-CT model against a classical baseline.

Prints, in one run:
1. Dice and HD95 per class (lung, nodule) on held-out phantoms (seeds never used in
   training), for the model and for the classical baseline (HU threshold + connected
   components + hole filling for lungs; threshold inside the lung mask for nodules);
2. nodule Dice on the real lung1 CT (never used in training) and a PNG overlay in docs/images;
   with ``--lung2`` also the tumour Dice on pyradiomics' lung2 CT (``real_cases.py``);
3. time and peak RSS of segmenting a 512x512x300 volume, fp32 vs bf16, and their agreement;
   where the card mirrors at lesions only ("mirror-lesions"), also full mirroring in fp32 as
   the baseline, with the labels' agreement.

    .venv/bin/python benchmarks/bench_segmentation.py            # full run (~15-25 min on 2 cores)
    .venv/bin/python benchmarks/bench_segmentation.py --quick    # 3 small phantoms, no big volume
    .venv/bin/python benchmarks/bench_segmentation.py --real-only --lung2   # lung1 and the second real CT
    .venv/bin/python benchmarks/bench_segmentation.py --no-big --compare chest-ct-lung-nodule-argmax
        # a second card scored on the same scans (one network run where both share weights and mirroring)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from baselines import classical_segmentation  # noqa: E402

HELD_OUT_SEEDS = range(9000, 9020)  # training uses 1000+; these are never trained on
QUICK_SHAPE = (48, 256, 256)  # --quick: crop each held-out phantom's grid to this
CLASSES = {1: "lung", 2: "nodule"}
SIZE_BANDS_MM = (0, 6, 8, 15, 1000)  # Lung-RADS solid-nodule size steps (6, 8, 15 mm)


def nodules_found(pred, ref, spacing) -> list[tuple[float, bool]]:
    """(equivalent diameter mm, touched by the predicted nodule class) per reference nodule."""
    from napari_medai.metrics import components_found

    return [(float((6 * v / np.pi) ** (1 / 3)), hit) for v, hit in components_found(pred == 2, ref == 2, spacing)]


def _recall_by_size(found) -> str:
    parts = []
    for lo, hi in zip(SIZE_BANDS_MM[:-1], SIZE_BANDS_MM[1:]):
        band = [f for d, f in found if lo <= d < hi]
        label = f">={lo}" if hi >= 1000 else (f"<{hi}" if lo == 0 else f"{lo}-{hi}")
        parts.append(f"{label} mm {sum(band)}/{len(band)}")
    return ", ".join(parts) + f"; all {sum(f for _, f in found)}/{len(found)}"


def _summ(values):
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    return f"{v.mean():.3f} ± {v.std():.3f} (n={len(v)})" if len(v) else "n/a"


def _run_key(loaded, settings) -> str:
    """What decides a card's network output: two cards with the same key share one run.  The
    weights are named by their checksum where the card has one, else by the network object (a
    bundle or TorchScript file loaded twice is two networks, never shared by accident)."""
    card, extra = loaded.card, loaded.card.extra
    tta = extra.get("tta", "off") if settings.tta == "auto" else settings.tta
    weights = card.sha256 or f"network {id(loaded.network)}"
    return json.dumps([weights, card.weights, list(card.spacing), list(card.roi_size), card.intensity, tta,
                       extra.get("focus_probability")], sort_keys=True, default=str)


def segment_cards(volume, spacing, names, settings) -> list[np.ndarray]:
    """Each named model's labels for ``volume``; cards that share weights and mirroring (a
    variant's clean-up) share one network run, so their difference is the clean-up alone."""
    from napari_medai.api import first_segmentation, finish_segmentation
    from napari_medai.inference import run_model
    from napari_medai.models import load_model

    runs, out = {}, []
    for name in names:
        loaded = load_model(name)
        key = _run_key(loaded, settings)
        if key not in runs:
            runs[key] = first_segmentation(loaded.card, run_model(loaded, volume, spacing, settings))
        out.append(finish_segmentation(loaded, runs[key], volume, spacing, settings=settings).labels)
    return out


def phantom_scores(model_name, seeds, quick, settings, compare=None):
    from napari_medai.metrics import dice_hd95
    from napari_medai.training.phantom_dataset import phantom_for
    from napari_medai.training.seg_data import chest_targets

    cards = {"model": model_name, **({"compare": compare} if compare else {})}  # method -> model name
    methods = ["model", "classical"] + (["compare"] if compare else [])
    rows = {m: [] for m in methods}
    found = {m: [] for m in methods}
    t_model = t_base = 0.0
    for seed in seeds:
        ph = phantom_for(seed, max_shape=QUICK_SHAPE if quick else None)
        shape, spacing = ph.hu.shape, ph.spacing
        ref = chest_targets(ph.labels)
        t = time.perf_counter()
        preds = dict(zip(cards, segment_cards(ph.hu, spacing, list(cards.values()), settings)))
        t_model += time.perf_counter() - t
        t = time.perf_counter()
        preds["classical"] = classical_segmentation(ph.hu, spacing)
        t_base += time.perf_counter() - t
        # Scans without nodules: nodule Dice is only defined where there is a nodule.
        classes = CLASSES if (ref == 2).any() else {1: "lung"}
        for m in methods:
            rows[m].append(dice_hd95(preds[m], ref, classes, spacing))
            found[m] += nodules_found(preds[m], ref, spacing)
        print(f"  seed {seed} {shape} {spacing}: " + " | ".join(
            f"{m} lung {rows[m][-1]['lung']['dice']:.3f} nodule "
            f"{rows[m][-1].get('nodule', {}).get('dice', float('nan')):.3f}" for m in methods), flush=True)
    out = {}
    for method, res in rows.items():
        out[method] = {}
        for name in CLASSES.values():
            dice = [r[name]["dice"] for r in res if name in r]
            hd = [r[name]["hd95_mm"] for r in res if name in r]
            out[method][name] = {"dice": float(np.mean(dice)) if dice else None, "dice_txt": _summ(dice),
                                 "hd95_txt": _summ(hd), "hd95_mm": float(np.nanmean(hd)) if hd else None}
    out["time_s"] = {"model": t_model, "classical": t_base}
    out["found"] = found
    return out


def real_scores(model_name, settings, png: Path | None, case="lung1", compare=None):
    """The model's (and ``compare``'s, under "compare") nodule Dice and volumes on a real CT."""
    from real_cases import real_case

    volume, spacing, _, ref = real_case(case)
    labels = segment_cards(volume, spacing, [model_name] + ([compare] if compare else []), settings)
    base = classical_segmentation(volume, spacing) == 2
    dice_base = 2 * (base & ref).sum() / max(1, base.sum() + ref.sum())
    if png is not None:
        _overlay_png(volume, labels[0], ref, spacing, png)
    out = [{"nodule_dice": float(2 * ((lab == 2) & ref).sum() / max(1, (lab == 2).sum() + ref.sum())),
            "classical_nodule_dice": float(dice_base),
            "predicted_nodule_ml": float((lab == 2).sum() * np.prod(spacing) / 1000),
            "reference_nodule_ml": float(ref.sum() * np.prod(spacing) / 1000),
            "lung_ml": float((lab == 1).sum() * np.prod(spacing) / 1000)} for lab in labels]
    return {**out[0], "compare": out[1]} if compare else out[0]


def _overlay_png(hu, labels, ref, spacing, path: Path):
    """Axial slice through the reference nodule + a coronal view: lungs blue, nodule red, truth yellow outline."""
    from skimage.io import imsave
    from skimage.segmentation import find_boundaries
    from skimage.transform import resize

    z = int(np.argmax(ref.reshape(ref.shape[0], -1).sum(1)))
    y = int(np.round(np.argwhere(ref).mean(0)[1]))

    def render(img, lab, truth, aspect):
        g = np.clip((img.astype(np.float32) + 1000) / 1400, 0, 1)
        rgb = np.stack([g, g, g], -1)
        rgb[lab == 1] = 0.6 * rgb[lab == 1] + 0.4 * np.array([0.2, 0.5, 1.0])
        rgb[lab == 2] = 0.4 * rgb[lab == 2] + 0.6 * np.array([1.0, 0.15, 0.15])
        rgb[find_boundaries(truth)] = [1.0, 1.0, 0.0]
        if aspect != 1:
            rgb = resize(rgb, (int(rgb.shape[0] * aspect), rgb.shape[1]), order=0)
        return rgb

    ax = render(hu[z], labels[z], ref[z], 1)
    # coronal: flip z so that superior is up; stretch z for square pixels
    cor = render(hu[::-1, y], labels[::-1, y], ref[::-1, y], spacing[0] / spacing[2])
    h = max(ax.shape[0], cor.shape[0])
    pad = lambda a: np.pad(a, ((0, h - a.shape[0]), (0, 0), (0, 0)))  # noqa: E731
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, (np.concatenate([pad(ax), pad(cor)], 1) * 255).astype(np.uint8), check_contrast=False)


BIG_SHAPE, BIG_SPACING = (300, 512, 512), (1.25, 0.7, 0.7)
BIG_FILE = Path("/tmp/bench_seg_big_hu.npy")


BF16_CROP = (slice(100, 196), slice(160, 352), slice(160, 352))  # 96 x 192 x 192 of the big volume


def big_volume_run(model_name, precision, crop=None, tag=None, tta="auto"):
    """Segment a 512x512x300 phantom CT (0.7x0.7x1.25 mm) in a fresh process: time + peak RSS.

    The volume is generated once and saved, so the measuring process holds only the int16
    volume (150 MB) before inference and its peak RSS is the segmentation's own.
    """
    if not BIG_FILE.exists():
        from napari_medai.phantoms import make_chest_ct

        np.save(BIG_FILE, make_chest_ct(77, shape=BIG_SHAPE, spacing=BIG_SPACING, n_nodules=3).hu)
    code = f"""
import time, resource, numpy as np, json
from napari_medai.api import segment
from napari_medai.inference import InferenceSettings
def peak_mb():  # VmHWM: this process's own peak (ru_maxrss would include the forking parent's)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
hu = np.ascontiguousarray(np.load({str(BIG_FILE)!r}){"" if crop is None else "[" + repr(tuple(crop)) + "]"})
rss0 = peak_mb()
t = time.perf_counter()
res = segment(hu, {BIG_SPACING!r}, model={model_name!r}, settings=InferenceSettings(precision={precision!r}, tta={tta!r}))
dt = time.perf_counter() - t
np.save('/tmp/bench_seg_{tag or precision}.npy', res.labels)
print(json.dumps({{"seconds": dt, "peak_rss_mb": peak_mb(),
                   "rss_before_mb": rss0}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="chest-ct-lung-nodule")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-big", action="store_true", help="skip the 512x512x300 timing")
    ap.add_argument("--big-only", action="store_true", help="only the 512x512x300 timing")
    ap.add_argument("--tta", default="auto", choices=("auto", "off", "mirror-lesions", "mirror"),
                    help="test-time mirroring for the phantoms and lung1 (default: the card's)")
    ap.add_argument("--real-only", action="store_true", help="only the real CTs: no phantoms, no big volume")
    ap.add_argument("--compare", metavar="MODEL",
                    help="also score this model on the same scans (a variant card: one shared network run)")
    ap.add_argument("--lung2", action="store_true",
                    help="also score pyradiomics' lung2 CT's tumour (fetched with pip on first use; needs pynrrd)")
    args = ap.parse_args()
    import torch

    from napari_medai.inference import InferenceSettings
    from napari_medai.inference.precision import cpu_has_native_bf16

    settings = InferenceSettings(tta=args.tta)
    seeds = list(HELD_OUT_SEEDS)[:3] if args.quick else list(HELD_OUT_SEEDS)
    print(f"model {args.model}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"native bf16: {cpu_has_native_bf16()}; settings {settings}")
    if not args.big_only:
        phantoms_and_lung1(args, seeds, settings)
    if not (args.quick or args.no_big or args.real_only):
        big_volume(args)


def phantoms_and_lung1(args, seeds, settings):
    if not args.real_only:
        print(f"== held-out phantoms: seeds {seeds[0]}..{seeds[-1]} ({len(seeds)} scans)")
        ph = phantom_scores(args.model, seeds, args.quick, settings, args.compare)
        methods = ("model", "classical") + (("compare",) if args.compare else ())
        if args.compare:
            print(f"compare = {args.compare}")
        print(f"{'method':<11}{'lung Dice':<26}{'lung HD95 mm':<26}{'nodule Dice':<26}{'nodule HD95 mm':<26}")
        for m in methods:
            r = ph[m]
            print(f"{m:<11}{r['lung']['dice_txt']:<26}{r['lung']['hd95_txt']:<26}{r['nodule']['dice_txt']:<26}"
                  f"{r['nodule']['hd95_txt']:<26}")
        print("nodules found (any voxel labelled nodule), by equivalent diameter:")
        for m in methods:
            print(f"  {m:<10} {_recall_by_size(ph['found'][m])}")
        shared = " (with --compare's clean-up: not a timing)" if args.compare else ""
        print(f"time: model{shared} {ph['time_s']['model']:.1f} s, classical {ph['time_s']['classical']:.1f} s "
              "(goal: lung Dice >= 0.97, nodule Dice >= 0.80)")
    print("== real CT lung1 (test only, never trained on)")
    # each model its own overlay: a variant's run must not replace the shipped model's figure
    suffix = "" if args.model == "chest-ct-lung-nodule" else f"_{Path(args.model).stem}"
    png = ROOT / "docs" / "images" / f"segmentation_lung1{suffix}.png"
    l1 = real_scores(args.model, settings, None if args.quick else png, compare=args.compare)
    print(f"nodule Dice {l1['nodule_dice']:.3f} (goal >= 0.70; classical {l1['classical_nodule_dice']:.3f}); "
          f"nodule {l1['predicted_nodule_ml']:.2f} mL vs reference {l1['reference_nodule_ml']:.2f} mL; "
          f"lungs {l1['lung_ml']:.0f} mL" + ("" if args.quick else f"; overlay {png.relative_to(ROOT)}"))
    if args.compare:
        c = l1["compare"]
        print(f"  compare {args.compare}: nodule Dice {c['nodule_dice']:.3f}; nodule {c['predicted_nodule_ml']:.2f} mL; "
              f"lungs {c['lung_ml']:.0f} mL")
    if args.lung2:
        print("== real CT lung2 (test only: a 48 mL tumour, larger than the 3-30 mm nodules trained on)")
        l2 = real_scores(args.model, settings, None, "lung2", compare=args.compare)
        print(f"tumour Dice {l2['nodule_dice']:.3f} (classical {l2['classical_nodule_dice']:.3f}); "
              f"nodule label {l2['predicted_nodule_ml']:.2f} mL vs reference {l2['reference_nodule_ml']:.2f} mL; "
              f"lungs {l2['lung_ml']:.0f} mL")
        if args.compare:
            c = l2["compare"]
            print(f"  compare {args.compare}: tumour Dice {c['nodule_dice']:.3f}; nodule label "
                  f"{c['predicted_nodule_ml']:.2f} mL; lungs {c['lung_ml']:.0f} mL")


def big_volume(args):
    from napari_medai.inference.precision import cpu_has_native_bf16

    print("== 512x512x300 volume, 0.7x0.7x1.25 mm (fresh process each; goal <= 60 s, <= 3 GB)")
    native = cpu_has_native_bf16()
    # Without native bf16 (AVX512-BF16/AMX) torch emulates it and is many times slower than fp32:
    # the automatic precision then picks fp32, and bf16 is compared on a crop only.
    runs = {p: big_volume_run(args.model, p) for p in (("fp32", "bf16") if native else ("fp32",))}
    for p, r in runs.items():
        print(f"{p}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB "
              f"(process before inference, with the volume loaded {r['rss_before_mb']:.0f} MB)")
    if native:
        a, b = np.load("/tmp/bench_seg_fp32.npy"), np.load("/tmp/bench_seg_bf16.npy")
    else:
        # one pass each: the crop compares precisions, and emulated bf16 is slow enough already
        print("bf16 is not native on this CPU (automatic precision = fp32); bf16 vs fp32 on a "
              "96x192x192 crop of the same volume, one pass (tta off):")
        runs = {p: big_volume_run(args.model, p, BF16_CROP, f"crop_{p}", tta="off") for p in ("fp32", "bf16")}
        for p, r in runs.items():
            print(f"  crop {p}: {r['seconds']:.1f} s")
        a, b = np.load("/tmp/bench_seg_crop_fp32.npy"), np.load("/tmp/bench_seg_crop_bf16.npy")
    print(f"bf16 speed-up over fp32: {runs['fp32']['seconds'] / runs['bf16']['seconds']:.2f}x; "
          f"label agreement {100 * (a == b).mean():.3f} % of voxels")
    full_mirroring_baseline(args)


def full_mirroring_baseline(args):
    """The card's mirroring against mirroring every window, both fp32, in this run: what
    "mirror-lesions" (inference.focus) saves and what it changes."""
    from napari_medai.models import load_model

    card_tta = load_model(args.model).card.extra.get("tta", "off")
    if card_tta != "mirror-lesions":
        return
    full = big_volume_run(args.model, "fp32", tag="fp32_full_mirror", tta="mirror")
    mine = np.load("/tmp/bench_seg_fp32.npy")
    other = np.load("/tmp/bench_seg_fp32_full_mirror.npy")
    print(f"baseline, full mirroring (tta=mirror), fp32: {full['seconds']:.1f} s, peak RSS "
          f"{full['peak_rss_mb']:.0f} MB; the card's mirror-lesions agrees on {100 * (mine == other).mean():.3f} % "
          f"of voxels; nodule voxels {int((mine == 2).sum())} vs {int((other == 2).sum())}, "
          f"{int(((mine == 2) != (other == 2)).sum())} differ")


if __name__ == "__main__":
    main()
