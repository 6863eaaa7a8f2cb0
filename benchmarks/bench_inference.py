"""Engine (run_model) against plain MONAI sliding_window_inference, same network, one run.

Volume: synthetic CT-like 512 x 512 x 300 (z, y, x = 300, 512, 512) at 1.25 x 0.7 x 0.7 mm,
smoothed noise in HU inside a body cylinder, air outside.  Network: MONAI UNet of the
spleen-bundle size (channels 16-256, strides 2, 2 residual units, 1 -> 2 channels), random
weights with a fixed seed.  roi 96^3, overlap 0.25, gaussian blending, sw_batch_size 4.

Stages, each in its own subprocess so that peak RSS figures are clean:
  plain        monai.inferers.sliding_window_inference, fp32 (timed: the call alone)
  engine_fp32  napari_medai.inference.run_model, precision fp32 (timed: the whole call:
               input checks, sliding window, softmax); card spacing = input spacing, so no
               resampling, and no intensity preprocessing
  engine_bf16  the same with bf16 autocast (only where the CPU has native bf16)

Usage:  python benchmarks/bench_inference.py            (full size; minutes on 2 cores)
        python benchmarks/bench_inference.py --quick    (64 x 160 x 160 smoke run)
        python benchmarks/bench_inference.py --threads 1 --repeats 2   (robust CPU-time ratios on a
                                                                        machine shared with other jobs)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FULL_SHAPE = (300, 512, 512)
QUICK_SHAPE = (64, 160, 160)
SPACING = (1.25, 0.7, 0.7)
ROI = (96, 96, 96)
SW_BATCH = 4
OVERLAP = 0.25
MODE = "gaussian"
UNET = {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2}
SEED = 0


def make_ct_volume(shape, seed=SEED) -> np.ndarray:
    """Smoothed noise in HU (soft tissue ~40 HU, sd ~150 HU) inside a cylinder, air outside."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(shape, dtype=np.float32)
    smooth = ndimage.gaussian_filter(noise, sigma=(2, 3, 3), output=np.float32)
    smooth *= 150.0 / smooth.std()
    smooth += 40.0
    _, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    outside = ((y - shape[1] / 2) / (0.45 * shape[1])) ** 2 + ((x - shape[2] / 2) / (0.48 * shape[2])) ** 2 > 1
    smooth[np.broadcast_to(outside, shape)] = -1000.0
    return smooth


def current_rss_gb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


def peak_rss_gb() -> float:
    """This process's own peak RSS.  VmHWM belongs to the address space exec made; ru_maxrss
    would start from the parent's peak at the fork (Linux keeps it across exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def build_network():
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(SEED)
    return UNet(spatial_dims=3, in_channels=1, out_channels=2, **UNET).eval()


def run_stage(stage: str, volume_path: str, out_dir: str, threads: int | None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)

    volume = np.load(volume_path)
    network = build_network()
    # One-time oneDNN set-up (per dtype) is not part of any timing.
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=stage.endswith("bf16")):
        network(torch.zeros(SW_BATCH, 1, *ROI))
    baseline = current_rss_gb()

    if stage == "plain":
        from monai.inferers import sliding_window_inference

        x = torch.from_numpy(volume)[None, None]
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            logits = sliding_window_inference(x, ROI, SW_BATCH, network, overlap=OVERLAP, mode=MODE,
                                              sw_device="cpu", device="cpu")
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        peak = peak_rss_gb()
        with torch.inference_mode():
            prob = torch.softmax(logits[0], dim=0).numpy()
        del logits
    else:
        from napari_medai.inference import InferenceSettings, run_model
        from napari_medai.models.card import ModelCard
        from napari_medai.models.loading import LoadedModel

        card = ModelCard(name="bench_unet", spacing=SPACING, roi_size=ROI, out_channels=2,
                         network={"name": "UNet", "kwargs": UNET}, output="softmax")
        settings = InferenceSettings(device="cpu", precision=stage.split("_")[1], sw_batch_size=SW_BATCH,
                                     overlap=OVERLAP, mode=MODE)
        reports = []
        start, cpu_start = time.perf_counter(), time.process_time()
        prob = run_model(LoadedModel(card, network), volume, SPACING, settings,
                         progress=lambda done, total: reports.append((done, total)))
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        peak = peak_rss_gb()
        assert reports[-1][0] == reports[-1][1], reports[-1]

    np.save(Path(out_dir) / f"{stage}_fg.npy", (prob[1] > prob[0]).astype(np.uint8))
    np.save(Path(out_dir) / f"{stage}_p1.npy", prob[1].astype(np.float16))
    return {"stage": stage, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_gb": peak,
            "baseline_rss_gb": baseline}


def child(stage: str, volume_path: str, out_dir: str, threads: int | None) -> dict:
    cmd = [sys.executable, __file__, "--stage", stage, "--volume", volume_path, "--out", out_dir]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small volume smoke run")
    parser.add_argument("--repeats", type=int, default=1, help="run plain/engine_fp32 this many times, keep the best")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per stage (default: torch's). With 1 thread, CPU seconds are "
                             "not inflated by OpenMP threads spinning while other jobs hold the cores")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--volume", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.volume, args.out, args.threads)))
        return

    import torch

    from napari_medai.inference import count_windows
    from napari_medai.inference.precision import cpu_has_native_bf16

    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    bf16 = cpu_has_native_bf16()
    print(f"volume (z, y, x) {shape} at {SPACING} mm, float32 HU; UNet {UNET} (1 -> 2 channels), seed {SEED}")
    print(f"roi {ROI}, overlap {OVERLAP}, mode {MODE}, sw_batch_size {SW_BATCH}, "
          f"windows {count_windows(shape, ROI, OVERLAP)}; torch {torch.__version__}, "
          f"{args.threads or torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, native bf16: {bf16}, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        volume_path = str(Path(tmp) / "volume.npy")
        start = time.perf_counter()
        np.save(volume_path, make_ct_volume(shape))
        print(f"synthetic volume built in {time.perf_counter() - start:.1f} s")

        stages = ["plain", "engine_fp32"] * max(1, args.repeats) + (["engine_bf16"] if bf16 else [])
        results: dict[str, dict] = {}
        for stage in stages:  # interleaved, so that load from other jobs hits both alike
            r = child(stage, volume_path, tmp, args.threads)
            print(f"  {stage:12s} wall {r['seconds']:6.1f} s  CPU {r['cpu_seconds']:6.1f} s  "
                  f"peak RSS {r['peak_rss_gb']:.2f} GB (before the run {r['baseline_rss_gb']:.2f} GB)  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
            best = results.setdefault(stage, dict(r))
            for key in ("seconds", "cpu_seconds", "peak_rss_gb"):
                best[key] = min(best[key], r[key])

        plain, fp32 = results["plain"], results["engine_fp32"]
        fg = {s: np.load(Path(tmp) / f"{s}_fg.npy") for s in results}
        p1 = {s: np.load(Path(tmp) / f"{s}_p1.npy").astype(np.float32) for s in results}
        # Other jobs on a shared machine stretch wall time; process CPU time (all threads)
        # is what the work itself costs, so both are reported.
        print("\nresults (best of repeats)")
        print("| stage | wall s | x plain | CPU s | x plain | peak RSS GB |")
        print("|---|---|---|---|---|---|")
        for s, r in results.items():
            print(f"| {s} | {r['seconds']:.1f} | {r['seconds'] / plain['seconds']:.2f} | {r['cpu_seconds']:.1f} | "
                  f"{r['cpu_seconds'] / plain['cpu_seconds']:.2f} | {r['peak_rss_gb']:.2f} |")
        print(f"engine_fp32 vs plain: foreground voxels agree {100 * (fg['engine_fp32'] == fg['plain']).mean():.4f} %, "
              f"max |p1 difference| {np.abs(p1['engine_fp32'] - p1['plain']).max():.4f} (float16 storage)")
        if "engine_bf16" in results:
            agree = (fg["engine_bf16"] == fg["engine_fp32"]).mean()
            print(f"engine_bf16 vs engine_fp32: argmax voxels agree {100 * agree:.3f} %, "
                  f"max |p1 difference| {np.abs(p1['engine_bf16'] - p1['engine_fp32']).max():.4f}")
        print(f"goals: engine fp32 <= 1.10 x plain: {fp32['seconds'] / plain['seconds']:.2f} (wall), "
              f"{fp32['cpu_seconds'] / plain['cpu_seconds']:.2f} (CPU); "
              f"peak RSS <= 3 GB: {max(r['peak_rss_gb'] for r in results.values()):.2f} GB")


if __name__ == "__main__":
    main()
