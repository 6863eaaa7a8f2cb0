"""Intensity preprocessing declared by a model card, applied with MONAI transforms.

Every kind is a linear map ``y = (x - a_min) / (a_max - a_min) * (b_max - b_min) + b_min``
(optionally clipped), so an image-valued output (denoising) can be mapped back to the
input's units with :meth:`IntensityMap.invert`:

* ``ct_window``: a fixed HU window (``ScaleIntensityRange``; ``clip`` defaults to true);
* ``percentile``: the window between two percentiles of this image (MR; the same as
  ``ScaleIntensityRangePercentiles``, but the percentiles are kept for the inverse);
* ``zscore``: subtract the image mean, divide by its std (``NormalizeIntensity``);
* ``none``: unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class IntensityMap:
    kind: str
    a_min: float = 0.0
    a_max: float = 1.0
    b_min: float = 0.0
    b_max: float = 1.0
    clip: bool = False

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """A new float32 tensor; ``image`` is never modified."""
        from monai.transforms import NormalizeIntensity, ScaleIntensityRange

        if self.kind == "none":
            return image
        if self.kind == "zscore":
            out = NormalizeIntensity(subtrahend=self.a_min, divisor=self.a_max - self.a_min)(image)
        else:
            out = ScaleIntensityRange(self.a_min, self.a_max, self.b_min, self.b_max, clip=self.clip)(image)
        return out.as_tensor() if hasattr(out, "as_tensor") else torch.as_tensor(out)

    def invert(self, values: torch.Tensor) -> torch.Tensor:
        """Map network-space values back to input units, in place."""
        if self.kind == "none":
            return values
        scale = (self.a_max - self.a_min) / (self.b_max - self.b_min)
        return values.sub_(self.b_min).mul_(scale).add_(self.a_min)


def fit_intensity(spec: dict, image: torch.Tensor) -> IntensityMap:
    """The map for this image (percentiles and z-score statistics depend on it)."""
    kind = spec.get("kind", "none")
    if kind == "none":
        return IntensityMap("none")
    if kind == "ct_window":
        return IntensityMap("ct_window", float(spec["a_min"]), float(spec["a_max"]),
                            float(spec["b_min"]), float(spec["b_max"]), bool(spec.get("clip", True)))
    if kind == "percentile":
        # numpy: torch.quantile refuses tensors above 16 M voxels (a CT has ~80 M).
        flat = image.detach().cpu().numpy().ravel()
        # A regular subsample of <= 8 M voxels gives the same percentiles to well within a
        # grey level and keeps a 512 x 512 x 300 CT at a fraction of a second.
        flat = flat[:: max(1, flat.size // 8_000_000)]
        lo, hi = np.percentile(flat, [float(spec["lower"]), float(spec["upper"])])
        if hi <= lo:  # e.g. an MR that is mostly background: fall back to the full range
            lo, hi = float(flat.min()), float(flat.max())
        return IntensityMap("percentile", float(lo), float(hi), float(spec.get("b_min", 0.0)),
                            float(spec.get("b_max", 1.0)), bool(spec.get("clip", False)))
    if kind == "zscore":
        mean = float(image.mean(dtype=torch.float64))
        std = float(image.std()) or 1.0
        return IntensityMap("zscore", mean, mean + std, 0.0, 1.0, False)
    raise ValueError(f"unknown intensity kind {kind!r}")  # cards are validated before this
