"""Numeric precision policy.

* CUDA: "amp" (float16 autocast); "fp32" there is full fp32 (no TF32 convolutions or matmuls).
* CPU: "bf16" autocast when the CPU has native bf16 (checked at run time through oneDNN);
  on CPUs without it bf16 is emulated and slower than fp32, so "fp32" there.
* "fp32" can always be forced.  Outputs are returned in float32 whatever the precision.
"""

from __future__ import annotations

import contextlib
import threading

import torch

from ..errors import InputError

PRECISIONS = ("auto", "fp32", "bf16", "amp")


def cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def select_precision(device, preference: str = "auto") -> str:
    device = torch.device(device)
    if preference is not None and not isinstance(preference, str):  # precision=16 failed with an AttributeError
        raise InputError(f"precision must be text ({', '.join(PRECISIONS)}), got {preference!r}")
    choice = (preference or "auto").strip().lower()
    if choice not in PRECISIONS:
        raise InputError(f"unknown precision '{preference}': use one of {', '.join(PRECISIONS)}")
    if choice == "auto":
        if device.type == "cuda":
            return "amp"
        if device.type == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return "fp32"
    if choice == "amp" and device.type != "cuda":
        raise InputError("'amp' (float16) precision needs a CUDA GPU; use 'bf16' or 'fp32' on this device")
    if choice == "bf16" and device.type == "mps":
        raise InputError("bf16 is not supported on Apple MPS; use 'fp32'")
    return choice


def autocast(device, precision: str):
    """Context manager running the network in ``precision`` on ``device``."""
    device = torch.device(device)
    if precision == "fp32":
        if device.type == "cuda":
            return ieee_fp32_convolutions()
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "amp" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


# cuDNN's flags are global to the process: calls in several threads share one switch-over,
# entered by the first and left by the last (each saving and restoring them on its own, two
# overlapping calls left TF32 off for good, or turned it back on under one still running)
_IEEE_LOCK = threading.Lock()
_ieee_users = 0
_ieee_flags = None  # the open cudnn.flags context while any call runs
_ieee_matmul = None  # the matmul precision the first caller found


@contextlib.contextmanager
def ieee_fp32_convolutions():
    """cuDNN convolutions in full fp32.  PyTorch lets cuDNN use TF32 (a 10-bit mantissa) for
    fp32 convolutions by default: measured on an H200, that moved the shipped segmentation's
    lung1 nodule Dice from 0.5914 (CPU) to 0.5898 and gave no speed-up over AMP, so "fp32"
    here means fp32; "amp" is the fast choice on a GPU.  Matmuls (linear layers, attention) are
    held at "highest" too: a user's ``torch.set_float32_matmul_precision("high")`` would let
    them run in TF32.  Safe in concurrent threads: the settings the first caller found come
    back when the last one leaves."""
    global _ieee_users, _ieee_flags, _ieee_matmul
    with _IEEE_LOCK:
        if _ieee_users == 0:
            cudnn = torch.backends.cudnn
            flags = cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                                deterministic=cudnn.deterministic, allow_tf32=False)
            flags.__enter__()
            _ieee_flags = flags
            _ieee_matmul = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision("highest")
        _ieee_users += 1
    try:
        yield
    finally:
        with _IEEE_LOCK:
            _ieee_users -= 1
            if _ieee_users == 0:
                flags, _ieee_flags = _ieee_flags, None
                flags.__exit__(None, None, None)
                torch.set_float32_matmul_precision(_ieee_matmul)
