"""Lesion edges moved to the half-maximum contour of the image, at its own resolution: in a
label map (segmentation) and in the masks of findings (detection).

A network working on a coarser grid (2 x 1 x 1 mm for ``chest-ct-lung-nodule``) draws a
lesion's edge up to a voxel off once its probabilities are resampled to the scan: on the
validation phantoms the voxels it missed inside a nodule were mostly fully solid (median
+25 HU) and within 2 mm of its mask, while the voxels it added were mostly partial-volume
lung (median -500 to -700 HU).  The image itself says where the edge is.  Each lesion
component's edge is put where the intensity crosses ``level`` of the way from the host tissue
around it to the component's own core (0.5: the half-maximum contour, the edge an observer
would draw), but only within ``reach_mm`` of the network's edge, so the refinement can
correct the outline and cannot wander into a vessel or a second structure.

Voxels are added only from the host classes (a nodule grows into lung, never into the chest
wall the network called background), and voxels removed go to the first host class.  The
contrast sign is taken from the data, so dark lesions in a bright organ work the same way.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

_FULL = ndimage.generate_binary_structure(3, 3)
# The host tissue's intensity is read in a shell this far (mm) outside the lesion: beyond the
# partial-volume rim, close enough to be the same tissue.
SHELL_MM = (3.0, 6.0)
HALF_MAXIMUM = 0.5  # the level both fits use: the edge an observer would draw


def outline_kind(moved: int, voxels: int, unmoved: str = "network") -> str:
    """What a lesion of ``voxels`` voxels, ``moved`` of them on an edge the refinement moved, was
    outlined by: "half-maximum" (all), ``unmoved`` (none: the network's outline), "mixed"."""
    return unmoved if moved == 0 else "half-maximum" if moved == voxels else "mixed"


def refine_lesion_edges(labels: np.ndarray, image: np.ndarray, spacing, lesion: int, hosts=(),
                        reach_mm: float = 1.5, level: float = HALF_MAXIMUM,
                        only: np.ndarray | None = None, refined: np.ndarray | None = None) -> np.ndarray:
    """``labels`` with each ``lesion`` component's edge moved to the ``level`` contour between
    its core (median intensity) and its host (median intensity in a 3-6 mm shell of ``hosts``
    voxels), within ``reach_mm`` of the old edge.  Returns a new array.

    ``image`` must lie on the labels' grid (the scan itself); ``spacing`` is (z, y, x) in mm.
    A component with no host voxels around it, or no contrast to its host, is left as it is;
    with ``only`` (a boolean mask on the same grid), so is every component that holds none of
    its voxels.  ``refined`` (a boolean array on the same grid, written in place) gets True on
    the new footprint of each component whose edge was actually moved to the contour, so a
    caller can say which outline each lesion has (``components.lesion_outlines``).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if reach_mm <= 0:
        raise ValueError(f"reach_mm must be positive, got {reach_mm!r}")
    spacing = np.asarray(spacing, dtype=float)
    hosts = tuple(int(h) for h in hosts)
    out = np.array(labels, copy=True)
    found = ndimage.find_objects((labels == lesion).astype(np.uint8))
    if not found:
        return out
    # Work inside the lesions' bounding box, padded by each component's own window: the same
    # result as on the whole volume, without labelling a 512 x 512 x 300 grid for a few nodules.
    pad = [math.ceil(max(SHELL_MM[1], reach_mm) / s) + 1 for s in spacing]
    crop = tuple(slice(max(b.start - p, 0), b.stop + p) for b, p in zip(found[0], pad))
    out[crop] = _refine_in(out[crop], np.asarray(image[crop]), spacing, lesion, hosts, reach_mm, level, pad,
                           None if only is None else only[crop], None if refined is None else refined[crop])
    return out


def _refine_in(labels, image, spacing, lesion, hosts, reach_mm, level, pad, only=None, refined=None) -> np.ndarray:
    """``refine_lesion_edges`` on a crop that holds every lesion with its padding."""
    out = np.array(labels, copy=True)
    comps, _ = ndimage.label(labels == lesion, structure=_FULL)
    fill = hosts[0] if hosts else 0
    for k, box in enumerate(ndimage.find_objects(comps), start=1):
        if box is None or (only is not None and not only[box][comps[box] == k].any()):
            continue
        big = tuple(slice(max(b.start - p, 0), b.stop + p) for b, p in zip(box, pad))
        mine = comps[big] == k
        img = np.asarray(image[big], dtype=np.float32)
        host = np.isin(labels[big], hosts) if hosts else labels[big] == 0
        outside = ndimage.distance_transform_edt(~mine, sampling=spacing)
        shell = (outside > SHELL_MM[0]) & (outside <= SHELL_MM[1]) & host
        if not shell.any():
            continue
        core, around = float(np.median(img[mine])), float(np.median(img[shell]))
        if core == around:
            continue
        contour = around + level * (core - around)
        lesion_like = (img - contour) * np.sign(core - around) > 0
        grow = (outside > 0) & (outside <= reach_mm) & lesion_like & host
        inside = ndimage.distance_transform_edt(mine, sampling=spacing)
        shrink = mine & ~lesion_like & (inside <= reach_mm)
        region = out[big]  # a view: writes land in ``out``
        region[grow] = lesion
        region[shrink] = fill
        if refined is not None:  # a view too: the component as the contour drew it
            refined[big] |= (mine | grow) & ~shrink
    return out


def refine_findings(findings, image: np.ndarray, spacing, field: np.ndarray | None = None,
                    reach_mm: float = 1.0, level: float = HALF_MAXIMUM) -> list:
    """Findings with their masks refined by :func:`refine_lesion_edges` and re-measured.

    Each finding's mask (``Finding.mask`` inside ``bbox_voxel``) is the lesion, ``field`` (the
    organ field, e.g. the lungs) its host (everything when None); the bounding box, mask,
    diameters, volume and Lung-RADS size category follow the refined mask.  The centre and the
    score are the detector's and stay: refinement measures a finding, it does not move it.
    A refined finding's ``outline`` reads "half-maximum"; one with no lung around it or no
    contrast to it keeps its mask and its outline ("network"), and a finding of several pieces
    of which only some were refined reads "mixed".
    """
    from dataclasses import replace

    from .findings import mask_measurements

    spacing = np.asarray(spacing, dtype=float)
    shape = np.array(image.shape)
    pad = np.array([math.ceil((SHELL_MM[1] + reach_mm) / s) + 1 for s in spacing])
    out = []
    for f in findings:
        if f.mask is None or not f.mask.any():
            out.append(f)
            continue
        lo, hi = np.array(f.bbox_voxel[0]), np.array(f.bbox_voxel[1])
        a, b = np.maximum(lo - pad, 0), np.minimum(hi + pad, shape)
        region = tuple(slice(int(x), int(y)) for x, y in zip(a, b))
        mask = np.zeros(tuple(b - a), dtype=bool)
        mask[tuple(slice(int(x), int(y)) for x, y in zip(lo - a, hi - a))] = f.mask
        host = field[region] if field is not None else np.ones(mask.shape, dtype=bool)
        labels = np.where(mask, 2, np.where(host, 1, 0)).astype(np.uint8)
        moved = np.zeros(mask.shape, dtype=bool)
        refined = refine_lesion_edges(labels, image[region], spacing, 2, (1,), reach_mm, level, refined=moved) == 2
        if not refined.any():
            out.append(f)
            continue
        # a piece with no lung around it or no contrast to it keeps the network's outline
        outline = outline_kind(int((refined & moved).sum()), int(refined.sum()), f.outline)
        box = ndimage.find_objects(refined.astype(np.uint8))[0]
        tight = refined[box]  # the box shrinks to the mask even where no edge moved
        out.append(replace(
            f, bbox_voxel=[[int(a[k] + box[k].start) for k in range(3)], [int(a[k] + box[k].stop) for k in range(3)]],
            mask=tight, outline=outline, **mask_measurements(tight, spacing)))
    return out
