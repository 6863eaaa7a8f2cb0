"""MONAI sliding-window inference with a progress callback and a cancel token.

``monai.inferers.sliding_window_inference`` has neither, so the network is wrapped in a
predictor that checks the token before each batch of windows and reports windows done.
The stitched output stays on the CPU (``device="cpu"``) while windows run on the compute
device (``sw_device``), so a GPU only ever holds ``sw_batch_size`` windows.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import ModelError, reason_of
from .cancel import CancelToken
from .focus import FocusedPass
from .precision import autocast

ProgressFn = Callable[[int, int], None]
FOCUSED_BATCHES = 8  # batches of windows MONAI gathers per predictor call in a focused pass on CPU


def _scan_interval(image_size, roi_size, overlap) -> tuple[int, ...]:
    # Mirrors monai.inferers.utils._get_scan_interval (private), so that the count below is
    # the number of windows MONAI will run; tests compare it with the predictor's calls.
    out = []
    for size, roi in zip(image_size, roi_size):
        out.append(roi if roi == size else max(1, int(roi * (1 - overlap))))
    return tuple(out)


def count_windows(image_size, roi_size, overlap: float) -> int:
    """Windows per image for these sizes (MONAI pads images smaller than the roi first)."""
    from monai.data.utils import dense_patch_slices

    padded = tuple(max(int(s), int(r)) for s, r in zip(image_size, roi_size))
    return len(dense_patch_slices(padded, tuple(roi_size), _scan_interval(padded, roi_size, overlap)))


def padding(image_size, roi_size) -> tuple[int, ...]:
    """What MONAI pads before each spatial axis of an image smaller than the window."""
    return tuple(max(int(r) - int(s), 0) // 2 for s, r in zip(image_size, roi_size))


def window_coords(shape, roi_size, overlap: float) -> list[list[slice]]:
    """Every window MONAI runs on inputs of ``shape`` (B, C, *spatial), as the coordinates it
    hands a predictor with ``with_coord``: batch slice, channel slice, spatial slices in the
    padded image."""
    from monai.data.utils import dense_patch_slices

    padded = tuple(max(int(s), int(r)) for s, r in zip(shape[2:], roi_size))
    slices = dense_patch_slices(padded, tuple(roi_size), _scan_interval(padded, roi_size, overlap))
    return [[slice(b, b + 1), slice(None), *s] for b in range(int(shape[0])) for s in slices]


def non_finite_message(name: str, precision: str) -> str:
    """What to say when model ``name`` returned NaN or infinity running in ``precision``."""
    if precision != "fp32":
        half = {"amp": "float16 (amp)", "bf16": "bfloat16"}.get(precision, precision)
        return (f"model '{name}' returned NaN or infinite values in {half} precision, where values beyond its "
                "range overflow: run it again in full precision (--precision fp32, or precision='fp32' in the "
                "settings)")
    return (f"model '{name}' returned NaN or infinite values (in fp32 precision): its weights may be broken, "
            "or the image is far from what the model was made for")


class WindowPredictor:
    """Runs one batch of windows: cancel check, autocast, float32 output, progress.

    Each batch the network returns is checked for NaN and infinity where it was made (the compute
    device), and the first bad one stops the run with a ModelError naming model ``name``: a network
    overflowing float16/bfloat16, or with NaN weights, made every voxel background after the
    softmax, and the detector found nothing, without a word."""

    def __init__(self, network, device, precision: str, total: int,
                 progress: ProgressFn | None = None, cancel: CancelToken | None = None, name: str = "network",
                 focused: FocusedPass | None = None, batch: int = 4):
        self.network = network
        self.focused = focused  # a mirrored pass limited to lesions: only some windows run
        self.batch = batch  # windows per network call in a focused pass
        self.name = name
        self.device = torch.device(device)
        self.precision = precision
        self.total = total
        self.progress = progress
        self.cancel = cancel
        self.done = 0
        self.calls = 0

    def __call__(self, windows: torch.Tensor, coords=None) -> torch.Tensor:
        if self.focused is None:
            return self._run(windows)
        # A focused pass gets FOCUSED_BATCHES batches from MONAI at once, so that the windows
        # that run fill whole batches; the others return the plain pass's output.
        runs = [i for i, c in enumerate(coords) if self.focused.runs(c)]
        outs = [None] * len(coords)
        for start in range(0, len(runs), self.batch):
            chunk = runs[start:start + self.batch]
            # a lone window goes with a copy of itself: batch 1 takes a slow Conv3d kernel on CPU
            computed = self._run(windows[chunk if len(chunk) > 1 else chunk * 2], counted=len(chunk))
            for k, i in enumerate(chunk):
                outs[i] = computed[k]
        return torch.stack([o if o is not None else self.focused.stand_in(c).to(windows.device)
                            for o, c in zip(outs, coords)])

    def _run(self, windows: torch.Tensor, counted: int | None = None) -> torch.Tensor:
        """The network on ``windows``; ``counted``: how many of them progress counts."""
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()
        try:
            with autocast(self.device, self.precision):
                out = self.network(windows)
        except MemoryError:
            raise
        except Exception as exc:  # the network itself failed: a model that does not fit the data
            if "out of memory" in str(exc).lower():
                raise  # torch's OutOfMemoryError: the caller's concern, not the model's
            raise ModelError(
                f"the model failed on windows of shape {tuple(windows.shape)} (batch, channels, *size): "
                f"{reason_of(exc)}. Its card (channels, dimensions, window size) may not describe it"
            ) from exc
        if isinstance(out, (list, tuple)) and out:  # deep-supervision heads: the first is the prediction
            out = out[0]
        if not isinstance(out, torch.Tensor):  # a dict of heads, say: which one is the prediction is unknown
            raise ModelError(f"model '{self.name}' returned {type(out).__name__} for its windows, not a tensor: "
                             "a segmentation model must return the class scores (batch, classes, *size); wrap a "
                             "network with several heads so that it returns the one to use")
        if tuple(out.shape[2:]) != tuple(windows.shape[2:]):
            # MONAI's sliding window reads another size as a zoom and the result was stretched back onto
            # the grid, up to a voxel off (a UNet with strides 2 on an odd window returns one voxel more)
            raise ModelError(f"model '{self.name}' returned windows of size {tuple(out.shape[2:])} for windows of "
                             f"{tuple(windows.shape[2:])}: its output must match its input; give it a window "
                             "(roi_size) its downsampling divides, or the bundle's DivisiblePad (extra.divisible_k)")
        if not bool(torch.isfinite(out).all()):
            raise ModelError(non_finite_message(self.name, self.precision))
        out = out.float()  # no copy in fp32; bf16/fp16 windows are blended in float32
        self.calls += 1
        self.done += int(windows.shape[0]) if counted is None else counted
        if self.progress is not None:
            self.progress(self.done, self.total)
        return out


def run_sliding_window(network, inputs: torch.Tensor, roi_size, *, device="cpu", precision: str = "fp32",
                   sw_batch_size: int = 4, overlap: float = 0.25, mode: str = "gaussian",
                   progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                   name: str = "network", focused: FocusedPass | None = None) -> torch.Tensor:
    """``inputs`` (B, C, *spatial) float32 on the CPU -> (B, C_out, *spatial) float32 on the CPU;
    ``name``: the model's, for the message when it returns NaN or infinity.

    For a 2D network run slice-wise, B is the number of slices: MONAI then batches windows
    from several slices together and the window count is ``B * windows per slice``.

    ``focused``: a mirrored pass of ``tta="mirror-lesions"``; only its windows that run count.
    """
    from monai.inferers import sliding_window_inference

    roi_size = tuple(int(r) for r in roi_size)
    if focused is None:
        total = count_windows(inputs.shape[2:], roi_size, overlap) * int(inputs.shape[0])
    else:
        total = sum(focused.runs(c) for c in window_coords(inputs.shape, roi_size, overlap))
    # At batch 1, fp32 Conv3d on CPU falls back to a slow kernel: never run single windows.
    batch = max(2, int(sw_batch_size))
    predictor = WindowPredictor(network, device, precision, total, progress, cancel, name, focused, batch)
    if progress is not None:
        progress(0, total)
    # On CPU a focused pass gathers several batches so that the windows that run fill whole ones;
    # on a GPU every gathered window (and its output) would sit in its memory, so it gathers one.
    gather = FOCUSED_BATCHES if focused is not None and torch.device(device).type == "cpu" else 1
    per_call = batch * gather
    return sliding_window_inference(
        inputs, roi_size, per_call, predictor,
        overlap=overlap, mode=mode, sw_device=torch.device(device), device=torch.device("cpu"),
        with_coord=focused is not None,
    )
