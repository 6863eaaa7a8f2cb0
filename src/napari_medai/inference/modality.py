"""Does the image fit the model's modality?  Checked before any work, from the intensities.

A CT model reads Hounsfield units, and a chest CT in HU always holds negative values
(air -1000, lung about -850, fat about -100).  An image without a single negative voxel is
MR, or CT saved without its rescale to HU: a CT model would run and quietly find nothing.
An MR model has the opposite problem: no MR scanner writes values near -1000, so such an
image is CT in HU, and an MR denoiser would treat its air as signal.

Only these two clear cases are refused.  Models whose card says ``modality: "any"`` (MONAI
bundles that name no modality, TorchScript files) are never checked.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..io.heuristics import CT_AIR_HU


def check_modality(card, arr: np.ndarray) -> None:
    """Raise ``ModelError`` when ``arr`` plainly is not the modality ``card`` was made for."""
    modality = getattr(card, "modality", "any")
    if modality not in ("CT", "MR"):
        return
    lo = float(np.min(arr))  # one pass; the maximum is read only for a refusal's message
    if modality == "CT" and lo >= 0:
        raise ModelError(
            f"model '{card.name}' reads CT in Hounsfield units, but no voxel of this image is below 0 "
            f"(its values run from {lo:g} to {float(np.max(arr)):g}); CT in HU has air at -1000 and fat below 0. "
            "It looks like MR, or a CT saved without its rescale to HU: choose a model made for this image"
        )
    if modality == "MR" and lo <= CT_AIR_HU:
        raise ModelError(
            f"model '{card.name}' is made for MR, but this image holds values down to {lo:g}, "
            "which only CT in Hounsfield units has (air is -1000 HU): choose a CT model"
        )
