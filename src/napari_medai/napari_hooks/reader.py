"""napari reader: NIfTI files and DICOM series become Image or Labels layers."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..io import Volume, is_supported_path, read_volume
from ..io.dicom import series_uid_of
from ..io.nifti import is_nifti_path

# A lung-friendly CT window in HU (from air to soft tissue); users change it in napari.
CT_CONTRAST_LIMITS = (-1000.0, 400.0)
MR_PERCENTILES = (0.5, 99.5)
# A Volume's world is patient millimetres on its three axes (io/volume.py); napari's scale bar
# and status bar read the unit from the layer, not the scale (pixels when none is given).
# Added here, not in Volume.napari_geometry, which stays the transform alone (scale/translate
# or affine, as documented); the readers refuse anything but 3D, so three units match ndim.
MM_UNITS = ("mm", "mm", "mm")
# napari's File > Open and drag-and-drop call the reader once per selected file: the files of
# one DICOM series picked together would give one full copy of the volume each.  A series
# returned less than this many seconds ago, whose layer is still in the viewer, is
# skipped (npe2's "read, no layers"); a deliberate reopen a little later, after closing that
# layer or from code without a viewer reads it again.
REPEAT_WINDOW_S = 5.0
# (folder, SeriesInstanceUID, folder mtime) -> time.monotonic() when its last call ended
_recent_series: dict[tuple, float] = {}


def get_reader(path):
    """Return a reader for ``path`` (a path or a list of paths) if every path is supported."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(is_supported_path(p) for p in paths):
        return None
    return read_paths


def read_paths(path) -> list[tuple]:
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers, seen_series = [], set()
    for p in map(Path, paths):
        series = None if is_nifti_path(p) or p.is_dir() else _series_key(p)
        if series is not None:
            # Several files picked from one DICOM series are read once, as one volume,
            # whether napari passes them in one call (stack) or one call per file.
            if series in seen_series or _returned_just_now(series):
                _recent_series[series] = time.monotonic()
                continue
            seen_series.add(series)
        default_name = layer_name(p if is_nifti_path(p) or p.is_dir() else p.parent)
        layers.append(volume_layer_data(read_volume(p), default_name=default_name))
        if series is not None:
            _recent_series[series] = time.monotonic()  # after the read: a slow read is no gap
    return layers or [(None,)]  # napari's sentinel for "read, nothing to add"


def _series_key(file: Path) -> tuple:
    """Which series a DICOM file belongs to (its header only is read), and the state of its
    folder: a file added to or removed from the folder makes it a different read."""
    folder = file.parent.resolve()
    return folder, series_uid_of(file), folder.stat().st_mtime_ns


def _returned_just_now(series: tuple) -> bool:
    """Whether ``series`` was returned in the current run of reader calls (one less than
    ``REPEAT_WINDOW_S`` after the last) and is still shown.  The window runs from the run's last
    call, not from the series' own read: files of two series interleaved in one folder, one of
    them taking longer than the window to read, read the other once per file again (a reviewer's
    finding)."""
    now = time.monotonic()
    if not _recent_series or now - max(_recent_series.values()) > REPEAT_WINDOW_S:
        _recent_series.clear()  # the last run ended a while ago: the dict stays small
        return False
    return series in _recent_series and _still_shown(series)


def _still_shown(series: tuple) -> bool:
    """Whether a layer of the current viewer is this series with only layers this reader just
    gave above it: napari adds each file's layers before it reads the next file, so a per-file
    call sees the layer its series' first file gave, and, for files of two series interleaved in
    one folder (IM0000 of one, IM0001 of the other...), the other series' layer above it (only the
    newest layer was compared, and each series was read once per file: an audit helper's
    finding).  A layer the user added since, or a layer closed since, makes it a new read.
    Without a viewer (npe2 or the reader called from code) nothing is skipped: only napari calls
    the reader once per file.  The reader cannot tell which viewer it reads into; napari's
    current one is assumed."""
    import napari

    viewer = napari.current_viewer()
    if viewer is None:
        return False
    recent = {(folder, uid) for folder, uid, _ in _recent_series}
    for layer in reversed(viewer.layers):  # from the newest: an older copy below other layers is no match
        shown = _shown_series(layer)
        if shown == series[:2]:
            return True
        if shown not in recent:  # a layer the user (or a widget) added since
            return False
    return False


def _shown_series(layer) -> tuple:
    """(folder, series UID) of a layer this reader gave (None, None for any other)."""
    uid = layer.metadata.get("series_instance_uid")
    source = layer.metadata.get("source")
    return (Path(str(source)).resolve(), uid) if uid and source else (None, None)


def layer_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def volume_layer_data(vol: Volume, default_name: str = "volume", name: str | None = None) -> tuple:
    """LayerData tuple (data, kwargs, "image" | "labels") for a volume."""
    meta = {
        "name": name or vol.metadata.get("series_description") or default_name,
        "metadata": vol.layer_metadata(),
        **vol.napari_geometry(),
        "units": MM_UNITS,
    }
    if vol.is_labels:
        classes = vol.metadata.get("classes")
        if classes:  # a label file that names its classes: coloured and named as the widgets draw them
            from .label_classes import named_labels

            meta.update(named_labels(classes))
        return vol.data, meta, "labels"
    meta["colormap"] = "gray"
    meta["contrast_limits"] = contrast_limits(vol)
    return vol.data, meta, "image"


def contrast_limits(vol: Volume) -> tuple[float, float]:
    """CT: a fixed lung-friendly window; others: the 0.5-99.5 percentiles."""
    if vol.modality == "CT":
        return CT_CONTRAST_LIMITS
    data = vol.data
    step = max(1, data.size // 2_000_000)  # percentiles of a 2M-voxel sample are enough
    sample = data.ravel()[::step]
    if np.issubdtype(data.dtype, np.floating):
        # NaN or infinite voxels (a statistical map's background) would make the range NaN
        # and napari would show nothing: the window comes from the voxels that hold values
        sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            return 0.0, 1.0
    lo, hi = np.percentile(sample, MR_PERCENTILES)
    if hi <= lo:
        values = data[np.isfinite(data)] if np.issubdtype(data.dtype, np.floating) else data
        lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        hi = lo + 1.0  # constant image: napari needs an increasing range
    return float(lo), float(hi)
