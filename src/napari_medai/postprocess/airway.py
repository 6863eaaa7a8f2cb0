"""Air outside the lung field: trachea, main bronchi and oesophagus that a lung class took.

The lung class is the lung field as radiologists outline it (``training.seg_data.chest_targets``):
parenchyma plus the vessels and airways it encloses, slice by slice.  On the real CT lung1 the
phantom-trained network labelled the trachea "lung" from the carina up (11.5 mL with the main
bronchi beside the hila): a real trachea does not look like a phantom's.  Two steps give
it back to background:

1. **Pieces of pure air.**  On every axial slice a piece of the lung field holds parenchyma,
   whose median is about -850 HU even in the thin apices.  A 2D piece of the lung class no
   larger than a trachea's cross-section whose median is below -950 HU is an airway lumen,
   unless it ends blind: such pieces joined slice to slice make a chain, and where the CT
   holds no air beside the footprint beyond one of its ends, the chain is the top of a lung
   (an emphysematous apex, whose bulla is pure air), not a tube.  It stays.
2. **The same lumen where it touches a lung.**  Lower down, the label of the trachea runs into
   the right lung's on the same slice, so it is no piece of its own.  From the lumens of
   step 1, the airway is followed slice by slice: an air blob inside the lung class that
   overlaps the lumen of the neighbouring slice, is no larger than a trachea, and is
   surrounded mostly by soft tissue (2-4 mm out; an airway inside the lung is surrounded by
   parenchyma) is the same lumen.  It goes, with the lung-labelled soft tissue around it
   within that reach (its wall).

On the phantoms, whose airways the network leaves out, this changed 9 voxels in 8 validation
scans (docs/segmentation.md, "The trachea on real CT").
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .components import bounding_box

MAX_MEDIAN_HU = -950.0  # parenchyma's median is ~ -850 HU; a lumen's ~ -1000 HU
MAX_AREA_MM2 = 800.0  # a 32 mm circle: wider than an adult trachea (up to ~25 mm)
TISSUE_HU = -500.0  # above this: wall, mediastinum, vessel; below: air or parenchyma
RING_MM = (2.0, 4.0)  # where a lumen's surroundings are read (beyond a tracheal wall's inner part)
MIN_TISSUE = 0.6  # share of that ring in soft tissue for a lumen outside the lung
# An airway is a tube: its air runs on beyond each end of what the network labelled, straight
# (trachea) or obliquely (a main bronchus, whose air lies a few mm aside on the next slice).  The
# top of a lung ends blind: above its last slice lie soft tissue or parenchyma, even where its
# top is a bulla of pure air.  Within 5 mm of an end's footprint, under a fifth of air: blind.
AIR_HU = -900.0  # lumen air, partial volume at its edge aside; parenchyma is ~ -850 HU
AIR_NEAR_MM = 5.0
BLIND_AIR_SHARE = 0.2
# A lung's top is a piece no larger than a trachea for a few mm only (a 40 mm dome passes 800 mm²
# 7 mm under its top; a half dome against the chest wall in 15 mm); a trachea runs on for
# 40 mm or more above the carina.
CAP_MM = 20.0


def drop_extrapulmonary_air(labels: np.ndarray, image: np.ndarray, spacing, organ: int = 1,
                            max_median_hu: float = MAX_MEDIAN_HU, max_area_mm2: float = MAX_AREA_MM2) -> np.ndarray:
    """``labels`` with the airway lumens outside the lung field (see the module) in class
    ``organ`` set to 0 (a new array).  ``image`` is the CT in HU on the labels' grid;
    ``spacing`` is (z, y, x) in mm."""
    labels = np.asarray(labels)
    out = np.array(labels, copy=True)
    max_pixels = max_area_mm2 / (float(spacing[1]) * float(spacing[2]))
    found = np.zeros(labels.shape, bool)  # step 1's pieces of pure air, every slice
    for z in np.flatnonzero((labels == organ).any(axis=(1, 2))):
        pieces, _ = ndimage.label(labels[z] == organ)
        sizes = np.bincount(pieces.ravel())[1:]
        small = np.flatnonzero(sizes <= max_pixels) + 1
        if small.size == 0:
            continue
        air = _air_pieces(image[z], pieces, small, max_median_hu)
        if air.size:
            found[z] = np.isin(pieces, air)
    caps = _blind_chains(found, labels, image, spacing, organ, max_pixels)  # the tops of lungs, not airways
    lumens = {int(z): found[z] & ~caps[z] for z in np.flatnonzero((found & ~caps).any(axis=(1, 2)))}
    for z, lumen in lumens.items():
        out[z][lumen] = 0
    _follow_lumens(out, image, spacing, organ, lumens, max_pixels, max_median_hu, caps)
    return out


def _blind_chains(found, labels, image, spacing, organ, max_pixels) -> np.ndarray:
    """The chains of ``found`` (its pieces joined slice to slice where they overlap) that are the
    top of a lung: no longer than CAP_MM, blind at one end (on the slice beyond, the CT holds under
    BLIND_AIR_SHARE of air within AIR_NEAR_MM of the end's footprint) and opening into the
    ``organ`` class at the other (beyond it, pieces of that class cover most of the footprint
    and are larger than any trachea, ``max_pixels``, or parenchyma).  An airway runs on: a
    bronchus obliquely, its air beside the footprint on the next slice; the trachea, which may
    end blind at a narrow glottis and open into a lung at the carina, runs longer than a lung's
    cap of small pieces."""
    caps = np.zeros(found.shape, bool)
    # labelled inside the pieces' bounding box: int32 labels of a whole 300 x 512 x 512 CT are 300 MB
    crop = bounding_box(found)
    if crop is None:
        return caps
    chains, _ = ndimage.label(found[crop])  # face neighbours: overlapping footprints on adjacent slices
    z0 = crop[0].start
    longest = max(1, int(round(CAP_MM / float(spacing[0]))))

    def footprint(z, k):  # chain k's pieces on slice z (of the whole CT) on the whole slice's grid
        whole = np.zeros(found.shape[1:], bool)
        whole[crop[1:]] = chains[z - z0] == k
        return whole

    for k, box in enumerate(ndimage.find_objects(chains), 1):
        if box is None or box[0].stop - box[0].start > longest:
            continue
        first, last = z0 + box[0].start, z0 + box[0].stop - 1
        ends = ((first, first - 1), (last, last + 1))
        for (end, beyond), (other, past) in (ends, ends[::-1]):
            if not (0 <= beyond < found.shape[0] and 0 <= past < found.shape[0]):
                continue
            if (_air_share_near(footprint(end, k), image[beyond], spacing[1:]) < BLIND_AIR_SHARE
                    and _opens_into(footprint(other, k), labels[past] == organ, image[past], max_pixels)):
                region = tuple(slice(c.start + b.start, c.start + b.stop) for c, b in zip(crop, box))
                caps[region] |= chains[box] == k
                break
    return caps


def _opens_into(footprint, organ2d, image2d, max_pixels) -> bool:
    """Whether the ``organ2d`` pieces under ``footprint`` cover most of it and are lung: more
    than ``max_pixels`` together, or parenchyma (median at or above MAX_MEDIAN_HU)."""
    if float(organ2d[footprint].mean()) < 0.5:
        return False
    pieces, _ = ndimage.label(organ2d)
    under = np.unique(pieces[footprint & organ2d])
    lung = np.isin(pieces, under[under > 0])
    return int(lung.sum()) > max_pixels or float(np.median(image2d[lung])) >= MAX_MEDIAN_HU


def _air_share_near(footprint, image2d, pixel_mm) -> float:
    """The share of ``image2d`` below AIR_HU within AIR_NEAR_MM of ``footprint`` (itself included)."""
    reach = [AIR_NEAR_MM / float(mm) for mm in pixel_mm]
    where = np.nonzero(footprint)
    box = tuple(slice(max(0, int(i.min() - r - 1)), int(i.max() + r + 2)) for i, r in zip(where, reach))
    near = ndimage.distance_transform_edt(~footprint[box], sampling=pixel_mm) <= AIR_NEAR_MM
    return float((image2d[box][near] < AIR_HU).mean())


def _air_pieces(image2d, pieces, candidates, max_median_hu) -> np.ndarray:
    """The ``candidates`` among the labelled ``pieces`` whose median is below ``max_median_hu``.

    A median below the level needs at least half the piece's pixels below it, so pieces that
    fail that count (parenchyma, about -850 HU) are not sorted: ndimage.median over every piece
    of every slice took 2.2 s of a 512 x 512 x 300 CT's clean-up."""
    below = image2d < max_median_hu
    counts = np.bincount(pieces[below], minlength=int(pieces.max()) + 1)
    sizes = np.bincount(pieces.ravel(), minlength=len(counts))
    maybe = candidates[2 * counts[candidates] >= sizes[candidates]]
    if maybe.size == 0:
        return maybe
    inside = np.isin(pieces, maybe)
    medians = np.asarray(ndimage.median(image2d[inside], pieces[inside], maybe), dtype=float).reshape(-1)
    return maybe[medians < max_median_hu]


def _follow_lumens(out, image, spacing, organ, lumens, max_pixels, air_hu, caps) -> None:
    """Step 2 of the module, in place: from each slice's lumen to its neighbours' while an air
    blob of the lung class overlaps it and soft tissue surrounds that blob."""
    # Each find turns lung voxels into background, so the walk ends: a slice is visited again
    # only while it still gives up air of the lung class.
    pending = sorted(lumens)
    while pending:
        z = pending.pop()
        for nz in (z - 1, z + 1):
            if not 0 <= nz < out.shape[0]:
                continue
            # A slice may hold a lumen already (a speck from step 1); what is found adds to it.
            found = _continuing_lumen(out[nz], image[nz], spacing[1:], organ, lumens[z], max_pixels, air_hu,
                                      caps[nz])
            if found is not None:
                lumen, wall = found
                out[nz][lumen | (wall & (out[nz] == organ))] = 0
                lumens[nz] = lumens.get(nz, np.zeros_like(lumen)) | lumen
                pending.append(nz)


def _continuing_lumen(labels2d, image2d, pixel_mm, organ, neighbour, max_pixels, air_hu, cap):
    """The air blobs of ``organ`` on this slice that continue the lumen ``neighbour`` of the
    next slice, and their wall, or None.  A blob that holds part of a lung's top (``cap``,
    step 1's blind chains) is no lumen."""
    blobs, n = ndimage.label(ndimage.binary_opening((labels2d == organ) & (image2d < air_hu)))
    if n == 0:
        return None
    touching = np.unique(blobs[neighbour & (blobs > 0)])
    sizes = np.bincount(blobs.ravel())
    lumen = np.zeros(labels2d.shape, bool)
    for k in touching:
        if sizes[k] > max_pixels or (cap & (blobs == k)).any():
            continue
        me = blobs == k
        outside = ndimage.distance_transform_edt(~me, sampling=pixel_mm)
        ring = (outside > RING_MM[0]) & (outside <= RING_MM[1])
        if ring.any() and float((image2d[ring] > TISSUE_HU).mean()) >= MIN_TISSUE:
            lumen |= me
    if not lumen.any():
        return None
    near = ndimage.distance_transform_edt(~lumen, sampling=pixel_mm) <= RING_MM[1]
    return lumen, near & (image2d > TISSUE_HU)
