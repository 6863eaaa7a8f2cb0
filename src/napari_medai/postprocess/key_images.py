"""Key images for a report: each finding on its axial slice, in the lung window.

A reader checks every finding against the image before trusting its numbers, and a report
that only lists slice numbers sends them back to the viewer for each one.  A key image puts
two views side by side, both with square pixels in millimetres:

* the whole axial slice, with a ring around the finding and a box around the magnified field,
  so its place in the chest is seen at a glance;
* the magnified field (``fov_mm`` square around the centre) with the outline of the finding's
  mask on that slice (the voxels its size and volume were measured on) and a 10 mm bar.

Arrays follow ``io``'s convention (axial slices first, the patient's right on the left, anterior
at the top), so the images read as radiologists read CT and as the viewer shows the volume.
Numpy in, RGB uint8 out; ``key_image_pngs`` encodes them as PNG (imageio, which scikit-image
reads and writes with) and ``save_key_images`` writes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .findings import Finding, axial_slice

LUNG_WINDOW = (-1350.0, 150.0)  # HU: width 1500, level -600
RING = np.array([255, 200, 0], np.uint8)  # amber: visible on both lung and soft tissue
BOX = np.array([0, 190, 255], np.uint8)
BAR = np.array([255, 255, 255], np.uint8)
SCALE_BAR_MM = 10.0
GAP_PX = 4


def key_image(volume: np.ndarray, spacing, finding: Finding, *, window=LUNG_WINDOW, fov_mm: float = 50.0,
              height_px: int = 320) -> np.ndarray:
    """The key image of ``finding`` in ``volume`` (z, y, x) with voxel ``spacing`` (mm): an RGB
    uint8 array ``height_px`` high, the whole slice on the left and the magnified field on the right."""
    from scipy import ndimage

    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"key images need a 3D volume, got shape {volume.shape}")
    sy, sx = float(spacing[1]), float(spacing[2])
    z = int(np.clip(axial_slice(finding.center_voxel), 0, volume.shape[0] - 1))
    lo, hi = float(window[0]), float(window[1])
    image = volume[z].astype(np.float32)
    cy, cx = float(finding.center_voxel[1]), float(finding.center_voxel[2])

    # Whole slice: one output pixel covers the same millimetres along both axes.
    ny, nx = image.shape
    mm_per_px = ny * sy / height_px
    width_px = max(1, int(round(nx * sx / mm_per_px)))
    overview = _sample(image, sy, sx, 0.0, 0.0, mm_per_px, (height_px, width_px), order=1, cval=lo)
    overview = _grey(overview, lo, hi)
    py, px = _to_px(cy, sy, mm_per_px), _to_px(cx, sx, mm_per_px)
    radius = max(finding.diameter_mm / 2 + 4.0, 6.0) / mm_per_px
    _ring(overview, py, px, max(radius, 5.0), RING)
    half = fov_mm / 2 / mm_per_px
    _rectangle(overview, py - half, px - half, py + half, px + half, BOX)

    # Magnified field, centred on the finding; outside the scan reads as air.
    zoom_mm = fov_mm / height_px
    y0, x0 = (cy + 0.5) * sy - fov_mm / 2, (cx + 0.5) * sx - fov_mm / 2  # field corner in mm
    zoom = _grey(_sample(image, sy, sx, y0, x0, zoom_mm, (height_px, height_px), order=1, cval=lo), lo, hi)
    outline = _finding_outline(finding, z, image.shape)
    if outline is not None:
        inside = _sample(outline.astype(np.float32), sy, sx, y0, x0, zoom_mm, (height_px, height_px),
                         order=0, cval=0.0) > 0.5
        edge = inside & ~ndimage.binary_erosion(inside, iterations=2)
        zoom[edge] = RING
    bar = int(round(SCALE_BAR_MM / zoom_mm))
    zoom[height_px - 14:height_px - 10, 10:10 + bar] = BAR

    gap = np.full((height_px, GAP_PX, 3), 40, np.uint8)
    return np.concatenate([overview, gap, zoom], axis=1)


def key_image_pngs(findings, volume: np.ndarray, spacing, *, cancel=None, **kwargs) -> list[bytes]:
    """Each finding's key image (ranked order), encoded as PNG in memory.

    The screening widget renders them in its job, off the Qt thread, so that *Save report…*
    only writes bytes (drawing and encoding take about 0.1 s a finding).  ``cancel``: a
    :class:`~napari_medai.inference.cancel.CancelToken` checked between images."""
    import imageio.v3 as iio

    pngs = []
    for f in findings:
        if cancel is not None:
            cancel.raise_if_cancelled()
        pngs.append(iio.imwrite("<bytes>", key_image(volume, spacing, f, **kwargs), extension=".png"))
    return pngs


def save_key_images(pngs, out_dir, *, folder: str = "key_images") -> list[str]:
    """Write PNG-encoded key images (ranked order) as ``<out_dir>/<folder>/finding_NN.png``;
    returns their paths relative to ``out_dir`` (as the report links them).  Images of a report
    saved there before under the same name, beyond these, are removed: a folder beside a report
    shows that report's findings only."""
    from ..io.atomic import discard, replace_atomically

    target = Path(out_dir) / folder
    if target.is_dir():
        for old in target.glob("finding_*.png"):
            rank = old.stem.removeprefix("finding_")
            if rank.isdigit() and int(rank) > len(pngs):
                discard(old)  # inside a report's all_or_nothing block: with its renames
    if not pngs:
        return []
    target.mkdir(exist_ok=True)  # in ``out_dir``, which must exist: a report never makes up a folder path
    names = []
    for rank, png in enumerate(pngs, start=1):
        name = f"{folder}/finding_{rank:02d}.png"
        # whole or not at all: a full disk left a truncated PNG the report linked (an audit helper)
        replace_atomically(Path(out_dir) / name, lambda tmp, data=png: tmp.write_bytes(data), suffix=".png")
        names.append(name)
    return names


def write_key_images(findings, volume: np.ndarray, spacing, out_dir, *, folder: str = "key_images",
                     **kwargs) -> list[str]:
    """Render and save one key image per finding (``key_image_pngs`` then ``save_key_images``)."""
    return save_key_images(key_image_pngs(findings, volume, spacing, **kwargs), out_dir, folder=folder)


def _sample(image, sy, sx, y0_mm, x0_mm, step_mm, shape, order, cval):
    """``image`` (pixel centres at (i + 0.5) * spacing mm) sampled on a grid of ``shape`` pixels of
    ``step_mm`` whose corner is at (y0_mm, x0_mm)."""
    from scipy import ndimage

    ys = (y0_mm + (np.arange(shape[0]) + 0.5) * step_mm) / sy - 0.5
    xs = (x0_mm + (np.arange(shape[1]) + 0.5) * step_mm) / sx - 0.5
    grid = np.meshgrid(ys, xs, indexing="ij")
    return ndimage.map_coordinates(image, grid, order=order, mode="constant", cval=cval)


def _to_px(index: float, spacing: float, mm_per_px: float) -> float:
    return (index + 0.5) * spacing / mm_per_px - 0.5


def _grey(values, lo, hi) -> np.ndarray:
    g = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    return np.repeat((g * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=-1)


def _finding_outline(f: Finding, z: int, shape) -> np.ndarray | None:
    """The finding's mask on slice ``z`` on the whole slice's grid, or None when it has none there."""
    if f.mask is None:
        return None
    (z0, y0, x0), (z1, y1, x1) = f.bbox_voxel
    if not z0 <= z < z1:
        return None
    piece = np.asarray(f.mask[z - z0], bool)
    if not piece.any():
        return None
    full = np.zeros(shape, bool)
    full[y0:y1, x0:x1] = piece[: shape[0] - y0, : shape[1] - x0]
    return full


def _ring(rgb, cy, cx, radius, colour, width: float = 2.0) -> None:
    h, w = rgb.shape[:2]
    yy, xx = np.ogrid[:h, :w]
    d = np.hypot(yy - cy, xx - cx)
    rgb[(d >= radius) & (d < radius + width)] = colour


def _rectangle(rgb, y0, x0, y1, x1, colour) -> None:
    """A one-pixel rectangle outline, clipped to the image."""
    h, w = rgb.shape[:2]
    top, bottom, left, right = (int(round(v)) for v in (y0, y1, x0, x1))
    cols = slice(max(left, 0), min(right, w - 1) + 1)
    rows = slice(max(top, 0), min(bottom, h - 1) + 1)
    for y in (top, bottom):
        if 0 <= y < h:
            rgb[y, cols] = colour
    for x in (left, right):
        if 0 <= x < w:
            rgb[rows, x] = colour
