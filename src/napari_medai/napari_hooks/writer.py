"""napari writers: an Image or Labels layer to NIfTI (npe2 single-layer signature).

The geometry written is the layer's world transform as napari shows it (affine @ (translate,
rotate, shear, scale)), in mm whatever length unit the layer is in (``io.units``).  While the
layer still sits where the reader put it, the source volume's affine kept in
``meta["metadata"]["affine"]`` is written instead: the same geometry, exact (it survives any
napari round trip bit for bit).  A layer moved or rescaled in napari is saved where it is shown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, MedaiError
from ..io import write_volume
from ..io.nifti import is_nifti_path
from ..io.orientation import same_place
from ..io.units import world_matrix_mm

class SaveError(OSError):
    """A MedaiError raised again for napari: napari's write_layers takes any ValueError for
    "this writer does not apply" and drops its message (a warning names no cause)."""


def write_image(path: str, data, meta: dict) -> list[str]:
    return [str(_saved(path, data, meta, is_labels=False))]


def write_labels(path: str, data, meta: dict) -> list[str]:
    return [str(_saved(path, data, meta, is_labels=True))]


def _saved(path: str, data, meta: dict, *, is_labels: bool) -> Path:
    try:
        return _write_layer(path, data, meta, is_labels=is_labels)
    except MedaiError as exc:
        raise SaveError(str(exc)) from None


def _write_layer(path: str, data, meta: dict, *, is_labels: bool) -> Path:
    path = Path(path)
    if not is_nifti_path(path):
        path = path.with_name(path.name + ".nii.gz")
    if isinstance(data, (list, tuple)):  # multiscale: save the full-resolution level
        data = data[0]
    array = np.asarray(data)
    if meta.get("rgb"):  # (y, x, 3) passed the 3D check, then failed inside the affine with numpy's error
        raise InputError(f"layer {meta.get('name', '')!r} is an RGB picture, not a volume: only 3D grayscale "
                         "layers can be saved as NIfTI")
    scale = meta.get("scale")
    if array.ndim != 3 or (scale is not None and len(scale) != 3):
        raise InputError(
            f"only 3D layers can be saved as NIfTI; layer {meta.get('name', '')!r} has shape {array.shape}"
        )
    layer_metadata = meta.get("metadata") or {}
    affine = layer_affine(meta, array.shape)
    orientation = layer_metadata.get("nifti_orientation")  # the source file's voxel order, if any
    space = _space_if_in_place(layer_metadata, affine)
    if is_labels and orientation is None:
        # a mask painted in napari knows no file: it takes the grid (and the space codes) of
        # the image it was drawn on, so that the two files pair voxel for voxel as other tools expect
        affine, orientation, space = _image_grid(array.shape, affine) or (affine, None, space)
    return write_volume(
        array,
        path,
        affine=affine,
        modality=layer_metadata.get("modality", "unknown"),
        modality_guessed=bool(layer_metadata.get("modality_guessed")),
        is_labels=is_labels,
        orientation=orientation,
        nifti_space=space,
        # the class table of a segmentation (or *New labels*) layer: saved, it opens named again
        classes=layer_metadata.get("classes") if is_labels else None,
    )


def _space_if_in_place(layer_metadata: dict, affine: np.ndarray):
    """The source file's sform/qform codes (``io.nifti``'s ``nifti_space``) while the layer is
    still where the file put it; a layer moved in napari is no longer in that space."""
    stored = layer_metadata.get("affine")
    if stored is None or np.shape(stored) != (4, 4) or not same_place(np.asarray(stored, float), affine):
        return None
    return layer_metadata.get("nifti_space")


def layer_affine(meta: dict, shape=None) -> np.ndarray:
    """The napari 4x4 affine (index -> world) of a 3D layer described by ``meta``: the stored
    source affine while it still agrees with the layer's transform and ``shape`` with the
    source's, else the layer's own transform."""
    own = _own_transform(meta)
    layer_metadata = meta.get("metadata") or {}
    stored = layer_metadata.get("affine")
    if stored is None or np.shape(stored) != (4, 4):
        return own
    source_shape = layer_metadata.get("shape")
    same_grid = shape is None or source_shape is None or tuple(source_shape) == tuple(shape)
    stored = np.asarray(stored, dtype=float)
    return stored if same_grid and same_place(stored, own) else own


def _own_transform(meta: dict) -> np.ndarray:
    """affine @ (translate, rotate, shear, scale), in mm: where napari draws the layer, its
    units (µm, cm, ...) converted by ``io.units`` (pixels, or no units, are read as mm)."""
    from napari.utils.transforms import Affine  # imported here: the module loads without napari

    data2physical = Affine(
        scale=meta.get("scale", (1.0, 1.0, 1.0)),
        translate=meta.get("translate", (0.0, 0.0, 0.0)),
        rotate=meta.get("rotate"),
        shear=meta.get("shear"),
        ndim=3,
    ).affine_matrix
    extra = meta.get("affine")
    if extra is None:
        data2world = data2physical
    else:
        extra = getattr(extra, "affine_matrix", extra)  # an Affine object or a 4x4 array
        data2world = np.asarray(extra, dtype=float) @ data2physical
    return world_matrix_mm(data2world, meta.get("units"), meta.get("name", ""))


def _image_grid(shape, affine: np.ndarray) -> tuple[np.ndarray, str | None, dict | None] | None:
    """(exact affine, file voxel order, file space codes) of an Image layer in the current
    viewer with this data shape at this place; one read from a file (with a voxel order)
    first.  None if none."""
    import napari
    from napari.layers import Image

    viewer = napari.current_viewer()
    if viewer is None:
        return None
    found = []
    for layer in viewer.layers:
        if not isinstance(layer, Image) or layer.rgb:
            continue
        data = layer.data[0] if layer.multiscale else layer.data
        if tuple(data.shape) != tuple(shape):
            continue
        meta = layer.as_layer_data_tuple()[1]
        image_affine = layer_affine(meta, shape)
        if same_place(image_affine, affine):
            image_meta = meta.get("metadata") or {}
            found.append((image_affine, image_meta.get("nifti_orientation"),
                          _space_if_in_place(image_meta, image_affine)))
    found.sort(key=lambda grid: grid[1] is None)  # stable: the first image with a voxel order
    return found[0] if found else None
