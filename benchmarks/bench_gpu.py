"""The CUDA path, checked against the CPU path in the same run: every shipped model, and training.

Nothing here is CUDA-specific code: the API and the trainers pick the GPU themselves
(``device="auto"``).  This script runs each of them once on the CPU in fp32 (the baseline,
with every CPU thread) and on CUDA in fp32, in AMP (float16 autocast, the "auto" choice on a
GPU) and in bf16, and prints how long each took, the GPU memory it peaked at, and how far the
GPU result is from the CPU's:

  segmentation  held-out phantom 9000 and the real lung1 CT: Dice of each class against the
                truth, and between the GPU and CPU label maps; a 512x512x300 phantom: time
  detection     lung1: rank of the true nodule, and whether the top findings are the same
                (centres within 1 voxel, scores within 0.02)
  denoising     a low-dose phantom CT stack and a Colin27 MR slab at 5 % Rician noise: PSNR of
                the GPU output against the CPU output (identical outputs: inf)
  training      seconds per iteration of the shipped segmentation network's training
                configuration (stage 4) and of the CT denoiser's, on CUDA and on the CPU

Usage:  python benchmarks/bench_gpu.py [--quick] [--json FILE]
Without a GPU it runs the CPU baseline alone and says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIG_SHAPE, BIG_SPACING = (300, 512, 512), (1.25, 0.7, 0.7)


def _gpu():
    import torch

    return torch.cuda.is_available()


def timed(fn, device):
    """(result, seconds, peak GPU MB or None on the CPU) of one call; the GPU is synchronised before the clock stops."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    peak = round(torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else None
    return out, dt, peak


def runs(gpu: bool):
    """(device, precision) pairs: the CPU baseline first."""
    return [("cpu", "fp32")] + ([("cuda", "fp32"), ("cuda", "amp"), ("cuda", "bf16")] if gpu else [])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return float(2 * np.logical_and(a, b).sum() / s) if s else 1.0


def check_segmentation(gpu: bool, quick: bool) -> list[dict]:
    from napari_medai.api import segment
    from napari_medai.inference import InferenceSettings
    from napari_medai.io import read_volume
    from napari_medai.training.phantom_dataset import phantom_for
    from napari_medai.training.seg_data import chest_targets

    ph = phantom_for(9000, max_shape=(48, 256, 256) if quick else None)
    ct = read_volume(ROOT / "sample_data" / "lung1_ct.nii.gz")
    nodule = read_volume(ROOT / "sample_data" / "lung1_nodule_mask.nii.gz").data > 0
    cases = [("phantom 9000", ph.hu, ph.spacing, chest_targets(ph.labels), (1, 2)),
             ("lung1", np.asarray(ct.data), ct.spacing, nodule.astype(np.uint8) * 2, (2,))]
    rows = []
    for name, vol, spacing, truth, classes in cases:
        base = None
        for device, precision in runs(gpu):
            settings = InferenceSettings(device=device, precision=precision)
            if device == "cuda":  # first CUDA call pays for kernel selection: warm up on a crop
                segment(vol[:32, :128, :128], spacing, settings=settings)
            res, dt, peak = timed(lambda: segment(vol, spacing, settings=settings), device)
            labels = res.labels
            base = labels if base is None else base
            row = {"case": name, "device": device, "precision": precision, "seconds": round(dt, 2),
                   "gpu_peak_mb": peak, **{f"dice_truth_{c}": round(dice(labels == c, truth == c), 4)
                                                   for c in classes},
                   **{f"dice_vs_cpu_{c}": round(dice(labels == c, base == c), 4) for c in classes}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def check_big_volume(gpu: bool) -> list[dict]:
    from napari_medai.api import segment
    from napari_medai.inference import InferenceSettings
    from napari_medai.phantoms import make_chest_ct

    hu = make_chest_ct(77, shape=BIG_SHAPE, spacing=BIG_SPACING, n_nodules=3).hu
    rows = []
    for device, precision in [("cpu", "fp32")] + ([("cuda", "fp32"), ("cuda", "amp")] if gpu else []):
        settings = InferenceSettings(device=device, precision=precision)
        _, dt, peak = timed(lambda: segment(hu, BIG_SPACING, settings=settings), device)
        row = {"case": "512x512x300", "device": device, "precision": precision, "seconds": round(dt, 2),
               "gpu_peak_mb": peak}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def check_detection(gpu: bool) -> list[dict]:
    from bench_detection import real_rank  # the detection benchmark's own lung1 check

    from napari_medai.inference import InferenceSettings

    rows, base = [], None
    for device, precision in runs(gpu):
        settings = InferenceSettings(device=device, precision=precision)
        r, _, peak = timed(lambda: real_rank("lung-nodule-detection", settings), device)
        top = [(np.array(f.center_voxel), f.score) for f in r["findings"][:10]]
        base = top if base is None else base
        same = sum(1 for (c, s), (c0, s0) in zip(top, base) if np.abs(c - c0).max() <= 1 and abs(s - s0) <= 0.02)
        row = {"case": "lung1 detection", "device": device, "precision": precision, "seconds": round(r["seconds"], 2),
               "gpu_peak_mb": peak, "findings": r["n_findings"], "true_nodule_rank": r["rank"],
               "top10_same_as_cpu": f"{same}/{min(len(top), len(base))}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def check_denoising(gpu: bool) -> list[dict]:
    from napari_medai.api import denoise
    from napari_medai.phantoms import make_chest_ct, simulate_low_dose
    from napari_medai.training.denoising_data import colin27_path, load_mr_axial, rician

    ph = make_chest_ct(9001, shape=(8, 512, 512), spacing=(5.0, 0.7, 0.7))
    low = np.stack([simulate_low_dose(np.asarray(s, np.float32), 1e4, seed=9001 + i, spacing=(0.7, 0.7))
                    for i, s in enumerate(ph.hu)])
    mr = rician(load_mr_axial(colin27_path())[90:106], 0.05, np.random.default_rng(0))  # as bench_denoising
    rows = []
    for name, vol, spacing, modality in (("CT low dose", low, (5.0, 0.7, 0.7), "CT"),
                                         ("MR 5 %", mr, (1.0, 1.0, 1.0), "MR")):
        base = None
        for device, precision in runs(gpu):
            settings = {"device": device, "precision": precision}
            out, dt, peak = timed(lambda: denoise(vol, spacing, modality=modality, settings=settings), device)
            out = np.asarray(out, np.float32)
            base = out if base is None else base
            rng = float(base.max() - base.min())
            mse = float(np.mean((out - base) ** 2))
            psnr = float("inf") if mse == 0 else 10 * np.log10(rng**2 / mse)
            row = {"case": f"denoise {name}", "device": device, "precision": precision, "seconds": round(dt, 2),
                   "gpu_peak_mb": peak, "psnr_vs_cpu_db": round(psnr, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def check_training(gpu: bool, quick: bool) -> list[dict]:
    """Seconds per iteration of the shipped trainings' configurations (few iterations)."""
    import torch

    from napari_medai.training.denoising import train_denoising
    from napari_medai.training.denoising_data import MRSource, mr_batch
    from napari_medai.training.phantom_dataset import write_phantom_case
    from napari_medai.training.segmentation import SegTrainConfig, train_segmentation

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seed in (1100, 1101):
            write_phantom_case(seed, tmp / "data", n_nodules=8)
        slices = MRSource([np.random.default_rng(0).uniform(0.2, 1.0, (5, 128, 128)).astype(np.float32)],
                          [(0, z) for z in range(1, 4)])
        for device in ["cpu"] + (["cuda"] if gpu else []):
            iters = steps = 4 if device == "cpu" or quick else 40
            stamps = []
            # stage 4's configuration (scripts/train_models.sh), without the validation pass
            cfg = SegTrainConfig(data=str(tmp / "data"), out=str(tmp / f"seg-{device}"), label_map="chest",
                                 epochs=1, iters_per_epoch=iters, class_ratios=(1, 1, 4), balance_components=(2,),
                                 lr=1e-3, val_cases=0, threads=torch.get_num_threads(), device=device)
            summary = train_segmentation(cfg, log=lambda *_: None,
                                         progress=lambda *_: stamps.append(time.perf_counter()))
            per_iter = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
            row = {"case": "train segmentation (stage 4 config, batch 2 of 48x96x96)", "device": device,
                   "ran_on": summary["device"], "bf16": summary["bf16"], "seconds_per_iteration": round(per_iter, 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            t = time.perf_counter()
            card = train_denoising("MR", tmp / f"den-{device}", steps=steps, warmup_steps=0, batch=8, patch=96, seed=0,
                            data=(slices, mr_batch), threads=torch.get_num_threads(), device=device,
                            log=lambda *_: None)
            row = {"case": "train denoising (GAN, batch 8 of 96x96)", "device": device,
                   "ran_on": card["training"]["device"],
                   "seconds_per_iteration": round((time.perf_counter() - t) / steps, 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small crops and few iterations (a smoke run)")
    ap.add_argument("--json", help="also write every row to this file")
    ap.add_argument("--only", nargs="+", choices=["segmentation", "big", "detection", "denoising", "training"])
    args = ap.parse_args(argv)

    import torch

    gpu = _gpu()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          + (f"GPU {torch.cuda.get_device_name(0)} (capability {torch.cuda.get_device_capability(0)}, "
             f"bf16 {torch.cuda.is_bf16_supported()})" if gpu else "no GPU: CPU baseline only"), flush=True)
    checks = {"segmentation": lambda: check_segmentation(gpu, args.quick),
              "big": lambda: [] if args.quick else check_big_volume(gpu),
              "detection": lambda: check_detection(gpu), "denoising": lambda: check_denoising(gpu),
              "training": lambda: check_training(gpu, args.quick)}
    rows, failed = [], []
    for name in args.only or checks:
        print(f"== {name}", flush=True)
        try:  # one failing check must not hide the others' figures
            rows += checks[name]()
        except Exception:
            import traceback

            traceback.print_exc()
            failed.append(name)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
