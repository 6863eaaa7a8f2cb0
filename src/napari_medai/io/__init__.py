"""Reading and writing medical volumes: NIfTI files and DICOM series.

``read_volume`` returns a :class:`Volume` in the display frame described in io/volume.py
(array axes (z, y, x), world (S, P, L) mm); ``write_volume`` writes NIfTI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .dicom import is_dicom_file, read_dicom_series
from .nifti import is_nifti_path, read_nifti, write_nifti
from .orientation import same_place
from .validate import check_spacing
from .volume import Volume, napari_affine_from_nifti, nifti_affine_from_napari

# DICOM's patient coordinates are the scanner's: NIfTI outputs of a series say so in both
# codes, as dcm2niix's do (write_nifti; a NIfTI input keeps its own codes)
DICOM_SPACE = {"sform_code": 1, "qform_code": 1, "affine_from": "both"}

__all__ = [
    "Volume",
    "read_volume",
    "write_volume",
    "is_supported_path",
    "napari_affine_from_nifti",
    "nifti_affine_from_napari",
]

SUPPORTED = "a .nii / .nii.gz file, a DICOM file, or a folder holding one DICOM series"


def is_supported_path(path) -> bool:
    """Cheap check (no pixel data read) used by the napari reader to claim a path."""
    path = Path(path)
    if is_nifti_path(path):
        return True
    if path.is_dir():
        return _folder_has_dicom(path)
    return is_dicom_file(path)


def read_volume(path, *, allow_slice: bool = False) -> Volume:
    """Read a NIfTI file or a DICOM series (a folder, or any one file of the series).

    ``allow_slice``: a single slice (a 2D NIfTI, a NIfTI or DICOM series one slice thick) is
    read as a volume one voxel thick instead of refused; only the slice-wise 2D denoisers use
    it, every other task needs a 3D volume."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if is_nifti_path(path):
        return read_nifti(path, allow_slice=allow_slice)
    if path.is_dir() or is_dicom_file(path):
        volume = read_dicom_series(path, allow_slice=allow_slice)
        volume.metadata.setdefault("nifti_space", dict(DICOM_SPACE))
        return volume
    raise InputError(f"{path.name} is not a supported format; open {SUPPORTED}")


def write_volume(volume_or_array, path, affine=None, *, modality=None, is_labels=None,
                 orientation: str | None = None, nifti_space: dict | None = None,
                 classes: dict | None = None, modality_guessed: bool | None = None) -> Path:
    """Write a :class:`Volume` or a (z, y, x) array to NIfTI and return the path.

    ``affine`` is the napari affine (index (z, y, x) -> world (S, P, L) mm); it overrides
    the volume's own.  An array without an affine is written with 1 mm voxels at the
    origin.  ``modality`` and ``is_labels`` override what the volume says.  ``orientation``
    (e.g. 'RAS'): the file's voxel order, for an output that must lie on its input file's
    grid (pass the input's ``metadata["nifti_orientation"]``); a Volume read from NIfTI keeps
    its own by default, anything else is written LPS.  ``nifti_space``: the sform/qform codes
    (a volume's ``metadata["nifti_space"]``); a Volume keeps its own while its affine is kept,
    and anything else is written "aligned".  ``classes`` ({index: {"name", "color"}}; a label
    Volume's ``metadata["classes"]`` by default): a label file's class table, stored in the file
    and read back by ``read_volume``.  ``modality_guessed`` (a Volume's
    ``metadata["modality_guessed"]`` when its modality is kept): the modality was guessed from the
    values, so the file does not state it.
    """
    if isinstance(volume_or_array, Volume):
        vol = volume_or_array
        data, base_affine = vol.data, vol.affine
        if modality_guessed is None:
            modality_guessed = modality is None and bool(vol.metadata.get("modality_guessed"))
        modality = vol.modality if modality is None else modality
        is_labels = vol.is_labels if is_labels is None else is_labels
        orientation = orientation or vol.metadata.get("nifti_orientation")
        if nifti_space is None and (affine is None or same_place(affine, base_affine)):
            nifti_space = vol.metadata.get("nifti_space")  # a space code holds for its geometry only
        classes = vol.metadata.get("classes") if classes is None else classes
    else:
        data, base_affine = volume_or_array, np.eye(4)
    data = np.asarray(data)
    if data.ndim != 3:
        raise InputError(f"only 3D volumes (z, y, x) can be saved as NIfTI; got shape {data.shape}")
    out = Volume(
        data,
        base_affine if affine is None else affine,
        modality=modality or "unknown",
        is_labels=bool(is_labels),
        metadata={**({"nifti_space": nifti_space} if nifti_space else {}),
                  **({"classes": classes} if classes and is_labels else {}),
                  **({"modality_guessed": True} if modality_guessed else {})},
    )
    check_spacing(out.spacing, what="check the layer's scale and affine")
    return write_nifti(out, path, orientation=orientation)


def _folder_has_dicom(folder: Path, probe: int = 20) -> bool:
    """Whether any of the first ``probe`` candidate files of ``folder`` is DICOM.  Hidden files
    (macOS's ``._IM0001`` copies, ``.DS_Store``) and a DICOMDIR index are no candidates: a
    cohort folder with a DICOMDIR at its root is a folder of cases, not one series."""
    candidates = (f for f in sorted(folder.iterdir())
                  if not f.name.startswith(".") and f.name.upper() != "DICOMDIR")
    for count, file in enumerate(candidates):
        if count >= probe:
            return False
        if is_dicom_file(file):
            return True
    return False
