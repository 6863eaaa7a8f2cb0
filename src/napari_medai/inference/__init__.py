"""Qt-free inference engine: device and precision policy, resampling, intensity
preprocessing, sliding window with progress and cancel, and ``run_model``.

Names are imported lazily: ``from napari_medai.inference import CancelToken`` does not load
torch, so widgets can create tokens at import time.
"""

_LAZY = {
    "run_model": "engine",
    "InferenceSettings": "engine",
    "CancelToken": "cancel",
    "select_device": "device",
    "select_precision": "precision",
    "autocast": "precision",
    "run_sliding_window": "sliding_window",
    "count_windows": "sliding_window",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
