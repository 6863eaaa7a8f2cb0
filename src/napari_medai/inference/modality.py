"""Does the image fit the model's modality?  Checked before any work, from the intensities.

A CT model reads Hounsfield units, and a chest CT in HU always holds negative values
(air -1000, lung about -850, fat about -100).  An image without a single negative voxel is
MR, or CT saved without its rescale to HU: a CT model would run and quietly find nothing.
An MR model has the opposite problem: no MR scanner writes values near -1000, so such an
image is CT in HU, and an MR denoiser would treat its air as signal.  A CT in HU also spans
hundreds of HU (air to soft tissue, or at least the noise and texture of soft tissue): values
that span less than ``CT_MIN_HU_RANGE`` are a CT rescaled for deep learning (HU/1000) or a
normalised MR, which a CT model would wreck without a word.

HU also puts each tissue in its place, which a single negative value does not show (an MR whose
background a resampling or bias correction left at -3 has negatives too).  So, for a CT model:

* at most ``CT_MAX_OFF_SCALE_SHARE`` of the voxels may lie far below air (under ``CT_FLOOR_HU``: CT
  numbers stop at -1024), other than a padding value that scanners write outside the field of view
  (the image's minimum, or one of ``PADDING_HU``); a CT stored as HU x 10 (a wrong rescale slope)
  has its lungs at -8500;
* at most ``CT_MAX_OFF_SCALE_SHARE`` may lie above ``CT_CEILING_HU``: the densest bone is about
  2000-3000 HU, and metal, clipped at 3071 or on an extended scale higher, fills a few percent at most;
* at least ``CT_MIN_NEGATIVE_SHARE`` must lie clearly below 0, between ``CT_FLOOR_HU`` and
  ``CT_NEGATIVE_HU`` (air, lung, fat, or the noise of soft tissue: a crop inside soft tissue at
  40 +- 30 HU has 2 % of its voxels under -20), unless the image has values below 0 and at most
  ``CT_MAX_FAINT_SHARE`` just below it: a liver crop at 55 +- 20 HU or a contrast-enhanced
  mediastinum reaches only -20 to -40 in a few voxels, while an MR's background left at -3 fills a
  large share just below 0, and a CT saved without its rescale has nothing below 0 but its padding.
  Air itself is not required: a crop, or a bundle's abdomen CT, may hold none.

Padding is the image's minimum, one of ``PADDING_HU``, or any one value below ``CT_FLOOR_HU``
that holds more than ``PADDING_MIN_SHARE`` of the voxels (a resampling that overshoots below an
unlisted padding value moves the minimum off it).

Shares are counted on a regular subsample of at most ``SAMPLE_VOXELS`` voxels, so the check costs
5-30 ms on a 512 x 512 x 300 int16 CT on a 2-core CPU besides its minimum and maximum.

Only these clear cases are refused.  Models whose card says ``modality: "any"`` (MONAI
bundles that name no modality, TorchScript files) are never checked.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ModelError
from ..io.heuristics import CT_AIR_HU

# The narrowest value range (max - min) accepted as Hounsfield units: HU/1000 or a z-score spans a
# few units, while even a crop inside soft tissue spans well over 50 HU of noise and texture.
CT_MIN_HU_RANGE = 50.0
# CT numbers stop at -1024 (air); scanners write lower values only as padding outside the field of
# view (one value: the image's minimum, or one of these), and a resampled scan blurs a thin rim of it.
CT_FLOOR_HU = -1500.0
PADDING_HU = (-2000.0, -2048.0, -3000.0, -3024.0, -32767.0, -32768.0)
# Dense bone is about 2000 HU (enamel 3000); metal is clipped at 3071 or, on extended-scale
# scanners, goes higher, but fills a few percent of a scan at most.
CT_CEILING_HU = 4000.0
CT_MAX_OFF_SCALE_SHARE = 0.05
# Values clearly below 0 in HU (air, lung, fat, soft-tissue noise), of which a CT holds some.
CT_NEGATIVE_HU = -20.0
CT_MIN_NEGATIVE_SHARE = 0.001
# ... unless the image holds nothing that looks like an MR's background either: a soft-tissue crop (a
# liver at 55 +- 20 HU, a contrast-enhanced mediastinum) has a few voxels just below 0 and none far
# below; an MR's background fills a large share just below 0, and a CT saved without its rescale has
# nothing below 0 but its padding.
CT_MAX_FAINT_SHARE = 0.05
# A single value below CT_FLOOR_HU holding more than this share of the voxels is padding.
PADDING_MIN_SHARE = 0.01
SAMPLE_VOXELS = 1_000_000


def check_modality(card, arr: np.ndarray) -> None:
    """Raise ``ModelError`` when ``arr`` plainly is not the modality ``card`` was made for."""
    modality = getattr(card, "modality", "any")
    if modality not in ("CT", "MR"):
        return
    lo = float(np.min(arr))
    if modality == "CT":
        hi = float(np.max(arr))
        if lo >= 0:
            raise ModelError(
                f"model '{card.name}' reads CT in Hounsfield units, but no voxel of this image is below 0 "
                f"(its values run from {lo:g} to {hi:g}); CT in HU has air at -1000 and fat below 0. "
                "It looks like MR, or a CT saved without its rescale to HU: choose a model made for this image"
            )
        if hi - lo < CT_MIN_HU_RANGE:
            raise ModelError(
                f"model '{card.name}' reads CT in Hounsfield units, but this image's values run only from {lo:g} "
                f"to {hi:g}, which does not look like Hounsfield units (air -1000, soft tissue 0 to 100): "
                "it looks like a CT rescaled for deep learning (e.g. HU/1000) or a normalised MR; "
                "give the CT in HU, or choose a model made for this image"
            )
        _check_hounsfield_scale(card, arr, lo, hi)
    if modality == "MR" and lo <= CT_AIR_HU:
        raise ModelError(
            f"model '{card.name}' is made for MR, but this image holds values down to {lo:g}, "
            "which only CT in Hounsfield units has (air is -1000 HU): choose a CT model"
        )


def regular_sample(arr: np.ndarray, limit: int = SAMPLE_VOXELS) -> np.ndarray:
    """``arr`` itself when it has at most ``limit`` voxels, else every k-th voxel along each of its
    last three axes (a view: nothing is copied), with k chosen to keep about ``limit`` of them."""
    arr = np.asarray(arr)
    if arr.size <= limit:
        return arr
    axes = min(arr.ndim, 3)
    step = math.ceil((arr.size / limit) ** (1.0 / axes))
    return arr[(Ellipsis, *([slice(None, None, step)] * axes))]


def _check_hounsfield_scale(card, arr: np.ndarray, lo: float, hi: float) -> None:
    """Refuse a CT model an image whose values are not on the Hounsfield scale (module docstring)."""
    # one gather for the counts below; integers as float32 (exact for CT), floats as they are
    sample = regular_sample(arr)
    sample = np.ascontiguousarray(sample, dtype=np.float32 if np.issubdtype(sample.dtype, np.integer) else None)
    sample = sample.ravel()
    padding = (sample == lo) if lo < CT_FLOOR_HU else np.zeros(sample.shape, bool)
    for value in PADDING_HU:
        padding |= sample == value
    deep = sample[(sample < CT_FLOOR_HU) & ~padding]
    if deep.size:  # a padding value not in the list: one value filling a share of the scan (a resampling
        # that overshoots below it by a voxel made the minimum another value, and the whole field "HU x 10")
        values, counts = np.unique(deep, return_counts=True)
        for value in values[counts > PADDING_MIN_SHARE * sample.size]:
            padding |= sample == value
    kept = sample[~padding]
    voxels = max(kept.size, 1)
    below = np.count_nonzero(kept < CT_FLOOR_HU) / voxels
    above = np.count_nonzero(kept > CT_CEILING_HU) / voxels
    negative = np.count_nonzero((kept >= CT_FLOOR_HU) & (kept <= CT_NEGATIVE_HU)) / voxels
    # just below 0 (an MR's background left at -3 by a resampling; CT water's noise reaches further)
    faint = np.count_nonzero((kept > CT_NEGATIVE_HU) & (kept <= 0)) / voxels
    start = (f"model '{card.name}' reads CT in Hounsfield units, but this image's values (from {lo:g} to {hi:g}) "
             "are not on that scale: ")
    end = "; give the CT in HU, or choose a model made for this image"
    if below > CT_MAX_OFF_SCALE_SHARE:
        raise ModelError(f"{start}{below:.0%} of its voxels lie below {CT_FLOOR_HU:g} and hold no padding value, "
                         "yet CT numbers stop at air (-1024 HU): it looks like a CT stored with a wrong rescale "
                         f"(e.g. HU x 10) or not a CT{end}")
    if above > CT_MAX_OFF_SCALE_SHARE:
        raise ModelError(f"{start}{above:.0%} of its voxels lie above {CT_CEILING_HU:g}, yet the densest bone is "
                         "about 2000 HU and metal fills a few percent of a scan at most: it looks like a CT stored "
                         f"with a wrong rescale (e.g. HU x 10) or not a CT{end}")
    if negative < CT_MIN_NEGATIVE_SHARE and (faint > CT_MAX_FAINT_SHARE or not np.any(kept < 0)):
        raise ModelError(f"{start}under {CT_MIN_NEGATIVE_SHARE:.1%} of its voxels lie between {CT_FLOOR_HU:g} and "
                         f"{CT_NEGATIVE_HU:g}, where HU puts air (-1000), lung (about -850), fat (about -100) and the "
                         "noise of soft tissue, and "
                         + (f"{faint:.0%} lie just below 0, as an MR's background does" if np.any(kept < 0) else
                            "nothing but padding lies below 0, as in a CT saved without its rescale to HU")
                         + end)


def check_file_modality(card, stated, arr: np.ndarray, source: str, said_by: str = "its header",
                        override: str | None = None) -> None:
    """The CLI's check: refuse model ``card`` of one modality on an image whose file says it is the
    other (``stated``: ``Volume.modality``, the DICOM Modality or the NIfTI description), unless
    ``override`` (an option such as "--modality") is there to correct a wrong header.

    The values speak first (``check_modality``: an MR with its background at -3 is refused for what
    its values are); the header decides only where the values could be either: an image that its
    file calls MR is not run through a CT model because its values happen to span the HU range.
    ``said_by`` says where ``stated`` came from ("its header", "--modality MR")."""
    from ..io.validate import check_volume

    modality = getattr(card, "modality", "any")
    if modality not in ("CT", "MR") or stated not in ("CT", "MR") or stated == modality:
        return
    check_volume(arr, need_3d=False)  # NaN or constant: their own message first
    check_modality(card, arr)
    if override:
        remedy = (f"if it is {_article(modality)} {modality} after all, pass {override} {modality}; otherwise choose "
                  f"a model made for {stated}")
    else:
        remedy = f"choose a model made for {stated}"
    raise ModelError(f"{source} is {_article(stated)} {stated} image by {said_by}, but model '{card.name}' is made "
                     f"for {modality}: {remedy}")


def check_stated_modality(stated, cards, arr, source: str, said_by: str = "its header") -> None:
    """``check_file_modality`` for each of ``cards`` on an image whose file says ``stated``:
    shared by medai segment/detect/screen, ``batch`` and the widgets.  A None card (one the
    widgets cannot read without loading the model) is skipped.  ``cards`` is iterated only when
    ``stated`` is CT or MR, so a lazy iterable reads no card for a file that says neither."""
    if stated not in ("CT", "MR"):
        return
    for card in cards:
        if card is not None:  # converted here: with no card to check, a lazy volume is not read
            check_file_modality(card, stated, np.asarray(arr), source, said_by)


def _article(modality: str) -> str:
    return "an" if modality == "MR" else "a"
