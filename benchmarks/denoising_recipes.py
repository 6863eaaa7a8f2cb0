"""Short MR denoiser trainings side by side: which training recipe to spend a long run on.

Each recipe trains the MR generator (2.5D, 16-32-64-128) from scratch for ``--steps``
steps of L1 + SSIM (no adversarial term), then denoises Colin27 tuning slices 58-66 (step 2;
inside the band kept out of training, outside the benchmark's test slab 90-110) at 3, 5 and 8 %
Rician noise.  Baselines in the same run: the noisy input, the earlier recipe ("before",
shipped 2026-11-24) and BM3D at sigma_psd = 1.3 x the noise level (about what
bench_denoising.py's tuning chose on Colin27: 1.31, 1.27 and 1.24).

Recipes (training/denoising_data.mr_batch and mr_source keywords):
  before    noise 2-10 % drawn uniformly, unweighted L1, slices drawn uniformly (MNI152 + Colin27)
  weighted  noise 1-10 % log-uniform, L1 weighted by 0.05 / noise level
  colin     weighted + 80 % of patches from Colin27 (the shipped recipe since 2026-11-26)
  wide      colin with channels 32-64-128-256 (4x the generator's arithmetic)
  fullres   colin with a first level at full resolution (strides 1-2-2, as the CT variant
            ct-lowdose-denoising-fullres; the default generator and the recipes above: 2-2-2)

    python benchmarks/denoising_recipes.py                  # 3 recipes x 1000 steps, ~8 min on 2 cores
    python benchmarks/denoising_recipes.py --recipes colin,wide   # the wider generator beside it
    python benchmarks/denoising_recipes.py --recipes colin,fullres   # a first level at full resolution
    python benchmarks/denoising_recipes.py --recipes before,colin --steps 200
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

LEVELS = (0.03, 0.05, 0.08)
EVAL_Z = (58, 60, 62, 64, 66)
REACH = 1  # the 2.5D model's neighbours on each side: the slab is noised this far around EVAL_Z
BM3D_FACTOR = 1.3
HALF = {"strides": [2, 2, 2]}  # the generator before 2026-11-28: no level at full resolution
WIDE = {"channels": [32, 64, 128, 256], "strides": [2, 2, 2]}


def recipes() -> dict:
    """name -> (mr_source keywords, mr_batch keywords, generator keywords)."""
    before = ({"colin_share": None}, {"noise_range": (0.02, 0.10), "log_uniform": False, "reference_sigma": None}, HALF)
    weighted = ({"colin_share": None}, {}, HALF)
    colin = ({}, {}, HALF)
    return {"before": before, "weighted": weighted, "colin": colin, "wide": ({}, {}, WIDE),
            "fullres": ({}, {}, {"strides": [1, 2, 2]})}


def eval_slabs() -> list[tuple[float, np.ndarray, np.ndarray, list[np.ndarray]]]:
    """(level, clean slab, noisy slab, head masks of EVAL_Z) on Colin27, one fixed noise draw per level."""
    from bench_denoising import largest_filled

    from napari_medai.training.denoising_data import colin27_path, load_mr_axial, rician

    colin = load_mr_axial(colin27_path())
    first, last = EVAL_Z[0] - REACH, EVAL_Z[-1] + REACH
    out = []
    for level in LEVELS:
        rng = np.random.default_rng(int(level * 1000) + 7)
        noisy = rician(colin[first : last + 1], level, rng)
        out.append((level, colin[first : last + 1], noisy, [largest_filled(colin[z] > 0.1) for z in EVAL_Z]))
    return out


def score(slabs, denoise_slab, per_slice=None) -> dict:
    """Mean PSNR / SSIM (bench_denoising.quality, data range 1) per level."""
    from bench_denoising import quality

    index = [z - EVAL_Z[0] + REACH for z in EVAL_Z]  # positions of the scored slices in the slab
    res = {}
    for level, clean, noisy, masks in slabs:
        if per_slice is not None:
            outs = [per_slice(noisy[i], level) for i in index]
        else:
            full = denoise_slab(noisy)
            outs = [full[i] for i in index]
        q = np.array([quality(clean[i], o, m, 1.0) for i, o, m in zip(index, outs, masks)])
        res[f"mr{round(level * 100)}"] = (float(q[:, 0].mean()), float(q[:, 1].mean()))
    return res


def train_recipe(name, spec, steps, threads, out_dir) -> tuple[Path, float]:
    from napari_medai.training.denoising import train_denoising
    from napari_medai.training.denoising_data import mr_batch, mr_source

    source_kw, batch_kw, gen_kw = spec
    t0 = time.perf_counter()
    train_denoising("MR", out_dir, steps=steps, warmup_steps=steps, adversarial=False, threads=threads,
                    data=(mr_source("train", **source_kw), functools.partial(mr_batch, **batch_kw)),
                    generator_kwargs=gen_kw or None, log=lambda *_: None)
    return out_dir / "mr-denoising.json", time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default="before,weighted,colin")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import bm3d
    import torch

    from napari_medai.denoising import denoise

    torch.set_num_threads(args.threads)
    slabs = eval_slabs()
    print(f"settings: {args.steps} steps of 8 patches 96x96 per recipe, L1 + 0.5 SSIM, seed 0, {args.threads} threads; "
          f"Colin27 slices {EVAL_Z[0]}-{EVAL_Z[-1]} step 2, Rician {', '.join(f'{x:.0%}' for x in LEVELS)} of p99; "
          f"BM3D sigma_psd = {BM3D_FACTOR} x level", flush=True)
    rows = [("noisy input", score(slabs, lambda n: n), "")]
    rows.append(("bm3d", score(slabs, None, lambda img, level: bm3d.bm3d(img, sigma_psd=BM3D_FACTOR * level)), ""))
    table = recipes()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.recipes.split(","):
            card, seconds = train_recipe(name, table[name], args.steps, args.threads, Path(tmp) / name)
            res = score(slabs, lambda n, c=card: denoise(n * 100.0, model=str(c), settings={"device": "cpu"}) / 100.0)
            rows.append((f"recipe {name}", res, f"{seconds:.0f} s training"))
            print(f"{name}: " + ", ".join(f"{k} {v[0]:.2f} dB" for k, v in res.items()), flush=True)
    print("\n| method | " + " | ".join(f"{k} PSNR / SSIM" for k in rows[0][1]) + " | note |")
    print("|---|" + "---|" * (len(rows[0][1]) + 1))
    for label, res, note in rows:
        print(f"| {label} | " + " | ".join(f"{p:.2f} / {s:.4f}" for p, s in res.values()) + f" | {note} |")


if __name__ == "__main__":
    main()
