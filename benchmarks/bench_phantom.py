"""Phantom generation and low-dose simulation timings.

    .venv/bin/python benchmarks/bench_phantom.py [--repeats 1] [--skip-large]

Prints the time of ``make_chest_ct`` for a 256 x 256 x 128 volume (2.5 x 0.8 x 0.8 mm) and
a 512 x 512 x 200 volume (1.5 x 0.7 x 0.7 mm), then of ``simulate_low_dose`` for one
512 x 512 slice, against the baseline of a 256 x 256 slice in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from napari_medai.phantoms import make_chest_ct, simulate_low_dose

CASES = [
    ("256x256x128", (128, 256, 256), (2.5, 0.8, 0.8)),
    ("512x512x200", (200, 512, 512), (1.5, 0.7, 0.7)),
]


def timed(fn, repeats):
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=1, help="best of N runs")
    ap.add_argument("--seed", type=int, default=9200)
    ap.add_argument("--skip-large", action="store_true", help="only the 256 x 256 x 128 case")
    args = ap.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), "
          f"numpy {np.__version__}; best of {args.repeats}")
    print(f"{'volume (x, y, z)':<18}{'spacing z,y,x mm':<20}{'seconds':>9}{'Mvoxel/s':>10}{'nodules':>9}")
    for name, shape, spacing in CASES[:1] if args.skip_large else CASES:
        seconds, ph = timed(lambda: make_chest_ct(args.seed, shape=shape, spacing=spacing), args.repeats)
        rate = np.prod(shape) / seconds / 1e6
        print(f"{name:<18}{str(spacing):<20}{seconds:>9.2f}{rate:>10.1f}{len(ph.nodules):>9}")

    print("\nsimulate_low_dose, one slice (photons 1e5, default views and filter):")
    ph = make_chest_ct(args.seed, shape=(1, 512, 512), spacing=(2.5, 0.7, 0.7), n_nodules=0)
    slice512 = ph.hu[0]
    slice256 = slice512[::2, ::2]
    for label, img, sp in (("256x256 (baseline)", slice256, 1.4), ("512x512", slice512, 0.7)):
        seconds, _ = timed(lambda: simulate_low_dose(img, 1e5, seed=0, spacing=sp), max(args.repeats, 3))
        print(f"  {label:<20}{seconds:>7.2f} s")


if __name__ == "__main__":
    main()
