"""Layer helpers shared by the widgets (no Qt here; napari layers in, numpy out).

Rules every widget follows:

* Inputs are checked before any model runs; each problem is an InputError that names the layer.
* Outputs are NEW layers on the input's grid and in its physical space
  (:func:`geometry_kwargs`), named ``f"{input} {what}"`` (:func:`output_name`).  The plugin
  never replaces the data of a layer it did not just create, and never deletes a layer:
  when a name is taken, napari appends a suffix ("lung1 segmentation [1]").
* The one sanctioned edit of an existing layer is :func:`edit_labels`, which goes through
  the Labels layer's undo history so the user can take it back with Ctrl+Z.
"""

from __future__ import annotations

import warnings

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.validate import check_spacing, check_volume

# Metadata the readers put on layers that describes where the voxels are; outputs keep it
# so the NIfTI writer saves them with the affine of the volume they came from.
# nifti_orientation: the source file's voxel order, so that an output saved from napari lies on
# that file's grid; nifti_space: its sform/qform codes (scanner, MNI, ...), written back while
# the output sits where the file put it (napari_hooks.writer)
# shape: the grid those keys hold for (an output lies on its input's grid, voxel for voxel)
_GEOMETRY_METADATA = ("affine", "nifti_affine", "spacing", "modality", "modality_guessed", "nifti_orientation",
                      "nifti_space", "shape")
# The modality of an output whose values are not the input's intensities (a probability, a
# difference), as ``medai segment --probability`` writes it: saved from napari, such a layer must
# not reopen with the CT window, nor be taken for a CT by the automatic model choice.
UNKNOWN_MODALITY = "unknown"


def _is_image(layer) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image)


def _is_labels(layer) -> bool:
    from napari.layers import Labels

    return isinstance(layer, Labels)


def _describe(layer) -> str:
    # __class__, not type(): widgets get layers wrapped in napari's PublicOnlyProxy
    return f"'{layer.name}' is a {layer.__class__.__name__} layer"


def layer_world_mm(layer) -> np.ndarray:
    """4x4 data -> world matrix of a layer, in mm: scale, rotate, shear, translate, then the
    ``affine``, with the layer's units converted (``io.units``: pixels are read as mm)."""
    from napari.utils.transforms import Affine

    from ..io.units import world_matrix_mm

    own = Affine(scale=layer.scale, translate=layer.translate, rotate=layer.rotate, shear=layer.shear)
    world = layer.affine.compose(own).affine_matrix
    return world_matrix_mm(world, getattr(layer, "units", None), layer.name)  # no units: napari < 0.5


def layer_spacing(layer) -> tuple[float, ...]:
    """Voxel size in mm along each data axis.

    Taken from the layer's full data-to-world transform (:func:`layer_world_mm`), so an
    oblique volume whose geometry lives in ``affine`` is measured right, and a layer in µm
    is measured in mm.
    """
    from ..io.volume import voxel_spacing

    return voxel_spacing(layer_world_mm(layer)[:-1, :-1])


def image_source(layer) -> tuple[Any, tuple[float, float, float]]:
    """(data, spacing) of a 3D grayscale Image layer, after the cheap checks.

    Only metadata is looked at, so this is fast enough for the Qt thread; the voxel-level
    checks (constant, NaN, ...) are in :func:`check_content`, which widgets run in the worker.
    ``data`` is the layer's own array (level 0 of a multiscale pyramid), not a copy.
    """
    if layer is None:
        raise InputError("no image selected: open a CT or MR volume first")
    if not _is_image(layer):
        raise InputError(f"select an image layer: {_describe(layer)}")
    if layer.rgb:
        raise InputError(f"'{layer.name}' is an RGB image; this needs a grayscale CT or MR volume")
    data = layer.data[0] if layer.multiscale else layer.data  # level 0 = full resolution
    if data.ndim != 3:
        raise InputError(
            f"'{layer.name}' has {data.ndim} dimension(s) {tuple(data.shape)}; "
            "this needs a 3D volume (z, y, x)"
        )
    spacing = layer_spacing(layer)  # a units problem names the layer itself
    try:
        spacing = check_spacing(spacing, ndim=3)
    except InputError as exc:
        raise InputError(f"'{layer.name}': {exc}") from None
    return data, spacing


def check_content(data, spacing, name: str) -> np.ndarray:
    """Voxel-level checks (empty, constant, NaN/inf, dtype) as a numpy array; may be slow."""
    return check_volume(np.asarray(data), spacing, what=f"image '{name}'")


def layer_to_volume(layer) -> tuple[np.ndarray, tuple[float, float, float]]:
    """(data (z, y, x) as a numpy array, spacing in mm) of an Image layer, fully checked."""
    data, spacing = image_source(layer)
    return check_content(data, spacing, layer.name), spacing


def geometry_kwargs(layer) -> dict[str, Any]:
    """Layer keyword arguments that put an output on the input's grid in world space."""
    kwargs = {
        "scale": tuple(layer.scale),
        "translate": tuple(layer.translate),
        "rotate": np.array(layer.rotate),
        "shear": np.array(layer.shear),
        "affine": np.array(layer.affine.affine_matrix),
    }
    if hasattr(layer, "units"):  # napari >= 0.5
        kwargs["units"] = tuple(layer.units)
        kwargs["axis_labels"] = tuple(layer.axis_labels)
    return kwargs


def output_name(layer, what: str) -> str:
    return f"{layer.name} {what}"


def output_metadata(layer, *, modality: str | None = None, **extra) -> dict[str, Any]:
    """Metadata for an output: the input's geometry keys plus where it came from.

    ``modality``: replaces the input's, e.g. UNKNOWN_MODALITY for an output in other units than
    the input's; None keeps the input's (labels, a denoised image)."""
    meta = {k: layer.metadata[k] for k in _GEOMETRY_METADATA if k in layer.metadata}
    if modality is not None:
        meta["modality"] = modality
        meta.pop("modality_guessed", None)  # stated now, not guessed
    meta["source_layer"] = layer.name
    meta.update(extra)
    return meta


def output_layer_data(data, layer, what: str, layer_type: str, *, modality: str | None = None,
                      **kwargs) -> tuple:
    """A napari layer-data tuple for an output of ``layer`` (same geometry, derived name).

    ``kwargs`` go to the layer constructor (colormap, opacity, ...); ``metadata`` in it is
    merged with :func:`output_metadata`, which also takes ``modality``.
    """
    extra_meta = kwargs.pop("metadata", {})
    data = np.asarray(data)
    if layer_type in ("image", "labels") and data.shape != _grid_shape(layer):
        # a bug in a task, not a user error: outputs always live on the input grid
        raise ValueError(f"output shape {data.shape} is not the input grid {_grid_shape(layer)}")
    meta = {
        **geometry_kwargs(layer),
        "name": output_name(layer, what),
        "metadata": output_metadata(layer, modality=modality, **extra_meta),
        **kwargs,
    }
    return data, meta, layer_type


def _grid_shape(layer) -> tuple[int, ...]:
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return tuple(data.shape)


def add_layers(viewer, layer_data: Iterable[tuple]) -> list:
    """Add layer-data tuples as NEW layers.  All layers are built before the first is added,
    so a bad tuple leaves the viewer as it was.  napari makes each added layer active; no
    plugin picker on the viewer follows that (the user's chosen image stays chosen)."""
    from napari.layers import Layer

    from ._picker import plugin_adds_layers  # _picker imports this module

    layers = [Layer.create(data, meta, layer_type) for data, meta, layer_type in layer_data]
    with plugin_adds_layers(viewer):
        for layer in layers:
            viewer.layers.append(layer)  # napari suffixes a taken name; nothing is replaced
    return layers


def edit_labels(layer, mask, value: int, origin=None) -> int:
    """Set ``layer.data[mask] = value`` as ONE undoable step; returns voxels changed.

    ``origin``: where ``mask``'s first voxel lies in the layer, when the mask covers only a
    box of it (a finding's mask); None: the mask covers the whole layer.

    napari 0.9: ``Labels.data_setitem(indices, value)`` writes the old values to the undo
    history, and ``Labels.block_history()`` groups everything inside it into a single item,
    so one Ctrl+Z (``layer.undo()``) reverts the whole edit.
    """
    if not _is_labels(layer):
        raise InputError(f"only a Labels layer can be edited: {_describe(layer)}")
    mask = np.asarray(mask, dtype=bool)
    shape = tuple(layer.data.shape)
    origin = (0,) * len(shape) if origin is None else tuple(int(o) for o in origin)
    if (mask.ndim != len(shape) or len(origin) != len(shape)
            or any(o < 0 or o + m > s for o, m, s in zip(origin, mask.shape, shape))):
        where = f" at {origin}" if any(origin) else ""
        raise InputError(f"the edit has shape {mask.shape}{where}, which does not fit '{layer.name}' ({shape})")
    if getattr(layer, "multiscale", False):  # data[box] on napari's MultiScaleData raised a TypeError
        raise InputError(f"'{layer.name}' is a multiscale pyramid, which cannot be edited here: add the result as "
                         "a new layer instead")
    data = layer.data
    # napari's data_setitem would fail half-way with numpy's or dask's own words; other array
    # types napari writes to (zarr, tensorstore) are left to it
    read_only = isinstance(data, np.ndarray) and not data.flags.writeable
    if read_only or type(data).__module__.split(".")[0] == "dask":
        kind = "read-only" if read_only else "a dask array (computed lazily, never written)"
        raise InputError(f"'{layer.name}' cannot be edited here: its data is {kind}. Add the result as a new "
                         "layer instead, or give the layer a writable in-memory copy of its data first")
    box = tuple(slice(o, o + m) for o, m in zip(origin, mask.shape))
    local = np.nonzero(mask & (np.asarray(data[box]) != value))
    indices = tuple(axis + o for axis, o in zip(local, origin))
    if indices[0].size == 0:
        return 0
    if not layer.visible:
        # napari does not re-slice a hidden layer, and data_setitem updates the view of the slice
        # last shown: after a move to another slice it failed there, the voxels written and no undo
        # step saved (found by an audit helper)
        layer.set_view_slice()
    before = np.asarray(data[indices])  # indexing by arrays of voxels already copies
    staged = _staged_history(layer)
    already = len(staged) if staged is not None else 0  # a stroke the user is painting stays staged
    try:
        with layer.block_history():
            layer.data_setitem(indices, value)
    except Exception as exc:  # all or nothing: what was written goes back, and no half step stays staged
        restored = _undo_failed_edit(layer, indices, before, staged, already)
        said = "nothing was changed" if restored else "part of the edit may remain: check the layer"
        raise InputError(f"'{layer.name}' could not be edited ({type(exc).__name__}: {exc}); {said}") from None
    return int(indices[0].size)


def _staged_history(layer):
    """napari 0.9's list of the layer's uncommitted history atoms (``Labels._staged_history``), or
    None.  A private name: through the viewer proxy widgets get, napari warns (FutureWarning) and
    may refuse it from 0.10 (AttributeError: then None)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        staged = getattr(layer, "_staged_history", None)
    return staged if staged is not None and hasattr(staged, "__delitem__") else None


def _undo_failed_edit(layer, indices, before, staged, already: int) -> bool:
    """Put ``before`` back at ``indices`` where the failed edit wrote, and drop the atoms it staged
    (napari would commit them with the next edit); whether the data are as before."""
    restored = True
    try:
        if not np.array_equal(np.asarray(layer.data[indices]), before):  # a store that refused the write: as it was
            layer.data[indices] = before
    except Exception:  # noqa: BLE001 - a store that takes no write back (read-only zarr): said to the reader
        restored = False
    if staged is not None:
        del staged[already:]
    layer.refresh()
    return restored
