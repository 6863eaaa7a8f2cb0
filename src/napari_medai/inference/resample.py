"""Resampling between the input grid and a model's voxel spacing.

Both directions keep the field of view (``align_corners=False``: the outer voxel faces stay
where they are), so going back with ``size=input shape`` lands exactly on the input grid,
voxel for voxel; for integer zoom factors the round trip of a smooth image is exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def working_shape(shape, spacing, target_spacing) -> tuple[int, ...]:
    """Grid size covering the same field of view at ``target_spacing`` (None = unchanged)."""
    if target_spacing is None:
        return tuple(int(n) for n in shape)
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target_spacing))


def resample(volume: torch.Tensor, shape, mode: str = "linear") -> torch.Tensor:
    """(C, *spatial) -> (C, *shape).  ``mode``: "linear" for images and probabilities,
    "nearest" for label maps.  Returns ``volume`` itself when the shape already matches."""
    shape = tuple(int(n) for n in shape)
    if tuple(volume.shape[1:]) == shape:
        return volume
    if mode == "nearest":
        # "nearest-exact" samples voxel centres symmetrically; plain "nearest" is shifted.
        out = F.interpolate(volume[None].float(), size=shape, mode="nearest-exact")
        return out[0].to(volume.dtype)
    linear = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    return F.interpolate(volume[None], size=shape, mode=linear, align_corners=False)[0]
