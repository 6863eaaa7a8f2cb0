"""Denoising with the built-in generators (or any image-to-image model card): ``denoise()``.

A 2D (CT) or 2.5D model (a slice and its neighbours in, the slice out) runs slice by slice along
z on the input's own grid (noise is a per-pixel property, so nothing is resampled), a few slices
per forward pass, with progress ``(slices done, total)`` and a cancel check between passes.  A 3D
model runs on the whole volume in one pass, or in overlapping blocks (``VOLUME_WINDOW``) when the
volume holds more than ``WHOLE_VOLUME_VOXELS``; progress then counts passes.  ``strength`` blends the input
(0) with the model's output (1), so a radiologist can keep some texture.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError, ModelError

DEFAULT_MODELS = {"CT": "ct-lowdose-denoising", "MR": "mr-denoising"}
SLICES_PER_PASS = 4
# 3D models: a volume up to this many voxels (after padding to the network's size multiple) runs in
# one pass, which is fastest (no overlap; a 181 x 217 x 181 brain MR in 2 s in bf16 on 2 cores,
# under 1.5 GB); a larger one in blocks of VOLUME_WINDOW voxels overlapping by a quarter.
WHOLE_VOLUME_VOXELS = 16_000_000
VOLUME_WINDOW = (96, 256, 256)
# The lowest value the denoisers were trained on (training/denoising_data.py): CT padding outside
# the scan field (-2048, -3024 HU) was clipped to -1024, and MR magnitude images are never below 0
# (the MR card's 0th percentile, "lower": 0.0, was 0 in training).  Below it the network
# extrapolates, and (MR) a single negative voxel would move the percentile window of the whole
# volume: the network sees the input clipped at the floor, and voxels below it keep their values.
INPUT_FLOOR = {"CT": -1024.0, "MR": 0.0}
# Resampling rings a few MR voxels below 0; a normalised (z-scored) MR has half of them there, and
# those would come back undenoised: such an image is refused instead.
MR_MAX_NEGATIVE_SHARE = 0.01


def default_model_name(modality) -> str:
    key = str(modality or "").strip().upper()
    key = {"MRI": "MR", "CTA": "CT"}.get(key, key)
    if key not in DEFAULT_MODELS:
        raise InputError(
            f"cannot choose a denoising model for modality {modality!r}: "
            "say whether the image is CT or MR (or pick a model)"
        )
    return DEFAULT_MODELS[key]


def guessed_mr_note(metadata: dict, source: str, model_name: str) -> str | None:
    """What the automatic choice says when it rests on MR guessed from the values
    (``metadata["modality_guessed"]``), else None: a CT stored without its HU rescale (uint16 with
    +1024, or scaled to 0-1) reads as MR too, and the MR model would run on it.  (A CT guess rests on
    air at -900 HU or below, which no MR has.)"""
    if not (metadata.get("modality_guessed") and metadata.get("modality") == "MR"):
        return None
    return (f"{source} does not state its modality; it is read as MR because none of its values is below 0, so "
            f"'{model_name}' runs. A CT stored without its HU rescale reads as MR too: give it in HU, or choose the "
            "modality or model yourself")


def load_denoiser(model=None, modality=None):
    """A ``LoadedModel`` for ``model`` (name, card, path or LoadedModel), or the default for ``modality``.
    Given both, a model made for the other modality is refused (``modality`` was ignored, and a CT
    denoiser ran on an image said to be MR)."""
    from .models import load_model

    loaded = load_model(model if model is not None else default_model_name(modality))
    card = loaded.card
    if card.task != "denoising":
        hint = ""
        if isinstance(model, (str, os.PathLike)) and Path(model).suffix.lower() in (".ts", ".pt", ".pth"):
            # a bare network file says nothing of its task: it is read as a segmentation model
            hint = (f"; a denoiser of your own is brought as a model card: {Path(model).with_suffix('.json').name} "
                    f"beside it with \"task\": \"denoising\" and \"weights\": \"{Path(model).name}\" (docs/denoising.md)")
        raise ModelError(f"model '{card.name}' is a {card.task} model, not a denoising model{hint}")
    _check_denoiser_channels(card)
    said = str(modality or "").strip().upper()
    said = {"MRI": "MR", "CTA": "CT"}.get(said, said)
    if model is not None and said in DEFAULT_MODELS and card.modality in DEFAULT_MODELS and said != card.modality:
        raise ModelError(f"model '{card.name}' is made for {card.modality}, but the image is said to be {said} "
                         f"(modality={modality!r}): choose a model made for {said}, or leave the model out to get "
                         f"'{DEFAULT_MODELS[said]}'")
    return loaded


def _check_denoiser_channels(card) -> None:
    """A denoiser gives one image back, from one slice (3D) or from a slice and k neighbours on each
    side (2.5D: 2k + 1 channels).  Channel 0 of several outputs was taken as the image: for a 2.5D
    network returning its input slices, the slice above, one slice off in z; an even number of
    input slices has no centre and failed inside torch."""
    if card.out_channels != 1:
        raise ModelError(f"model '{card.name}' is a denoiser with {card.out_channels} output channels: a denoiser "
                         "gives back one image (out_channels 1 in its card)")
    if card.spatial_dims == 3 and card.in_channels != 1:
        raise ModelError(f"model '{card.name}' is a 3D denoiser with {card.in_channels} input channels: a 3D "
                         "denoiser reads the volume itself (in_channels 1)")
    if card.in_channels % 2 == 0:
        raise ModelError(f"model '{card.name}' reads {card.in_channels} slices at a time: a 2.5D denoiser reads a "
                         "slice with the same number of neighbours on each side (an odd in_channels: 1, 3, 5, ...)")


def _check_strength(strength) -> float:
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise InputError(f"strength must be a number between 0 and 1, got {strength!r}") from None
    if not 0.0 <= value <= 1.0:
        raise InputError(f"strength must be between 0 (no denoising) and 1 (full), got {value}")
    return value


def as_input_dtype(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Same dtype family as the input: integers are rounded and clipped, floats become float32."""
    if np.issubdtype(like.dtype, np.integer):
        info = np.iinfo(like.dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(like.dtype)
    return values.astype(np.float32, copy=False)


def _padded(x, multiple: int):
    """``x`` (N, C, *spatial) with each spatial axis padded at its far end to a multiple of
    ``multiple`` by edge replication: a zero border would look like a sharp edge to the network.
    The caller crops the output back to the input's size."""
    import torch.nn.functional as F

    pads = [(-n) % multiple for n in x.shape[2:]]
    if not any(pads):
        return x
    return F.pad(x, [side for n in reversed(pads) for side in (0, n)], mode="replicate")


def _run_slices(network, image, intensity, device, precision, progress, cancel, in_channels=1,
                name: str = "denoiser") -> np.ndarray:
    """Slice-wise forward of a 2D network over ``image`` (z, y, x) float32 -> float32.

    A 2.5D network (``in_channels`` = 2k+1) gets each slice with its k neighbours on each side;
    at the ends of the volume the end slice is repeated.  A pass that returns NaN or infinity
    (a network overflowing bf16/float16, or broken weights) stops the run with a ModelError
    naming model ``name``: the volume came back NaN without a word.
    """
    import torch

    from .inference.intensity import restore_zeros
    from .inference.sliding_window import non_finite_message
    from .inference.precision import autocast

    multiple = int(getattr(network, "size_multiple", 1))
    total = image.shape[0]
    out = np.empty(image.shape, dtype=np.float32)
    if progress is not None:
        progress(0, total)
    with torch.inference_mode():
        for start in range(0, total, SLICES_PER_PASS):
            if cancel is not None:
                cancel.raise_if_cancelled()
            centres = np.arange(start, min(start + SLICES_PER_PASS, total))
            reach = in_channels // 2
            stack = np.clip(centres[:, None] + np.arange(-reach, reach + 1)[None], 0, total - 1)
            block = torch.from_numpy(image[stack])  # (slices, channels, y, x)
            x = intensity.apply(block)
            ny, nx = x.shape[-2:]
            x = _padded(x, multiple)
            with autocast(device, precision):
                y = network(x.to(device))
            if not bool(torch.isfinite(y).all()):  # on the device, one batch of slices at a time
                raise ModelError(non_finite_message(name, precision))
            y = y[..., :ny, :nx].float().cpu()
            out[start : start + len(block)] = intensity.invert(y)[:, 0].numpy()
            restore_zeros(out[start : start + len(block)], intensity, image[centres])
            if progress is not None:
                progress(min(start + SLICES_PER_PASS, total), total)
    if cancel is not None:  # pressed during the last pass: still leave nothing (as run_model)
        cancel.raise_if_cancelled()
    return out


def _run_volume(network, image, intensity, device, precision, progress, cancel, name: str = "denoiser") -> np.ndarray:
    """A 3D network over ``image`` (z, y, x) float32 -> float32, padded by edge replication to its
    size multiple (a zero border would look like an edge), in one pass or in blocks."""
    import torch

    from .inference.device import release_memory
    from .inference.intensity import restore_zeros
    from .inference.sliding_window import run_sliding_window

    multiple = int(getattr(network, "size_multiple", 1))
    x = _padded(intensity.apply(torch.from_numpy(image)[None])[None], multiple)  # (1, 1, z, y, x): one channel
    # one window holding the whole volume (no blending needed), or blocks blended with Gaussian weights;
    # the shared runner checks cancel, reports progress and refuses NaN either way
    whole = x[0, 0].numel() <= WHOLE_VOLUME_VOXELS
    blocks = tuple(min(n, w) for n, w in zip(x.shape[2:], VOLUME_WINDOW))

    def run(roi, whole):
        return run_sliding_window(network, x, roi, device=device, precision=precision, sw_batch_size=2,
                                  mode="constant" if whole else "gaussian", progress=progress, cancel=cancel, name=name)

    out_of_memory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # torch < 2.5: cuda's
    retry = False
    with torch.inference_mode():
        try:
            y = run(tuple(x.shape[2:]) if whole else blocks, whole)
        except out_of_memory:
            # the one pass did not fit this GPU (WHOLE_VOLUME_VOXELS is sized for a CPU's memory):
            # the blocks a larger volume gets need a fraction of it.  Retried outside this handler,
            # whose traceback would keep the failed pass's tensors on the GPU.
            if not whole or blocks == tuple(x.shape[2:]):
                raise
            retry = True
        if retry:
            release_memory(device)
            y = run(blocks, False)  # blended blocks: within a little of the one pass (tests)
        if cancel is not None:  # pressed during the pass: still leave nothing
            cancel.raise_if_cancelled()
        # inverted in place, still in inference mode (its tensors allow no in-place change outside it)
        y = y[0, :, : image.shape[0], : image.shape[1], : image.shape[2]].contiguous()
        out = intensity.invert(y)[0].numpy()
        restore_zeros(out, intensity, image)
        return out


def denoise(volume, spacing=None, model=None, modality=None, strength=1.0, settings=None,
            progress=None, cancel=None) -> np.ndarray:
    """Denoise a CT (HU) or MR volume (z, y, x) or a single slice (y, x).

    ``model``: a built-in name (``ct-lowdose-denoising``, ``mr-denoising``), a card, a path or a
    ``LoadedModel``; when None it is chosen from ``modality`` ("CT" or "MR").  ``strength`` in
    [0, 1] blends input and output (0 returns the input unchanged, in the dtype below, after the
    same checks).  The network sees the input clipped at the training floor (``INPUT_FLOOR``:
    -1024 HU for CT, 0 for MR); voxels below it, and those outside a card's clipping window, come
    back unchanged, and an MR model's output is not below 0 (magnitude images).  ``settings``:
    ``inference.InferenceSettings`` or a dict of its fields, of which ``device`` and
    ``precision`` are used ("auto" by default).  Returns the same shape (a
    singleton axis, as in (1, z, y, x) or (1, 1, y, x), is kept); an integer input gives the same integer dtype,
    anything else float32.  Slices need at least 8x8 pixels and, for the built-in networks,
    more than 8 along y or x (their halvings must leave more than one pixel).  ``spacing``
    (checked, not used: noise is per pixel) is (z, y, x) mm; a single slice takes (y, x) or the
    (z, y, x) of its volume.  One image only: a channel axis of more than 1 is refused.  Raises ``Cancelled``
    when ``cancel`` is set, leaving the input untouched.
    """
    from .io.validate import check_spacing, check_volume, without_singleton_axis

    shape = np.shape(volume)  # check_volume drops a singleton channel axis; the result gets it back
    arr = np.asarray(without_singleton_axis(volume))  # (1, 1, y, x): one slice with a channel axis
    if arr.ndim == 4:  # (C, z, y, x) with C > 1 (one channel was dropped above)
        raise InputError(f"{arr.shape[0]} channels are not supported (shape {shape}): pass one image, "
                         "a volume (z, y, x) or a slice (y, x)")
    one_slice = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[0] == 1)
    if arr.ndim == 3 and arr.shape[0] == 1:  # one slice kept as a volume: check it as a slice
        check_volume(arr[0], need_3d=False)
    else:
        arr = check_volume(arr, need_3d=False)
    if arr.ndim not in (2, 3):
        raise InputError(f"denoising needs a 2D slice or a 3D volume (z, y, x), got shape {arr.shape}")
    if spacing is not None and one_slice:  # spacing is checked, not used (the denoisers run per slice)
        n = len(spacing) if isinstance(spacing, (tuple, list, np.ndarray)) else None
        if n not in (2, 3):
            raise InputError(f"a single slice's spacing takes 2 values (y, x) in mm, or the 3 (z, y, x) of the "
                             f"volume it comes from; got {spacing!r}")
        check_spacing(spacing, ndim=n)
    elif spacing is not None:
        check_spacing(spacing, ndim=3)
    strength = _check_strength(strength)
    from .inference import InferenceSettings
    from .inference.cancel import as_cancel_token

    cancel = as_cancel_token(cancel)  # cancel=True failed at the first pass with an AttributeError

    # as segment() and detect() take them: a misspelt key ({"devce": "cuda"}) or a bare "cpu" was
    # silently ignored, running on the default device and precision
    settings = InferenceSettings.of(settings)
    if min(arr.shape[-2:]) < 8:
        raise InputError(f"slices of {arr.shape[-2:]} pixels are too small to denoise (need at least 8x8)")

    import torch

    from .inference.device import select_device
    from .inference.intensity import clipped_away, fit_intensity
    from .inference.modality import check_modality
    from .inference.precision import select_precision

    loaded = load_denoiser(model, modality)
    dims = loaded.card.spatial_dims
    if dims == 3 and one_slice:
        raise InputError(f"model '{loaded.card.name}' is 3D and needs a volume (z, y, x), not a single slice: "
                         "give the whole volume, or choose a 2D model")
    # padded to the network's size multiple, a slice must keep more than one pixel at its deepest
    # level: instance norm cannot normalise a single pixel (8x8 under the default's three halvings is 1x1)
    multiple = int(getattr(loaded.network, "size_multiple", 1))
    if max(arr.shape[-2:]) <= multiple:
        raise InputError(f"slices of {arr.shape[-2]}x{arr.shape[-1]} pixels are too small for model "
                         f"'{loaded.card.name}' (need more than {multiple} pixels along y or x)")
    check_modality(loaded.card, arr)  # a CT denoiser on MR (or the reverse) would change the anatomy
    # contiguous: torch.from_numpy refuses negative strides (a flipped float32 view failed with torch's
    # ValueError where nothing lay below the floor to force a copy; an audit helper's finding)
    image = np.ascontiguousarray(arr, dtype=np.float32)
    floor = INPUT_FLOOR.get(loaded.card.modality)
    below = image < floor if floor is not None else np.zeros(image.shape, dtype=bool)
    if loaded.card.modality == "MR" and below.mean() > MR_MAX_NEGATIVE_SHARE:
        raise ModelError(f"model '{loaded.card.name}' reads MR magnitude images, which are not below 0, but "
                         f"{below.mean():.0%} of this image's voxels are: it looks like a normalised (z-scored) "
                         "MR, so give the image as the scanner wrote it, or choose a model made for this one")
    device = select_device(settings.device, spatial_dims=dims)  # before strength 0 returns: "cuda" with no GPU
    if strength == 0.0:  # after every check: strength 0 must not accept what strength 1 refuses
        return arr.astype(arr.dtype if np.issubdtype(arr.dtype, np.integer) else np.float32).reshape(shape)
    precision = select_precision(device, settings.precision)
    seen = np.maximum(image, floor) if below.any() else image  # untouched when nothing is below
    stack = seen[None] if seen.ndim == 2 else seen
    intensity = fit_intensity(loaded.card.intensity, torch.from_numpy(stack))
    clipped = clipped_away(intensity, image)  # a card's clipping window: what lies outside stays as it was
    if clipped is not None:
        below = below | clipped
    network = loaded.network.to(device).eval()
    if dims == 3:
        clean = _run_volume(network, stack, intensity, device, precision, progress, cancel, name=loaded.card.name)
    else:
        clean = _run_slices(network, stack, intensity, device, precision, progress, cancel,
                            in_channels=loaded.card.in_channels, name=loaded.card.name).reshape(image.shape)
    if loaded.card.modality == "MR":  # a magnitude image is not negative: the network's slight undershoot
        np.maximum(clean, INPUT_FLOOR["MR"], out=clean)  # (to -4 on Colin27's 0 background) is not signal
    clean[below] = image[below]
    blended = clean if strength == 1.0 else image + strength * (clean - image)
    return as_input_dtype(blended, arr).reshape(shape)
