"""Cohort screening benchmark: ``medai batch`` against its baseline, a shell loop of ``medai screen``.

A researcher without ``medai batch`` runs ``medai screen`` once per scan: every run starts
Python, imports torch and MONAI and loads the models again.  ``medai batch`` loads them once
and screens the cases as dask tasks on a thread pool.  In one run this prints, on the same
cases (held-out phantoms 9000.. written as NIfTI, plus the real lung1 CT), the wall time of

1. the baseline: one ``medai screen`` process per case, one after the other;
2. ``medai batch`` with 1 worker (one process, models loaded once);
3. ``medai batch`` with 2 workers (two cases at once on the thread pool);

with each process's peak RSS (the baseline: its largest), and whether every case's findings.csv is identical across the three.

    .venv/bin/python benchmarks/bench_batch.py             # 4 phantoms + lung1 (~6 min on 2 cores)
    .venv/bin/python benchmarks/bench_batch.py --cases 2   # 2 phantoms + lung1
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LUNG1 = ROOT / "src" / "napari_medai" / "sample_data" / "lung1_ct.nii.gz"
WORK = Path("/tmp/bench_batch")
MEDAI = [sys.executable, "-m", "napari_medai.cli.main"]


def write_cases(n: int) -> Path:
    from napari_medai.io import write_volume
    from napari_medai.training.phantom_dataset import phantom_for

    folder = WORK / "cases"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for seed in range(9000, 9000 + n):
        ph = phantom_for(seed)
        write_volume(ph.hu.astype("int16"), folder / f"phantom{seed}.nii.gz", affine=ph.affine, modality="CT")
    shutil.copy(LUNG1, folder / "lung1.nii.gz")
    return folder


# A small launcher forks the command and reports its ru_maxrss.  Read by this (large) process
# directly, a child's ru_maxrss starts from this process's peak at the fork: Linux keeps it
# across exec, so the phantoms and torch held here were counted in every case's figure.
_LAUNCHER = ("import os, sys\n"
             "pid = os.fork()\n"
             "if pid == 0:\n"
             "    os.execvp(sys.argv[1], sys.argv[1:])\n"
             "_, status, usage = os.wait4(pid, 0)\n"
             "sys.stderr.write(f'\\nMEDAI_MAXRSS_KB {usage.ru_maxrss}\\n')\n"
             "sys.exit(os.waitstatus_to_exitcode(status))\n")


def run(command: list[str]) -> float:
    """Run ``command`` to its end; returns its own peak RSS in MB (from wait4 in a small launcher)."""
    child = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    lines = child.stderr.splitlines()
    peak = [line for line in lines if line.startswith("MEDAI_MAXRSS_KB ")]
    sys.stderr.write("\n".join(line for line in lines if not line.startswith("MEDAI_MAXRSS_KB ")))
    if child.returncode != 0 or not peak:
        raise SystemExit(f"{' '.join(command[3:5])} failed with exit code {child.returncode}")
    return int(peak[-1].split()[1]) / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=4, help="held-out phantoms (seeds 9000..), lung1 comes on top")
    args = ap.parse_args()
    import torch

    folder = write_cases(args.cases)
    cases = sorted(folder.iterdir())
    print(f"{len(cases)} cases ({args.cases} held-out phantoms + lung1); torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs; built-in models, default settings (the cards' test-time mirroring)", flush=True)
    outs = {name: WORK / name for name in ("loop", "batch1", "batch2")}
    for out in outs.values():
        shutil.rmtree(out, ignore_errors=True)
    times, peaks = {}, {}
    base_name = "baseline: medai screen per case"
    t = time.perf_counter()
    peaks[base_name] = max(run([*MEDAI, "screen", str(case), "--out-dir",
                                str(outs["loop"] / case.name.removesuffix(".nii.gz")), "--quiet"]) for case in cases)
    times[base_name] = time.perf_counter() - t
    for workers in (1, 2):
        name = f"medai batch, {workers} worker(s)"
        t = time.perf_counter()
        peaks[name] = run([*MEDAI, "batch", str(folder), "--out-dir", str(outs[f"batch{workers}"]),
                           "--workers", str(workers), "--quiet"])
        times[name] = time.perf_counter() - t
    base = times[base_name]
    for what, seconds in times.items():
        print(f"{what:<34} {seconds:7.1f} s  ({seconds / len(cases):5.1f} s a case, {base / seconds:4.2f}x the "
              f"baseline), peak RSS {peaks[what]:6.0f} MB")
    same = all((outs["loop"] / c.name.removesuffix(".nii.gz") / "findings.csv").read_text()
               == (outs[k] / c.name.removesuffix(".nii.gz") / "findings.csv").read_text()
               for c in cases for k in ("batch1", "batch2"))
    print(f"findings.csv identical in all three for every case: {same}")


if __name__ == "__main__":
    main()
