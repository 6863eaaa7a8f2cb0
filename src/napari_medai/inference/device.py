"""Where a model runs: CUDA when present, else CPU; Apple MPS only for 2D networks."""

from __future__ import annotations

import torch

from ..errors import InputError


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(preference: str | torch.device | None = "auto", spatial_dims: int = 3) -> torch.device:
    """``"auto"``: CUDA if available, else MPS for 2D networks (Conv3d is not supported
    there), else CPU.  Any other value ("cpu", "cuda", "cuda:1", "mps") is an override that
    is checked against what this machine has."""
    if isinstance(preference, torch.device):
        preference = str(preference)
    if preference is not None and not isinstance(preference, str):  # device=0 read as "auto", 1 failed
        raise InputError(f"device must be text (auto, cpu, cuda, cuda:N or mps), got {preference!r}")
    choice = (preference or "auto").strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if spatial_dims == 2 and mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise InputError(f"unknown device '{preference}': use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("a CUDA GPU was requested but none is available; use 'auto' or 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"GPU {device.index} was requested but only {torch.cuda.device_count()} exist(s)")
    elif device.type == "mps":
        if not mps_available():
            raise InputError("Apple MPS was requested but is not available on this machine")
        if spatial_dims != 2:
            raise InputError("Apple MPS cannot run 3D networks (no 3D convolutions there); use 'cpu'")
    elif device.type != "cpu":
        raise InputError(f"unsupported device '{preference}': use auto, cpu, cuda, cuda:N or mps")
    return device


def release_memory(device) -> None:
    """Give a failed or cancelled run's memory back: Python's garbage first (tensors held in
    reference cycles), then CUDA's cache of freed blocks.  Call it outside the ``except`` block,
    whose traceback still holds the failed frames' tensors."""
    import gc

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
