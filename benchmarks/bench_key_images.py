"""Key-image benchmark: what *Save report…* in the screening widget costs on the Qt thread.

The baseline is how the widget saved a report until 2026-11-27: it drew and PNG-encoded each
finding's key image when the user pressed *Save report…*, on the Qt thread
(``write_key_images``).  Now the job draws and encodes them off the Qt thread
(``key_image_pngs``) and saving only writes the bytes (``save_key_images``).  On the real
lung1 CT with the built-in detector's findings at its operating point (and the same findings
repeated up to ``--findings``, the report's maximum of 20 by default), this prints both times
and whether the files are byte for byte the same.

    .venv/bin/python benchmarks/bench_key_images.py               # ~1 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LUNG1 = ROOT / "src" / "napari_medai" / "sample_data" / "lung1_ct.nii.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--findings", type=int, nargs="+", default=[8, 20],
                        help="numbers of key images to time (the lung1 findings repeated as needed)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per figure")
    args = parser.parse_args()

    from napari_medai import detect
    from napari_medai.inference.precision import cpu_has_native_bf16
    from napari_medai.io import read_volume
    from napari_medai.models.registry import get_card
    from napari_medai.postprocess.key_images import key_image_pngs, save_key_images, write_key_images
    from napari_medai.screening import KEY_IMAGE_FOV_MM

    threshold = get_card("lung-nodule-detection").extra["operating_point"]["score_threshold"]
    volume = read_volume(LUNG1)
    findings = detect(volume.data, volume.spacing, score_threshold=threshold)
    print(f"lung1 {volume.data.shape} at {tuple(round(s, 3) for s in volume.spacing)} mm; "
          f"{len(findings)} findings at score >= {threshold}; field {KEY_IMAGE_FOV_MM} mm; "
          f"{os.cpu_count()} CPUs, native bf16: {cpu_has_native_bf16()}; best of {args.repeats}")
    print("| key images | baseline: drawn at save, on the Qt thread (s) | now: drawn in the job (s) "
          "| now: saving on the Qt thread (ms) | files identical |")
    print("|---|---|---|---|---|")
    for n in args.findings:
        chosen = (findings * (n // max(len(findings), 1) + 1))[:n]
        before, job, save, same = [], [], [], True
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as folder:
                t = time.perf_counter()
                write_key_images(chosen, volume.data, volume.spacing, folder, folder="before", fov_mm=KEY_IMAGE_FOV_MM)
                before.append(time.perf_counter() - t)
                t = time.perf_counter()
                pngs = key_image_pngs(chosen, volume.data, volume.spacing, fov_mm=KEY_IMAGE_FOV_MM)
                job.append(time.perf_counter() - t)
                t = time.perf_counter()
                names = save_key_images(pngs, folder, folder="now")
                save.append(time.perf_counter() - t)
                same &= all((Path(folder) / name).read_bytes() == (Path(folder) / name.replace("now/", "before/", 1))
                            .read_bytes() for name in names)
        print(f"| {len(chosen)} | {min(before):.2f} | {min(job):.2f} | {1000 * min(save):.1f} | {same} |")


if __name__ == "__main__":
    main()
