"""Does the image fit the model's modality?  Checked before any work, from the intensities.

A CT model reads Hounsfield units, and a chest CT in HU always holds negative values
(air -1000, lung about -850, fat about -100).  An image without a single negative voxel is
MR, or CT saved without its rescale to HU: a CT model would run and quietly find nothing.
An MR model has the opposite problem: no MR scanner writes values near -1000, so such an
image is CT in HU, and an MR denoiser would treat its air as signal.  A CT in HU also spans
hundreds of HU (air to soft tissue, or at least the noise and texture of soft tissue): values
that span less than ``CT_MIN_HU_RANGE`` are a CT rescaled for deep learning (HU/1000) or a
normalised MR, which a CT model would wreck without a word.

Only these clear cases are refused.  Models whose card says ``modality: "any"`` (MONAI
bundles that name no modality, TorchScript files) are never checked.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..io.heuristics import CT_AIR_HU

# The narrowest value range (max - min) accepted as Hounsfield units: HU/1000 or a z-score spans a
# few units, while even a crop inside soft tissue spans well over 50 HU of noise and texture.
CT_MIN_HU_RANGE = 50.0


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
    if modality == "MR" and lo <= CT_AIR_HU:
        raise ModelError(
            f"model '{card.name}' is made for MR, but this image holds values down to {lo:g}, "
            "which only CT in Hounsfield units has (air is -1000 HU): choose a CT model"
        )
