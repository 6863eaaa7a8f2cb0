"""Model cards, the built-in registry and loading of built-in, bundle and TorchScript models.

Names are imported lazily so that ``import napari_medai.models`` does not load torch.
"""

_LAZY = {
    "ModelCard": "card",
    "load_card": "card",
    "save_card": "card",
    "list_models": "registry",
    "get_card": "registry",
    "save_builtin": "registry",
    "build_network": "networks",
    "LoadedModel": "loading",
    "load_model": "loading",
    "load_bundle": "bundle",
    "load_torchscript": "torchscript",
    "save_torchscript": "torchscript",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
