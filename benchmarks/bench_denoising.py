"""Denoising benchmark: our generators against tuned classical denoisers, PSNR / SSIM / time.

Sets (none of them seen in training):
  phantom  held-out chest phantoms (seeds 9001-9003; training used 101-104), full dose vs
           simulate_low_dose at --photons, 0.7 mm pixels, 512 x 512 slices
  phantom-truth  the same inputs scored against the noise-free phantom
  lung1    the real lung1 CT (sample_data) with simulated low dose at --photons
  mrN      Colin27 T1 axial slices 90-106 (training excluded 55-114) with Rician noise at N %
           of the 99th percentile (N = 3, 5, 8)
Metrics (MONAI PSNRMetric / SSIMMetric): CT in HU clipped to [-1000, 1000] (data range 2000 HU),
PSNR over the body mask, SSIM over the body's bounding box with outside-body pixels taken from
the reference; MR in units of the clean 99th percentile (data range 1), over the head mask.
Classical methods work on the same normalised images and have their main parameter tuned for
best mean PSNR on a tuning subset of each set (separate slices: phantom seed 9000, lung1 slice
10, Colin27 slices 60 and 64); the grid is extended while the best value sits at its edge.
Times are per slice on one CPU thread (torch.set_num_threads(1)); every classical method is
tuned on 256 x 256 crops (CT) and evaluated on the same whole slices as everything else (BM3D
takes ~20 s per 512 x 512 slice).  The methods run one after another, so a load that changes
during the run changes their times unevenly.

    python benchmarks/bench_denoising.py            # full run (~15 min on one core)
    python benchmarks/bench_denoising.py --quick    # smoke run: 1 slice per set, coarse grids
    python benchmarks/bench_denoising.py --sets lung1 --candidate runs/ct3-gan/ct-lowdose-denoising.json
                                                    # a new run's generator beside the shipped one
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VARIANTS_DIR = Path(__file__).resolve().parent / "denoising_variants"
CT_LO, CT_HI = -1000.0, 1000.0


# --------------------------------------------------------------------------- metrics
def quality(ref: np.ndarray, out: np.ndarray, mask: np.ndarray, data_range: float) -> tuple[float, float]:
    """(PSNR dB over ``mask``, SSIM over the mask's bounding box, outside-mask pixels from ``ref``)."""
    import torch
    from monai.metrics import PSNRMetric, SSIMMetric

    r, o = torch.from_numpy(ref[mask].astype(np.float32)), torch.from_numpy(out[mask].astype(np.float32))
    psnr = float(PSNRMetric(max_val=data_range, reduction="mean")(o[None, None], r[None, None]).mean())
    ys, xs = np.nonzero(mask)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    filled = np.where(mask, out, ref)[box].astype(np.float32)
    ssim = SSIMMetric(spatial_dims=2, data_range=data_range)(
        torch.from_numpy(filled)[None, None], torch.from_numpy(ref[box].astype(np.float32))[None, None])
    return psnr, float(ssim.mean())


def largest_filled(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    biggest = 1 + int(np.argmax(ndimage.sum(mask, labels, range(1, n + 1))))
    return ndimage.binary_fill_holes(labels == biggest)


# --------------------------------------------------------------------------- data sets
class DataSet:
    """Normalised (clean, noisy, mask) slices for evaluation and tuning, plus unit conversions."""

    def __init__(self, name, kind, clean, noisy, masks, tune_clean, tune_noisy, tune_masks, note,
                 stack=None, index=None):
        self.name, self.kind, self.note = name, kind, note
        self.clean, self.noisy, self.masks = clean, noisy, masks
        self.tune_clean, self.tune_noisy, self.tune_masks = tune_clean, tune_noisy, tune_masks
        # What our (2D / 2.5D) models see: a noisy slab and where the eval slices sit in it.
        self.stack = np.stack(noisy) if stack is None else stack
        self.index = list(range(len(noisy))) if index is None else list(index)

    def to_units(self, img):  # for metrics: HU clipped to the window for CT
        if self.kind == "CT":
            return np.clip(img * (CT_HI - CT_LO) + CT_LO, CT_LO, CT_HI)
        return img

    @property
    def data_range(self):
        return CT_HI - CT_LO if self.kind == "CT" else 1.0

    def score(self, clean, out, mask):
        return quality(self.to_units(clean), self.to_units(out), mask, self.data_range)


def _ct_norm(hu):
    return (np.asarray(hu, np.float32) - CT_LO) / (CT_HI - CT_LO)


def _body(hu):
    return largest_filled(np.asarray(hu) > -500)


def _center_crop(img, mask, size=256):
    ys, xs = np.nonzero(mask)
    cy = int(np.clip(ys.mean(), size // 2, img.shape[0] - size // 2))
    cx = int(np.clip(xs.mean(), size // 2, img.shape[1] - size // 2))
    return (slice(cy - size // 2, cy + size // 2), slice(cx - size // 2, cx + size // 2))


def phantom_set(photons, quick, truth=False):
    """Full dose (with the phantom's routine noise) as reference, or with ``truth`` the noise-free
    phantom: the same low-dose inputs scored against what the anatomy really is."""
    from napari_medai.phantoms import make_chest_ct, simulate_low_dose

    def pair(seed, z):
        ph = make_chest_ct(seed, shape=(8, 512, 512), spacing=(5.0, 0.7, 0.7))
        hu = np.asarray(ph.hu[z])
        low = simulate_low_dose(hu.astype(np.float32), photons, seed=seed, spacing=(0.7, 0.7))
        ref = np.asarray(ph.noise_free[z]) if truth else hu
        return _ct_norm(ref), _ct_norm(low), _body(hu)

    evals = [pair(s, 4) for s in ((9001,) if quick else (9001, 9002, 9003))]
    tc, tn, tm = pair(9000, 4)
    crop = _center_crop(tc, tm)
    return DataSet("phantom-truth" if truth else "phantom", "CT", *map(list, zip(*evals)),
                   [tc[crop]], [tn[crop]], [tm[crop]],
                   f"phantom seeds 9001-9003 slice 4, {photons:.0e} photons/ray, reference: "
                   + ("noise-free phantom" if truth else "full dose (routine-dose noise)"))


def lung1_set(photons, quick):
    from napari_medai.io import read_volume
    from napari_medai.phantoms import simulate_low_dose

    vol = read_volume(ROOT / "sample_data" / "lung1_ct.nii.gz")
    mm = vol.spacing[1:]

    def pair(z):
        hu = vol.data[z].astype(np.float32)
        low = simulate_low_dose(hu, photons, seed=z, spacing=mm)
        return _ct_norm(hu), _ct_norm(low), _body(hu)

    evals = [pair(z) for z in ((28,) if quick else (20, 28, 36))]
    tc, tn, tm = pair(10)
    crop = _center_crop(tc, tm)
    return DataSet("lung1", "CT", *map(list, zip(*evals)), [tc[crop]], [tn[crop]], [tm[crop]],
                   f"lung1 slices 20/28/36 ({vol.data.shape[1]}x{vol.data.shape[2]}, {mm[0]:.2f} mm), "
                   f"{photons:.0e} photons/ray")


MR_SLAB_REACH = 8


def mr_set(level, quick):
    from napari_medai.training.denoising_data import colin27_path, load_mr_axial, rician

    colin = load_mr_axial(colin27_path())
    rng = np.random.default_rng(int(level * 1000))
    # The 2.5D and 3D models need the neighbours: noise the whole slab around the eval slices,
    # MR_SLAB_REACH slices beyond them (a 3D model sees that far; the slab stays inside the band
    # 55-115 that no MR model trains on).
    eval_z = [98] if quick else list(range(90, 107, 4))
    first, last = eval_z[0] - MR_SLAB_REACH, eval_z[-1] + MR_SLAB_REACH
    slab = rician(colin[first : last + 1], level, rng)

    def tune_pair(z):
        clean = colin[z]
        return clean, rician(clean, level, rng), largest_filled(clean > 0.1)

    tunes = [tune_pair(z) for z in (60, 64)]
    index = [z - first for z in eval_z]
    return DataSet(f"mr{round(level * 100)}", "MR", [colin[z] for z in eval_z], [slab[i] for i in index],
                   [largest_filled(colin[z] > 0.1) for z in eval_z], *map(list, zip(*tunes)),
                   f"Colin27 axial slices {eval_z[0]}-{eval_z[-1]} step 4 (slab {first}-{last} noised "
                   f"for the models' neighbours), Rician {level:.0%} of p99", stack=slab, index=index)


# --------------------------------------------------------------------------- methods
def classical_methods():
    import bm3d
    from scipy import ndimage
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

    # name -> (function(img, param), grid factors, parameter is relative to the noise estimate)
    return {
        "gaussian": (lambda im, p: ndimage.gaussian_filter(im, p), np.geomspace(0.5, 3.0, 9), False, "sigma px"),
        "tv": (lambda im, p: denoise_tv_chambolle(im, weight=p), np.geomspace(0.25, 8, 11), True, "weight"),
        "nlm": (lambda im, p: denoise_nl_means(im, h=p, patch_size=7, patch_distance=11, fast_mode=True),
                np.geomspace(0.25, 4, 9), True, "h"),
        "bm3d": (lambda im, p: bm3d.bm3d(im, sigma_psd=p).astype(np.float32), np.geomspace(0.25, 4, 9), True,
                 "sigma_psd"),
    }


def tune(ds, fn, factors, relative, quick):
    """Parameter with the best mean tuning PSNR; the grid grows while the best is on its edge."""
    from skimage.restoration import estimate_sigma

    scale = float(np.mean([estimate_sigma(n) for n in ds.tune_noisy])) if relative else 1.0
    grid = list(factors[:: 4 if quick else 1] * scale)
    # the step of the first grid, kept: taken from each extension, which runs downward after a step
    # down, it turned into its inverse and the next round re-scored values already tried
    ratio = grid[1] / grid[0] if len(grid) > 1 else 2.0
    scores = {}
    for _ in range(6):
        for p in grid:
            if p not in scores:
                scores[p] = np.mean([ds.score(c, fn(n, p), m)[0]
                                     for c, n, m in zip(ds.tune_clean, ds.tune_noisy, ds.tune_masks)])
        best = max(scores, key=scores.get)
        if best == min(scores):
            grid = [best / ratio, best / ratio**2]
        elif best == max(scores):
            grid = [best * ratio, best * ratio**2]
        else:
            return best
    print(f"    note: the best value {best:.4g} is still at the edge of the values tried "
          f"({min(scores):.4g}-{max(scores):.4g})")
    return best


def evaluate(ds, fn, whole_stack=False):
    """Mean PSNR, SSIM over the eval slices and seconds per slice.  ``whole_stack``: ``fn`` gets
    the noisy slab at once (our models) and the time is divided by the slab's slice count."""
    t0 = time.perf_counter()
    if whole_stack:
        out = fn(ds.stack)
        seconds = (time.perf_counter() - t0) / len(ds.stack)
        outs = [out[i] for i in ds.index]
    else:
        outs = [fn(n) for n in ds.noisy]
        seconds = (time.perf_counter() - t0) / len(ds.noisy)
    scores = np.array([ds.score(c, o, m) for c, o, m in zip(ds.clean, outs, ds.masks)])
    return float(scores[:, 0].mean()), float(scores[:, 1].mean()), seconds


def model_runner(ds, spec, precision):
    """Our model on a normalised slab: back to the model's units (HU / raw MR), denoise, normalise."""
    from napari_medai.denoising import denoise, load_denoiser

    loaded = load_denoiser(spec)

    def run(img):
        units = img * (CT_HI - CT_LO) + CT_LO if ds.kind == "CT" else img * 100.0
        out = denoise(units, model=loaded, settings={"precision": precision, "device": "cpu"})
        return _ct_norm(out) if ds.kind == "CT" else out / 100.0

    run(ds.stack[:8])  # warm-up (first-call allocations); a 3D model takes no single slice
    return loaded, run


def model_specs(kind, candidates=()):
    """(label, spec) of the shipped model, of its built-in variants (``extra.variant_of``), of the
    benchmark's own variants (benchmarks/denoising_variants: with/without the adversarial term) and
    of any ``candidates`` (model card paths, e.g. a new training run's) made for ``kind``."""
    from napari_medai.denoising import DEFAULT_MODELS
    from napari_medai.models import get_card, load_card

    from napari_medai.models import list_models

    shipped = get_card(DEFAULT_MODELS[kind])
    specs = [(shipped, "shipped")]
    # built-in variants of the default (e.g. ct-lowdose-denoising-fullres), then the benchmark's own
    specs += [(card, f"built-in {card.name}") for card in list_models("denoising")
              if card.extra.get("variant_of") == shipped.name]
    for path in sorted(VARIANTS_DIR.glob(f"{DEFAULT_MODELS[kind]}-*.json")):
        card = load_card(path)
        specs.append((card, f"variant {card.name}"))
    specs += [(card, f"candidate {Path(path).parent.name}") for path in candidates
              if (card := load_card(path)).modality == kind]
    out = []
    for card, role in specs:
        gan = "GAN" if card.training.get("adversarial") else "no GAN"
        out.append((f"model {gan} ({role})", card))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 slice per set, coarse tuning grids")
    parser.add_argument("--sets", default="phantom,phantom-truth,lung1,mr3,mr5,mr8")
    parser.add_argument("--photons", type=float, default=2e4, help="low-dose CT photons per ray (2e4: ~28 HU added)")
    parser.add_argument("--precision", default="auto", help="precision of our models (auto = bf16 where native)")
    parser.add_argument("--skip", default="", help="comma-separated classical methods to leave out")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--candidate", action="append", default=[], metavar="CARD.json",
                        help="also score this model card (e.g. runs/NAME/ct-lowdose-denoising.json) in the same run")
    args = parser.parse_args(argv)
    # a candidate is scored on the sets of its own modality only: one that none of the chosen sets
    # can score would be left out without a word
    from napari_medai.models import load_card

    kinds = {"MR" if name.startswith("mr") else "CT" for name in args.sets.split(",")}
    for path in args.candidate:
        modality = load_card(path).modality
        if modality not in kinds:
            parser.error(f"--candidate {path} is a {modality} model, and no set in --sets {args.sets} is {modality}")

    import torch

    from napari_medai.inference.precision import select_precision

    torch.set_num_threads(1)
    print(f"settings: photons={args.photons:.0e} precision={args.precision} "
          f"(resolved: {select_precision('cpu', args.precision)}) threads=1 quick={args.quick}")
    builders = {"phantom": lambda: phantom_set(args.photons, args.quick),
                "phantom-truth": lambda: phantom_set(args.photons, args.quick, truth=True),
                "lung1": lambda: lung1_set(args.photons, args.quick),
                "mr3": lambda: mr_set(0.03, args.quick), "mr5": lambda: mr_set(0.05, args.quick),
                "mr8": lambda: mr_set(0.08, args.quick)}
    methods = {k: v for k, v in classical_methods().items() if k not in args.skip.split(",")}
    results = {}
    for set_name in args.sets.split(","):
        ds = builders[set_name]()
        shape = ds.noisy[0].shape
        print(f"\n== {set_name}: {ds.note}; {len(ds.noisy)} eval slice(s) of {shape[0]}x{shape[1]}")
        rows = {"noisy input": (*evaluate(ds, lambda n: n)[:2], 0.0, "")}
        for name, (fn, factors, relative, pname) in methods.items():
            best = tune(ds, fn, factors, relative, args.quick)
            psnr, ssim, sec = evaluate(ds, lambda n, fn=fn, best=best: fn(n, best))
            unit = " HU" if ds.kind == "CT" and name != "gaussian" else ""
            shown = best * (CT_HI - CT_LO) if unit else best
            rows[name] = (psnr, ssim, sec, f"{pname}={shown:.4g}{unit}")
        for label, card in model_specs(ds.kind, args.candidate):
            _, run = model_runner(ds, card, args.precision)
            rows[label] = (*evaluate(ds, run, whole_stack=True), card.name)
        width = max(26, *map(len, rows))
        print(f"{'method':{width}s} {'PSNR dB':>8s} {'SSIM':>7s} {'s/slice':>8s}  parameter")
        for name, (psnr, ssim, sec, param) in rows.items():
            print(f"{name:{width}s} {psnr:8.2f} {ssim:7.4f} {sec:8.3f}  {param}")
        classical = {k: v for k, v in rows.items() if k in methods}
        shipped = next(k for k in rows if k.endswith("(shipped)"))
        if classical:
            best_name = max(classical, key=lambda k: classical[k][0])
            ours, best = rows[shipped], classical[best_name]
            speed = rows["nlm"][2] / ours[2] if "nlm" in rows else float("nan")
            print(f"goal check ({shipped} vs best classical = {best_name}): "
                  f"dPSNR {ours[0] - best[0]:+.2f} dB (goal >= +1), dSSIM {ours[1] - best[1]:+.4f} (goal > 0), "
                  f"{speed:.1f}x faster than NLM (goal >= 5)")
        else:
            best_name = None
        results[set_name] = {"note": ds.note, "rows": rows, "best_classical": best_name}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
