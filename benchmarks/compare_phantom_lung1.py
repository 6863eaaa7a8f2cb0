"""Phantom vs the real lung1 CT: HU statistics, noise, and a side-by-side figure.

    .venv/bin/python benchmarks/compare_phantom_lung1.py --lung1 /work/shared/data/lung1_ct.nii.gz \
        --figure docs/images/phantom_vs_lung1.png

The same threshold-based measurements are applied to both scans (the phantom's labels
are not used), so the table compares like with like:
* body: largest connected component above -500 HU, holes filled per slice;
* lung: inside the body, below -500 HU, closed with a 3 mm disk (keeps vessels), mean HU;
* vessel fraction: share of lung-region voxels above -500 HU (vessels, airway walls);
* fat (-150..-50 HU), soft tissue (0..100 HU), bone (> 300 HU): voxels inside the body
  eroded by 2 px in-plane (fewer partial-volume edges), mean and std;
* noise: median of the 7x7 local std in homogeneous soft tissue (eroded 4 px), and the
  lag-1 autocorrelation of the noise (detrended 25x25 patches).
Low-dose images come from simulate_low_dose at ``--photons`` on both scans.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from napari_medai.phantoms import make_chest_ct, simulate_low_dose


def load_lung1(path):
    from napari_medai.io import read_volume

    vol = read_volume(path)  # (z, y, x), anterior up, patient's right on the left
    return vol.data.astype(np.int16), vol.spacing


def body_mask(hu):
    above = hu > -500
    lab, n = ndimage.label(above)
    sizes = ndimage.sum(above, lab, range(1, n + 1))
    body = lab == (1 + int(np.argmax(sizes)))
    return np.stack([ndimage.binary_fill_holes(s) for s in body])


def disk(radius_px):
    r = int(np.ceil(radius_px))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy**2 + xx**2 <= radius_px**2)[None]


def measure(hu, spacing):
    hu = hu.astype(np.float32)
    body = body_mask(hu)
    inner = ndimage.binary_erosion(body, disk(2))
    lung_core = body & (hu < -500)
    lung_core = ndimage.binary_opening(lung_core, disk(2))
    lung = ndimage.binary_closing(lung_core, disk(3.0 / spacing[1])) & body
    stats = {"lung mean HU": float(hu[lung].mean()),
             "vessel fraction %": 100 * float((hu[lung] > -500).mean())}
    for name, lo, hi in (("fat", -150, -50), ("soft tissue", 0, 100), ("bone", 300, 4000)):
        m = inner & (hu > lo) & (hu < hi)
        if name != "bone":
            m = ndimage.binary_erosion(m, disk(1))
        stats[f"{name} mean HU"] = float(hu[m].mean())
        stats[f"{name} std HU"] = float(hu[m].std())
    soft = ndimage.binary_erosion(inner & (hu > -50) & (hu < 150), disk(4))
    mean = ndimage.uniform_filter(hu, (1, 7, 7))
    sq = ndimage.uniform_filter(hu * hu, (1, 7, 7))
    local = np.sqrt(np.maximum(sq - mean**2, 0))
    stats["noise (7x7 local std) HU"] = float(np.median(local[soft]))
    stats["noise lag-1 autocorrelation"] = noise_autocorrelation(hu, soft)
    return stats


def noise_autocorrelation(hu, soft, size=25):
    """Median lag-1 correlation of plane-detrended patches that lie in soft tissue."""
    coef = []
    yy, xx = np.mgrid[:size, :size]
    design = np.column_stack([yy.ravel(), xx.ravel(), np.ones(size * size)])
    full = ndimage.minimum_filter(soft, (1, size, size))
    for z in range(hu.shape[0]):
        ys, xs = np.nonzero(full[z, size // 2 : -size // 2 : size, size // 2 : -size // 2 : size])
        for y, x in zip(ys[:20], xs[:20]):
            y0, x0 = y * size, x * size
            p = hu[z, y0 : y0 + size, x0 : x0 + size].astype(float)
            if p.shape != (size, size):
                continue
            r = p.ravel() - design @ np.linalg.lstsq(design, p.ravel(), rcond=None)[0]
            r = r.reshape(size, size)
            coef.append(np.corrcoef(r[:, :-1].ravel(), r[:, 1:].ravel())[0, 1])
    return float(np.median(coef)) if coef else float("nan")


def window(img, level=-600, width=1500):
    return (np.clip((img - (level - width / 2)) / width, 0, 1) * 255).astype(np.uint8)


def views(hu, spacing, z, y, level, width, size=320):
    """Axial slice z and coronal row y (superior up), both square in mm, as uint8 tiles."""
    from PIL import Image

    axial = Image.fromarray(window(hu[z], level, width)).resize((size, size), Image.BILINEAR)
    cor = hu[::-1, y, :]
    height = max(1, int(round(size * cor.shape[0] * spacing[0] / (cor.shape[1] * spacing[2]))))
    coronal = Image.fromarray(window(cor, level, width)).resize((size, height), Image.BILINEAR)
    canvas = Image.new("L", (size, size), 0)
    canvas.paste(coronal, (0, (size - height) // 2))
    return np.asarray(axial), np.asarray(canvas)


WINDOWS = {"lung window": (-600, 1500), "soft-tissue window": (40, 400)}


def figure(rows, path, size=320):
    from PIL import Image, ImageDraw

    titles = ["axial, full dose", "axial, low dose", "coronal, full dose", "coronal, low dose"]
    pad = 22
    out = Image.new("L", (4 * size, len(rows) * (size + pad)), 0)
    draw = ImageDraw.Draw(out)
    for r, (name, tiles) in enumerate(rows):
        for c, tile in enumerate(tiles):
            out.paste(Image.fromarray(tile), (c * size, r * (size + pad) + pad))
            draw.text((c * size + 6, r * (size + pad) + 5), f"{name}: {titles[c]}", fill=255)
    out.save(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lung1", required=True, help="lung1_ct.nii.gz (dev-time reference, not shipped)")
    ap.add_argument("--seed", type=int, default=9100)
    ap.add_argument("--photons", type=float, default=2e4, help="low-dose photons per ray for both scans")
    ap.add_argument("--figure", default=None, help="write the side-by-side PNG here")
    args = ap.parse_args(argv)

    real, real_sp = load_lung1(args.lung1)
    t0 = time.perf_counter()
    ph = make_chest_ct(args.seed, shape=real.shape, spacing=real_sp, n_nodules=2, low_dose_photons=args.photons)
    t_phantom = time.perf_counter() - t0
    print(f"phantom seed {args.seed}: shape {real.shape}, spacing {tuple(round(s, 3) for s in real_sp)} mm, "
          f"{t_phantom:.1f} s (with low dose at {args.photons:.0e} photons/ray)")

    rows = [("phantom", ph.hu, ph.low_dose), ("lung1", real, None)]
    table = {}
    for name, hu, _ in rows:
        table[name] = measure(hu, real_sp)
    table["phantom low dose"] = measure(ph.low_dose, real_sp)
    print(f"\n| measure | {' | '.join(table)} |")
    print("|---|" + "---|" * len(table))
    for key in table["lung1"]:
        print(f"| {key} | " + " | ".join(f"{table[n][key]:.2f}" for n in table) + " |")

    if args.figure:
        z_ph = int(round(ph.nodules[0]["center_voxel"][0])) if ph.nodules else ph.hu.shape[0] // 2
        z_real = 33  # slice through lung1's nodule
        y_cor = real.shape[1] // 2
        t0 = time.perf_counter()
        real_low = simulate_low_dose(real, args.photons, seed=1, spacing=real_sp)
        print(f"\nlow-dose simulation of lung1 ({real.shape[0]} slices of {real.shape[1]}x{real.shape[2]}): "
              f"{time.perf_counter() - t0:.1f} s")
        tiles = []
        for win_name, (level, width) in WINDOWS.items():
            for name, full, low, z in (("phantom", ph.hu, ph.low_dose, z_ph), ("lung1", real, real_low, z_real)):
                ax_f, co_f = views(full, real_sp, z, y_cor, level, width)
                ax_l, co_l = views(low, real_sp, z, y_cor, level, width)
                tiles.append((f"{name}, {win_name}", [ax_f, ax_l, co_f, co_l]))
        figure(tiles, args.figure)
        print(f"figure written to {args.figure}")


if __name__ == "__main__":
    main()
