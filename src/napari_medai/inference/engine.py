"""``run_model``: one call from a (z, y, x) volume with its spacing to model outputs on the
same grid.

Steps: check the input -> resample to the card's spacing -> intensity preprocessing ->
re-orient to the network's axes -> sliding window (progress, cancel) -> output activation
(averaged over mirrored passes where test-time augmentation is on) -> back to the input grid.
Everything below the sliding window stays on the CPU as float32.
"""

from __future__ import annotations

import numbers

import warnings
from dataclasses import dataclass, fields
from typing import Callable

import numpy as np
import torch

from ..errors import Cancelled, InputError, ModelError
from ..io.validate import check_spacing, check_volume
from .cancel import CancelToken, as_cancel_token
from .device import release_memory, select_device
from .intensity import IntensityMap, check_channel_wise, fit_intensity, keeps_zeros, restore_zeros
from .layout import from_network_axes, sizes_to_network_axes, to_network_axes
from .modality import check_modality
from .precision import select_precision
from .focus import FocusedPass, check_focus_probability, focus_level, lesion_channels, lesion_focus
from .progress import PassesProgress
from .resample import resample, working_shape
from .sliding_window import padding, run_sliding_window, window_coords

BLEND_MODES = ("gaussian", "constant")
# Test-time augmentation: "mirror" averages the outputs for the volume as it is and mirrored
# along each spatial axis in turn (1 + 3 passes for a 3D network, 1 + 2 in-plane for a 2D one);
# "mirror-lesions" runs the mirrored passes only where the plain pass sees a possible lesion
# (inference.focus); "auto" does what the model card's ``extra["tta"]`` says ("off" when it
# says nothing).
TTA_MODES = ("auto", "off", "mirror", "mirror-lesions")
MIRRORING_BY_COST = ("off", "mirror-lesions", "mirror")  # cheapest first; each serves those before it


DEFAULT_OVERLAP = 0.25
DEFAULT_MODE = "gaussian"
MAX_OVERLAP = 0.9  # a window step of a tenth of the window: 55,000 windows of 96³ on a 300 x 512 x 512 CT


@dataclass
class InferenceSettings:
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N" | "mps"
    precision: str = "auto"  # "auto" | "fp32" | "bf16" | "amp"
    sw_batch_size: int = 4  # windows per forward pass (at least 2)
    # None: the card's own (extra["sw_overlap"], extra["sw_mode"]: a MONAI bundle's inferer values),
    # else DEFAULT_OVERLAP and DEFAULT_MODE
    overlap: float | None = None  # fraction of the roi shared by neighbouring windows (at most MAX_OVERLAP)
    mode: str | None = None  # window blending: "gaussian" | "constant"
    tta: str = "auto"  # test-time mirroring: "auto" (the card's choice) | "off" | "mirror" | "mirror-lesions"
    # "mirror-lesions": the plain pass's lesion probability from which a window is mirrored;
    # None: the card's extra["focus_probability"], else inference.focus.FOCUS_PROBABILITY
    focus_probability: float | None = None

    @classmethod
    def of(cls, settings) -> "InferenceSettings":
        """``settings`` as InferenceSettings: None (the defaults), one already, or a dict of its
        fields (as ``denoise()`` takes them)."""
        if settings is None:
            return cls()
        if isinstance(settings, cls):
            return settings
        if isinstance(settings, dict):
            known = [f.name for f in fields(cls)]
            unknown = sorted(set(settings) - set(known))
            if unknown:
                raise InputError(f"unknown inference setting(s) {unknown}; the settings are {known}")
            return cls(**settings)
        raise InputError(f"settings must be InferenceSettings or a dict of its fields, got {type(settings).__name__}")

    def validate(self) -> None:
        if self.overlap is not None:
            check_overlap(self.overlap, "window overlap", InputError)
        if self.mode is not None and self.mode not in BLEND_MODES:
            raise InputError(f"blending mode must be one of {BLEND_MODES}, got {self.mode!r}")
        batch = self.sw_batch_size  # None or "x" failed with int()'s own error; 4.0 (from JSON) is 4
        if (isinstance(batch, bool) or not isinstance(batch, numbers.Real) or not float(batch).is_integer()
                or batch < 1):
            raise InputError(f"sw_batch_size must be a whole number of windows, at least 1, got {batch!r}")
        self.sw_batch_size = int(batch)
        if self.tta not in TTA_MODES:
            raise InputError(f"test-time augmentation must be one of {TTA_MODES}, got {self.tta!r}")
        if self.focus_probability is not None:
            check_focus_probability(self.focus_probability, "focus_probability", InputError)


def check_input(volume, spacing, card) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """The volume as (C, z, y, x) and its (z, y, x) spacing, or a clear error."""
    arr = volume if isinstance(volume, np.ndarray) else np.asarray(volume)
    if card.spatial_dims == 2 and arr.ndim == 2:  # one slice for a 2D model
        arr = arr[None]
        if spacing is not None and len(tuple(spacing)) == 2:
            spacing = (1.0, *tuple(spacing))
    if arr.ndim < 3:
        raise ModelError(
            f"model '{card.name}' expects a 3D volume (z, y, x), the image has {arr.ndim} dimension(s) {arr.shape}"
        )
    channels = arr.shape[0] if arr.ndim == 4 and arr.shape[0] > 1 and arr.shape[-1] > 1 else 1
    if channels != card.in_channels:
        raise ModelError(
            f"model '{card.name}' expects {card.in_channels} input channel(s) as (C, z, y, x), "
            f"the image has {channels} (shape {arr.shape})"
        )
    if channels == 1 and card.spatial_dims == 2 and arr.shape[-3] == 1:
        # one slice for a 2D model: its plane is checked (check_volume refused its 1-slice z axis
        # as "too small", so a 2D model could never run on one slice)
        check_volume(arr.reshape(arr.shape[-2:]), need_3d=False, what="slice")
        arr = arr.reshape((1, *arr.shape[-3:]))
    elif channels == 1:
        arr = check_volume(arr)[None]
    else:
        for c in range(channels):
            check_volume(arr[c], what=f"image channel {c}")
    check_modality(card, arr)  # after the volume checks: an empty or NaN image gets its own message
    if spacing is not None:
        spacing = check_spacing(spacing, ndim=3)
    return arr, spacing


def run_model(model, volume, spacing=None, settings: InferenceSettings | None = None,
              progress: Callable[[int, int], None] | None = None,
              cancel: CancelToken | None = None) -> np.ndarray:
    """Run ``model`` over ``volume`` (z, y, x) or (C, z, y, x).

    ``model`` is a LoadedModel, or anything ``models.load_model`` accepts (a built-in name,
    a card, a bundle folder, a TorchScript file).

    ``spacing`` is the volume's (z, y, x) voxel size in mm; None means the volume is already
    at the model's spacing.  Returns float32 (C_out, z, y, x) on the input grid: class
    probabilities for "softmax"/"sigmoid" models, an image in the input's units (e.g. HU)
    for "residual"/"identity" models.  ``progress(done, total)`` counts windows; a
    cancelled ``cancel`` token raises Cancelled and returns nothing.
    """
    from ..models.loading import LoadedModel, load_model

    if not isinstance(model, LoadedModel):
        model = load_model(model)
    settings = InferenceSettings.of(settings)
    settings.validate()
    card = model.card
    image, spacing = check_input(volume, spacing, card)
    device = select_device(settings.device, card.spatial_dims)
    precision = select_precision(device, settings.precision)
    cancel = as_cancel_token(cancel)  # None: a token nobody sets; True or an Event: refused
    cancel.raise_if_cancelled()
    try:
        result = _infer(model, image, spacing, settings, device, precision, progress, cancel)
        cancel.raise_if_cancelled()  # pressed during the last batch: still leave nothing
        return result
    except Cancelled:
        pass
    # Outside the except block the traceback (and the frames holding the half-stitched
    # buffers) is gone, so the memory can actually be released before re-raising.
    release_memory(device)
    raise Cancelled("inference was cancelled; nothing was produced")


def check_overlap(value, what: str, error) -> None:
    """``error`` unless ``value`` is a number from 0 to MAX_OVERLAP."""
    # 0.99 moves a 96-voxel window one voxel a step: 35 M windows on a chest CT, and counting
    # them alone (MONAI's dense_patch_slices) ran for minutes before any progress showed
    ok = (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))  # numpy scalars too
          and 0 <= float(value) <= MAX_OVERLAP)
    if not ok:
        raise error(f"{what} must be from 0 to {MAX_OVERLAP:g} (a fraction of the window shared by its "
                    f"neighbours), got {value!r}")


def window_blending(settings, card) -> tuple[float, str]:
    """The sliding window's overlap and blending mode: the settings' where given, else the card's
    (``extra["sw_overlap"]``, ``extra["sw_mode"]``, read from a MONAI bundle's inferer so that it
    runs as the bundle does), else DEFAULT_OVERLAP and DEFAULT_MODE."""
    overlap = settings.overlap
    if overlap is None:
        overlap = card.extra.get("sw_overlap", DEFAULT_OVERLAP)
        check_overlap(overlap, f"model '{card.name}': extra.sw_overlap", ModelError)
    mode = settings.mode
    if mode is None:
        mode = card.extra.get("sw_mode", DEFAULT_MODE)
        if mode not in BLEND_MODES:
            raise ModelError(f"model '{card.name}': extra.sw_mode must be one of {BLEND_MODES}, got {mode!r}")
    return float(overlap), str(mode)


def mirror_mode(settings, card) -> str:
    """The test-time mirroring a run of ``card``'s model does: "off", "mirror" or
    "mirror-lesions" (the settings' choice, or the card's for "auto")."""
    choice = settings.tta if settings.tta != "auto" else str(card.extra.get("tta", "off"))
    if choice not in TTA_MODES[1:]:
        raise ModelError(f"model '{card.name}' asks for test-time augmentation {choice!r}: "
                         f"use one of {TTA_MODES[1:]}")
    if choice == "mirror-lesions":
        lesion_channels(card)  # a card naming no lesion probability, or a bad focus level:
        focus_level(settings, card)  # refused before any pass
    return choice


def mirror_passes(settings, card) -> list[tuple[int, ...]]:
    """Spatial dims of the network input (B, C, *spatial) to flip, one entry per pass; ()
    is the volume as it is.  A 2D network is mirrored in-plane only."""
    if mirror_mode(settings, card) == "off":
        return [()]
    return [()] + [(d,) for d in range(2, 2 + card.spatial_dims)]


# The largest grid a model is run on: a 512 x 512 x 600 thin-slice CT at a 2 x 1 x 1 mm model
# spacing is 24 M voxels; 400 M (1.6 GB a channel in float32) means the spacing is wrong.
MAX_WORK_VOXELS = 400_000_000


def check_working_grid(work, grid, spacing, target) -> None:
    """Refuse a resampled grid too large for memory before it is allocated: a 48 x 48 x 32
    volume said to have 50 mm voxels becomes 800 x 2400 x 2400 at 2 x 1 x 1 mm (18 GB), and
    used to end in an out-of-memory kill."""
    voxels = int(np.prod(work, dtype=np.int64))
    if voxels <= MAX_WORK_VOXELS or spacing is None or target is None or tuple(work) == tuple(grid):
        return  # no resampling: the volume is already in memory at that size
    extent = " x ".join(f"{n * float(s):.0f}" for n, s in zip(grid, spacing))
    raise InputError(f"at the model's spacing of {' x '.join(f'{t:g}' for t in target)} mm the volume would be "
                     f"{' x '.join(map(str, work))} voxels ({voxels * 4 / 1e9:.0f} GB a channel): its voxel size "
                     f"of {' x '.join(f'{float(v):g}' for v in spacing)} mm gives a field of view of {extent} mm, "
                     "which no scan has; check the spacing")


def target_spacing(card, spacing) -> tuple[float, ...] | None:
    """The (z, y, x) spacing ``card``'s model runs a volume of ``spacing`` at; None for the
    input's own grid.  A card axis left None keeps the input's spacing there (a MONAI pixdim
    <= 0), and a 2D model keeps every slice."""
    if card.spacing is None or spacing is None:
        return None
    wanted = (None, *card.spacing) if card.spatial_dims == 2 else card.spacing
    return tuple(float(s) if t is None else float(t) for s, t in zip(spacing, wanted))


def window_size(card, shape) -> tuple[int, ...]:
    """The card's roi_size for a network input of spatial ``shape``, both in the network's
    axis order.  A card axis left None spans the whole image, as MONAI's sliding window reads
    a roi_size <= 0 (rounded up to a multiple of the bundle's DivisiblePad k); it is known
    only now, after resampling and re-orienting."""
    roi = _network_order(card.roi_size, card)
    # A bundle's DivisiblePad(k) (card.extra["divisible_k"], in the card's axis order) makes
    # the whole-image size a multiple of k, which networks with k-fold downsampling need; the
    # window is rounded up and MONAI's sliding window pads the image to it, as DivisiblePad does.
    k = _network_order(card.extra.get("divisible_k") or [1] * card.spatial_dims, card)
    return tuple(-(-int(n) // int(d)) * int(d) if r is None else int(r) for r, n, d in zip(roi, shape, k))


def _network_order(values, card) -> tuple:
    """Per-axis card values, (z, y, x) or a 2D network's (y, x), in the network's axis order.
    A 2D card's axes code starts with S (slices are the batch); its other two letters order
    and flip the in-plane axes, as for 3D."""
    if card.spatial_dims == 3:
        return sizes_to_network_axes(values, card.axes)
    return sizes_to_network_axes((None, *values), card.axes)[1:]


def _infer(model, image, spacing, settings, device, precision, progress, cancel) -> np.ndarray:
    card = model.card
    grid = tuple(image.shape[1:])
    # No copy when the caller's volume is already contiguous float32; nothing below writes to it
    # (resampling, the intensity maps and the sliding window's windows are new tensors), so
    # torch's warning about a read-only array (np.load(mmap_mode="r")) would only alarm
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    target = target_spacing(card, spacing)
    work = working_shape(grid, spacing, target)
    check_working_grid(work, grid, spacing, target)
    passes = mirror_passes(settings, card)
    focused = mirror_mode(settings, card) == "mirror-lesions"

    with torch.inference_mode():
        x = resample(x, work, "linear")
        check_channel_wise(card.intensity, x.shape[0], card.name)
        intensity = fit_intensity(card.intensity, x)
        x = intensity.apply(x)
        network = model.network.to(device).eval()
        x = to_network_axes(x, card.axes)  # a 2D card's code keeps S first: only the plane turns
        # 3D: one image (1, C, a, b, c); 2D: the slices become the batch (z, C, a, b)
        x = x[None] if card.spatial_dims == 3 else x.permute(1, 0, 2, 3)
        roi = window_size(card, x.shape[2:])
        overlap, mode = window_blending(settings, card)
        sw = dict(device=device, precision=precision, sw_batch_size=settings.sw_batch_size,
                  overlap=overlap, mode=mode, cancel=cancel)
        out, plans = None, [None] * len(passes)
        bar = PassesProgress(progress, len(passes))
        for i, dims in enumerate(passes):
            y = run_sliding_window(network, x.flip(dims) if dims else x, roi, progress=bar.stage(i),
                                   name=card.name, focused=plans[i], **sw)
            y = y.flip(dims) if dims else y
            if focused and i == 0:  # the plain pass decides where the mirrored passes run
                plans = _focused_passes(y.clone(), card, passes, x.shape, roi, settings, overlap, bar)
            y = from_network_axes(y[0] if card.spatial_dims == 3 else y.permute(1, 0, 2, 3), card.axes)
            if y.shape[0] != card.out_channels:
                raise ModelError(
                    f"model '{card.name}' returned {y.shape[0]} channel(s) but its card says {card.out_channels}"
                )
            # probabilities (not logits) are averaged, the usual test-time augmentation
            y = _activate(y, card.output, intensity)
            out = y if out is None else out.add_(y)
            del y
        del x, plans  # the plain pass's output is no longer needed: not through the resampling below
        if len(passes) > 1:
            out /= len(passes)
        out = resample(out, grid, "linear")
        out = np.ascontiguousarray(out.numpy(), dtype=np.float32)
        # an image: the zeros a nonzero z-score left out stay 0 (the channels' maximum taken only then)
        if card.output in ("identity", "residual") and keeps_zeros(intensity):
            restore_zeros(out, intensity, image[0] if image.shape[0] == 1 else np.abs(image).max(0))
        return out


def _focused_passes(raw, card, passes, shape, roi, settings, overlap, bar) -> list[FocusedPass | None]:
    """A plan for each mirrored pass from the plain pass's output ``raw`` (B, C, *spatial, before
    the activation), with the windows each runs told to the progress bar."""
    focus = lesion_focus(raw, card, focus_level(settings, card))
    plans = [None] + [FocusedPass(raw, focus, dims, padding(shape[2:], roi)) for dims in passes[1:]]
    coords = window_coords(shape, roi, overlap)
    for i, plan in enumerate(plans[1:], 1):
        bar.expect(i, sum(plan.runs(c) for c in coords))
    return plans


def _activate(out: torch.Tensor, output: str, intensity: IntensityMap) -> torch.Tensor:
    """Apply the card's output activation over the channel axis, in place where possible."""
    if output == "softmax":
        out = out.contiguous()
        out.sub_(out.amax(0, keepdim=True)).exp_()
        return out.div_(out.sum(0, keepdim=True))
    if output == "sigmoid":
        return out.sigmoid_()
    # "identity"/"residual": an image in the network's intensity space -> input units (e.g. HU).
    return intensity.invert(out)
