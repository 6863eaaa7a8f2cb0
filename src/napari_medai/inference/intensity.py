"""Intensity preprocessing declared by a model card, applied with MONAI transforms.

Every kind is a linear map ``y = (x - a_min) / (a_max - a_min) * (b_max - b_min) + b_min``
(optionally clipped), so an image-valued output (denoising) can be mapped back to the
input's units with :meth:`IntensityMap.invert`:

* ``ct_window``: a fixed HU window (``ScaleIntensityRange``; ``clip`` defaults to true);
* ``percentile``: the window between two percentiles of this image (MR; the same as
  ``ScaleIntensityRangePercentiles``, but the percentiles are kept for the inverse);
* ``zscore``: subtract the image mean, divide by its (population) std, as MONAI's
  ``NormalizeIntensity``: with ``"nonzero": true`` the statistics are those of the non-zero
  voxels and zeros stay 0 (MR: the air around the head is not tissue); with
  ``"channel_wise": true`` every channel has its own;
  ``"subtrahend"``/``"divisor"`` (numbers, or one per channel with ``channel_wise``) replace
  the mean/std as MONAI's fixed ``subtrahend``/``divisor`` do (a divisor of 0 divides by 1);
* ``minmax``: this image's minimum..maximum to ``b_min``..``b_max`` (MONAI's
  ``ScaleIntensity(minv, maxv)``, per channel with ``channel_wise``; a constant image is
  multiplied by ``b_min``, as MONAI's ``rescale_array`` does);
* ``chain``: the specs in ``"steps"`` applied in order, each fitted on the output of the one
  before (a bundle whose preprocessing has several intensity transforms);
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
    nonzero: bool = False  # zscore: only non-zero voxels are mapped (zeros stay 0)
    # zscore with channel_wise: (a_min, a_max) of each channel (a_min/a_max: the whole image's)
    channels: tuple[tuple[float, float], ...] = ()

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """A new float32 tensor; ``image`` is never modified."""
        from monai.transforms import ScaleIntensityRange

        if self.kind == "none":
            return image
        if self.kind in ("zscore", "minmax"):
            return self._per_channel(image)
        out = ScaleIntensityRange(self.a_min, self.a_max, self.b_min, self.b_max, clip=self.clip)(image)
        return out.as_tensor() if hasattr(out, "as_tensor") else torch.as_tensor(out)

    def _per_channel(self, image: torch.Tensor) -> torch.Tensor:
        """(x - lo) / (hi - lo) * (b_max - b_min) + b_min with each channel's (lo, hi)."""
        out = torch.as_tensor(image).to(torch.float32, copy=True)
        for c, (lo, hi) in enumerate(self._windows(out.shape[0])):
            channel = out[c]  # a view: the writes below land in ``out``
            if self.kind == "minmax" and hi == lo:  # a constant image: MONAI's rescale_array returns x * minv
                channel.mul_(self.b_min)
            elif self.nonzero:
                inside = channel != 0
                channel[inside] = (channel[inside] - lo) / (hi - lo)
            elif self.kind == "minmax":  # the order of MONAI's rescale_array, for equal rounding
                channel.sub_(lo).div_(hi - lo).mul_(self.b_max - self.b_min).add_(self.b_min)
            else:
                channel.sub_(lo).div_(hi - lo)
        return out

    def _windows(self, n: int):
        """(a_min, a_max) for each of ``n`` channels: their own where fitted channel-wise."""
        return self.channels if len(self.channels) == n else [(self.a_min, self.a_max)] * n

    def invert(self, values: torch.Tensor) -> torch.Tensor:
        """Map network-space values back to input units, in place (linearly: a ``nonzero``
        z-score's zeros come back as the mean)."""
        if self.kind == "none":
            return values
        for c, (lo, hi) in enumerate(self._windows(values.shape[0])):
            values[c].sub_(self.b_min).mul_((hi - lo) / (self.b_max - self.b_min)).add_(lo)
        return values


def keeps_zeros(intensity) -> bool:
    """Whether ``intensity`` is a ``nonzero`` z-score: it leaves the
    input's zeros (MR's background) out, and an image output should keep them at 0, where the
    linear ``invert`` gives them the mean."""
    # a single map only: inside a chain the z-score leaves out the zeros of the step before it,
    # not the input's (left as they were: the chain's inversion stays linear)
    return getattr(intensity, "kind", "") == "zscore" and bool(getattr(intensity, "nonzero", False))


def clipped_away(intensity, image: np.ndarray) -> np.ndarray | None:
    """Where ``image`` lies outside a clipping window (``clip``: true; a single map): the network
    sees the window's edge there, so an image output flattens it (bone at 1800 HU came back at
    about 1000 from a window ending at 1000).  None when nothing is clipped."""
    if not getattr(intensity, "clip", False) or intensity.kind not in ("ct_window", "percentile"):
        return None
    lo, hi = sorted((intensity.a_min, intensity.a_max))
    outside = (image < lo) | (image > hi)
    return outside if outside.any() else None


def check_channel_wise(spec: dict, channels: int, name: str) -> None:
    """A percentile window fitted per channel (a bundle's ScaleIntensityRangePercentilesd with
    channel_wise) is the same window on one channel; on several the plugin would pool the channels'
    percentiles, which MONAI does not: refused.  (Only the engine knows the channels: denoise()
    fits its windows on (z, y, x) stacks, whose first axis is the slices.)"""
    steps = spec.get("steps", [spec]) if spec.get("kind") == "chain" else [spec]
    if channels > 1 and any(s.get("kind") == "percentile" and s.get("channel_wise") for s in steps):
        from ..errors import ModelError

        raise ModelError(f"model '{name}' windows each input channel between its own percentiles (channel_wise), "
                         f"which the plugin does not reproduce for {channels} channels")


def restore_zeros(out, intensity, image) -> None:
    """Set ``out`` back to 0 where the input ``image`` is 0, in place, when ``intensity`` left
    those zeros out (``keeps_zeros``): an image output's linear inversion gave them the mean.
    ``image`` has ``out``'s shape or that of its last axes (channels of ``out`` share it)."""
    if keeps_zeros(intensity):
        out[..., image == 0] = 0


def _mean_std(values: torch.Tensor, nonzero: bool) -> tuple[float, float]:
    """Mean and population std (MONAI's), of the non-zero voxels only with ``nonzero``; a std
    of 0 (or no voxel) divides by 1, as MONAI does."""
    if nonzero:
        values = values[values != 0]
    if values.numel() == 0:
        return 0.0, 1.0
    mean = float(values.mean(dtype=torch.float64))
    std = float(values.std(correction=0))
    return mean, (std if std > 0 else 1.0)


@dataclass(frozen=True)
class IntensityChain:
    """Several maps applied in order (``kind == "chain"``); inverted in reverse order."""
    maps: tuple[IntensityMap, ...]
    kind: str = "chain"

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        for imap in self.maps:
            image = imap.apply(image)
        return image

    def invert(self, values: torch.Tensor) -> torch.Tensor:
        for imap in reversed(self.maps):
            values = imap.invert(values)
        return values


def _fixed(value, channel: int | None, default: float) -> float:
    """A fixed subtrahend/divisor: one number, or (per channel) the channel's own; ``default``
    (the image's statistic) where none is given."""
    if value is None:
        return default
    if isinstance(value, (list, tuple)):
        return float(value[channel if channel is not None else 0])
    return float(value)


def _zscore_window(values: torch.Tensor, nonzero: bool, sub, div, channel: int | None) -> tuple[float, float]:
    mean, std = _mean_std(values, nonzero)
    mean, std = _fixed(sub, channel, mean), _fixed(div, channel, std)
    return mean, mean + (std if std != 0 else 1.0)  # MONAI divides by 1 where the divisor is 0


def _min_max(values: torch.Tensor) -> tuple[float, float]:
    return float(values.min()), float(values.max())


def fit_intensity(spec: dict, image: torch.Tensor) -> IntensityMap | IntensityChain:
    """The map for this image (percentiles and z-score statistics depend on it)."""
    kind = spec.get("kind", "none")
    if kind == "none":
        return IntensityMap("none")
    if kind == "ct_window":
        return IntensityMap("ct_window", float(spec["a_min"]), float(spec["a_max"]),
                            float(spec["b_min"]), float(spec["b_max"]), bool(spec.get("clip", True)))
    if kind == "percentile":  # channel_wise: one channel only (the engine refuses several, check_channel_wise)
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
        nonzero = bool(spec.get("nonzero", False))
        sub, div = spec.get("subtrahend"), spec.get("divisor")
        windows = tuple(_zscore_window(channel, nonzero, sub, div, c)
                        for c, channel in enumerate(image)) if spec.get("channel_wise") else ()
        mean, hi = _zscore_window(image, nonzero, sub, div, None)
        return IntensityMap("zscore", mean, hi, 0.0, 1.0, False, nonzero=nonzero, channels=windows)
    if kind == "minmax":
        windows = tuple(_min_max(channel) for channel in image) if spec.get("channel_wise") else ()
        lo, hi = _min_max(image)
        return IntensityMap("minmax", lo, hi, float(spec.get("b_min", 0.0)), float(spec.get("b_max", 1.0)),
                            False, channels=windows)
    if kind == "chain":
        maps = []
        for i, step in enumerate(spec["steps"]):
            maps.append(fit_intensity(step, image))
            if i + 1 < len(spec["steps"]):  # the next step's statistics are those of this output
                image = maps[-1].apply(image)
        return IntensityChain(tuple(maps))
    raise ValueError(f"unknown intensity kind {kind!r}")  # cards are validated before this
