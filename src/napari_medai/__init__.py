"""napari-medai: lesion detection, segmentation and GAN denoising for CT and MR in napari.

The Python API is importable without Qt or a viewer::

    from napari_medai import read_volume, segment, detect, denoise

Heavy modules (torch, MONAI) load on first use so that napari starts fast.
"""

__version__ = "0.1.0"

__all__ = ["read_volume", "write_volume", "segment", "detect", "denoise", "make_chest_ct", "__version__"]

_LAZY = {
    "read_volume": ("napari_medai.io", "read_volume"),
    "write_volume": ("napari_medai.io", "write_volume"),
    "segment": ("napari_medai.api", "segment"),
    "detect": ("napari_medai.api", "detect"),
    "denoise": ("napari_medai.api", "denoise"),
    "make_chest_ct": ("napari_medai.phantoms", "make_chest_ct"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'napari_medai' has no attribute {name!r}")
