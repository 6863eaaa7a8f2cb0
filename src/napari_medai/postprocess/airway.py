"""Air outside the lung field: trachea, main bronchi and oesophagus that a lung class took.

The lung class is the lung field as radiologists outline it (``training.seg_data.chest_targets``):
parenchyma plus the vessels and airways it encloses, slice by slice.  On the real CT lung1 the
phantom-trained network labelled the trachea "lung" from the carina up (11.5 mL with the main
bronchi beside the hila): a real trachea does not look like a phantom's.  Two steps give
it back to background:

1. **Pieces of pure air.**  On every axial slice a piece of the lung field holds parenchyma,
   whose median is about -850 HU even in the thin apices.  A 2D piece of the lung class no
   larger than a trachea's cross-section whose median is below -950 HU is an airway lumen,
   unless it widens into a lung along the body axis: an emphysematous apex (a bulla, itself
   below -950 HU) is the top of a dome: 10 mm further down, the lung covers the piece and the
   5 mm around it.  A trachea or oesophagus 10 mm on is still a tube in the mediastinum.
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

MAX_MEDIAN_HU = -950.0  # parenchyma's median is ~ -850 HU; a lumen's ~ -1000 HU
MAX_AREA_MM2 = 800.0  # a 32 mm circle: wider than an adult trachea (up to ~25 mm)
TISSUE_HU = -500.0  # above this: wall, mediastinum, vessel; below: air or parenchyma
RING_MM = (2.0, 4.0)  # where a lumen's surroundings are read (beyond a tracheal wall's inner part)
MIN_TISSUE = 0.6  # share of that ring in soft tissue for a lumen outside the lung
# An air piece that lies, with 5 mm around it, at least 70 % in the lung class 10 mm up or down is
# the tip of a lung (an apex, bullous or not), not a tube: a dome widens under its top, while a
# trachea's 5 mm margin there is its wall and the mediastinum (about 60 % of the disc for a
# 16 mm trachea).  10 mm: two slices of a 5 mm scan.
WIDENING_MM = 10.0
WIDENING_MARGIN_MM = 5.0
WIDENING_SHARE = 0.7


def drop_extrapulmonary_air(labels: np.ndarray, image: np.ndarray, spacing, organ: int = 1,
                            max_median_hu: float = MAX_MEDIAN_HU, max_area_mm2: float = MAX_AREA_MM2) -> np.ndarray:
    """``labels`` with the airway lumens outside the lung field (see the module) in class
    ``organ`` set to 0 (a new array).  ``image`` is the CT in HU on the labels' grid;
    ``spacing`` is (z, y, x) in mm."""
    labels = np.asarray(labels)
    out = np.array(labels, copy=True)
    max_pixels = max_area_mm2 / (float(spacing[1]) * float(spacing[2]))
    lumens: dict[int, np.ndarray] = {}
    for z in np.flatnonzero((labels == organ).any(axis=(1, 2))):
        pieces, _ = ndimage.label(labels[z] == organ)
        sizes = np.bincount(pieces.ravel())[1:]
        small = np.flatnonzero(sizes <= max_pixels) + 1
        if small.size == 0:
            continue
        air = _air_pieces(image[z], pieces, small, max_median_hu)
        air = air[[not _widens_into_lung(labels, z, pieces == k, organ, spacing) for k in air]]
        if air.size:
            lumens[int(z)] = np.isin(pieces, air)
            out[z][lumens[int(z)]] = 0
    _follow_lumens(out, image, spacing, organ, lumens, max_pixels, max_median_hu)
    return out


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


def _widens_into_lung(labels, z, piece, organ, spacing) -> bool:
    """Whether the 2D ``piece`` of slice ``z``, with a WIDENING_MARGIN_MM margin around it, lies
    at least WIDENING_SHARE in the ``organ`` class WIDENING_MM up or down: the tip of a lung,
    with the lung spreading out under it (see the module).  A trachea or bronchus there is
    mostly wall and mediastinum around its own label, even where that label has run into a
    lung's beside it."""
    step = max(1, int(round(WIDENING_MM / float(spacing[0]))))
    reach = [WIDENING_MARGIN_MM / float(mm) for mm in spacing[1:]]
    lo = [max(0, int(i.min() - r - 1)) for i, r in zip(np.nonzero(piece), reach)]
    hi = [int(i.max() + r + 2) for i, r in zip(np.nonzero(piece), reach)]
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))  # the piece and its margin: small
    around = ndimage.distance_transform_edt(~piece[box], sampling=spacing[1:]) <= WIDENING_MARGIN_MM
    for nz in (z - step, z + step):
        if 0 <= nz < labels.shape[0] and float((labels[nz][box][around] == organ).mean()) >= WIDENING_SHARE:
            return True
    return False


def _follow_lumens(out, image, spacing, organ, lumens, max_pixels, air_hu) -> None:
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
            found = _continuing_lumen(out[nz], image[nz], spacing[1:], organ, lumens[z], max_pixels, air_hu)
            if found is not None:
                lumen, wall = found
                out[nz][lumen | (wall & (out[nz] == organ))] = 0
                lumens[nz] = lumens.get(nz, np.zeros_like(lumen)) | lumen
                pending.append(nz)


def _continuing_lumen(labels2d, image2d, pixel_mm, organ, neighbour, max_pixels, air_hu):
    """The air blobs of ``organ`` on this slice that continue the lumen ``neighbour`` of the
    next slice, and their wall, or None."""
    blobs, n = ndimage.label(ndimage.binary_opening((labels2d == organ) & (image2d < air_hu)))
    if n == 0:
        return None
    touching = np.unique(blobs[neighbour & (blobs > 0)])
    sizes = np.bincount(blobs.ravel())
    lumen = np.zeros(labels2d.shape, bool)
    for k in touching:
        if sizes[k] > max_pixels:
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
