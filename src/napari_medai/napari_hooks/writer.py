"""napari writers: an Image or Labels layer to NIfTI (npe2 single-layer signature).

The geometry written is, in order of preference, the source volume's affine kept in
``meta["metadata"]["affine"]`` (exact, survives any napari round trip), else the layer's
own transform (affine @ (rotate, shear, scale, translate)), which napari builds from
the same numbers the reader gave it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import write_volume
from ..io.nifti import is_nifti_path


def write_image(path: str, data, meta: dict) -> list[str]:
    return [str(_write_layer(path, data, meta, is_labels=False))]


def write_labels(path: str, data, meta: dict) -> list[str]:
    return [str(_write_layer(path, data, meta, is_labels=True))]


def _write_layer(path: str, data, meta: dict, *, is_labels: bool) -> Path:
    path = Path(path)
    if not is_nifti_path(path):
        path = path.with_name(path.name + ".nii.gz")
    if isinstance(data, (list, tuple)):  # multiscale: save the full-resolution level
        data = data[0]
    array = np.asarray(data)
    if array.ndim != 3:
        raise InputError(
            f"only 3D layers can be saved as NIfTI; layer {meta.get('name', '')!r} has shape {array.shape}"
        )
    layer_metadata = meta.get("metadata") or {}
    return write_volume(
        array,
        path,
        affine=layer_affine(meta),
        modality=layer_metadata.get("modality", "unknown"),
        is_labels=is_labels,
        orientation=layer_metadata.get("nifti_orientation"),  # the source file's voxel order, if any
    )


def layer_affine(meta: dict) -> np.ndarray:
    """The napari 4x4 affine (index -> world) of a 3D layer described by ``meta``."""
    stored = (meta.get("metadata") or {}).get("affine")
    if stored is not None and np.shape(stored) == (4, 4):
        return np.asarray(stored, dtype=float)
    from napari.utils.transforms import Affine  # napari is only needed on this path

    data2physical = Affine(
        scale=meta.get("scale", (1.0, 1.0, 1.0)),
        translate=meta.get("translate", (0.0, 0.0, 0.0)),
        rotate=meta.get("rotate"),
        shear=meta.get("shear"),
        ndim=3,
    ).affine_matrix
    extra = meta.get("affine")
    if extra is None:
        return data2physical
    extra = getattr(extra, "affine_matrix", extra)  # an Affine object or a 4x4 array
    return np.asarray(extra, dtype=float) @ data2physical
