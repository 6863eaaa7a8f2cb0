"""NIfTI (.nii, .nii.gz) reading and writing with nibabel.

Reading re-orients the voxels to the display frame (io/orientation.py) without
resampling.  Writing stores the voxels and the affine unchanged (the header keeps the
affine in float32, which is why readers round affines to float32), so
read -> write -> read is bit-exact.  What the plugin knows beyond the NIfTI standard
(modality, image or label map) goes into the header's 80-character description as
``medai modality=CT kind=labels``; other programs ignore it.  The header's sform/qform
codes, which name the world space (scanner, MNI, ...) that FSL-style tools rely on, are kept
in ``Volume.metadata["nifti_space"]`` and written back to outputs on the same geometry.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from .atomic import replace_atomically
from .dtypes import rescaled, storable
from .heuristics import guess_modality, looks_like_labels, normalise_modality
from .orientation import from_display_frame, orientation_codes, to_display_frame
from .validate import check_spacing
from .volume import Volume, is_sheared, voxel_spacing

NIFTI_SUFFIXES = (".nii.gz", ".nii")
# NIFTI_INTENT_LABEL: the voxels are label indices (ITK-SNAP, 3D Slicer and this plugin set it)
INTENT_LABEL = 1002
# mm per header space unit; an unknown unit is taken as mm, as every reader does
_MM_PER_CODE = {1: 1000.0, 2: 1.0, 3: 1e-3}  # NIfTI space units: metre, mm, micron
# NIfTI's xform codes: 0 unknown, 1 scanner, 2 aligned, 3 talairach, 4 mni, 5 template
_XFORM_CODES = frozenset(range(6))
ALIGNED = 2  # what a file gets whose space nobody told us (nibabel's default too)
# A qform and an sform whose voxels lie closer than this (mm) are one affine: far above the
# float32 rounding of either, far below any voxel; tools that disagree do so by millimetres.
_SAME_AFFINE_MM = 1e-2


def is_nifti_path(path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path) -> str:
    """The file name without .nii.gz / .nii (``scan.nii.gz`` -> ``scan``); other names as they are."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_nifti(path, *, allow_slice: bool = False) -> Volume:
    """Read a 3D NIfTI file; with ``allow_slice``, also a single slice: a 2D file (y, x) or a
    3D one with one axis of size 1 (x, y, 1), read as a volume one voxel thick (for the 2D
    denoisers).  An output of a 2D file's volume is written 2D again (``write_nifti``)."""
    path = Path(path)
    quiet = _ZeroPixdimFilter()  # nibabel printed its repair of a 0 pixdim before medai's own message
    nib.imageglobals.logger.addFilter(quiet)
    img = None
    try:
        img = nib.load(str(path))
        _check_header_spacing(img, path, slice_ok=allow_slice)
        _check_claimed_size(img, path)
        data_ijk = _voxels(img)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except MemoryError:
        raise _implausible_size(img, path) or MemoryError() from None
    except InputError:
        raise
    except Exception as exc:  # any parsing failure means the file is unusable
        if _is_damaged(exc):
            # nibabel's words ("Cannot work out file type of ...") name no cause a user can act on
            raise InputError(f"{path.name} is damaged, truncated or not a NIfTI file") from None
        reason = str(exc) or type(exc).__name__
        raise InputError(f"{path.name} cannot be read: {reason}") from None
    finally:
        nib.imageglobals.logger.removeFilter(quiet)

    file_ndim = data_ijk.ndim
    data_ijk = _as_3d(data_ijk, path.name, allow_slice=allow_slice)
    nifti_affine = _affine_in_mm(img)
    spacing_ijk = np.linalg.norm(np.asarray(nifti_affine)[:3, :3], axis=0)
    try:
        check_spacing(spacing_ijk[::-1], what="check the voxel size in the file's header")
        data, affine = to_display_frame(data_ijk, nifti_affine)
        # and the spacing every task uses (Volume.spacing: on a sheared grid the distance between
        # slice planes, not the column length), so a file that opens is not refused by each task after
        check_spacing(voxel_spacing(affine[:3, :3]), what="check the voxel size and axes in the file's header")
    except InputError as exc:
        raise InputError(f"{path.name}: {exc}") from None

    description = _header_text(img.header, "descrip")
    modality, kind = _tagged_kind(description)
    modality = modality or _sidecar_modality(path)
    if kind is None and int(img.header.get("intent_code", 0)) == INTENT_LABEL:
        kind = "labels"
    if kind is None:
        kind = "labels" if modality is None and looks_like_labels(data) else "image"
    if kind == "labels" and np.issubdtype(data.dtype, np.floating):
        as_integers = _float_labels(data)  # napari's Labels layers take integers only
        data, kind = (as_integers, "labels") if as_integers is not None else (data, "image")
    guessed = modality is None and kind != "labels"  # no header or sidecar says it: from the values
    if modality is None:
        modality = "unknown" if kind == "labels" else guess_modality(data)
    classes = _classes_of(img.header) if kind == "labels" else None
    metadata = {
        **({"classes": classes} if classes else {}),
        # a modality read from the values only (io.heuristics): a CT stored without its HU rescale reads
        # as MR; the automatic model choice says so, and outputs are not tagged with the guess
        **({"modality_guessed": True} if guessed and modality != "unknown" else {}),
        "source": str(path),
        "format": "NIfTI",
        "source_orientation": orientation_codes(nifti_affine),
        # outputs written for this volume keep its file's voxel order (write_nifti's orientation)
        "nifti_orientation": orientation_codes(nifti_affine),
        "description": description,
        "nifti_space": nifti_space(img, data_ijk.shape, file_ndim),
    }
    return Volume(data, affine, modality=modality, is_labels=kind == "labels", metadata=metadata)


def _is_damaged(exc: Exception) -> bool:
    """Whether a loading error means the bytes are wrong: not a NIfTI header, a cut gzip
    stream, fewer voxel bytes than the header promises.  An OSError with an errno
    (permission denied, ...) is the system's and keeps its own words."""
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    if isinstance(exc, (ImageFileError, HeaderDataError, EOFError, zlib.error)):
        return True
    return isinstance(exc, OSError) and exc.errno is None  # gzip.BadGzipFile, nibabel's short read


def _voxels(img) -> np.ndarray:
    """The voxel values with the header's scl_slope/scl_inter applied: integer data with a
    whole-number rescale stays integer (like a DICOM series), other rescales give float32
    (nibabel alone would give float64, four times an int16 CT's memory)."""
    slope, inter = img.dataobj.slope, img.dataobj.inter
    raw = np.asanyarray(img.dataobj.get_unscaled())
    if np.iscomplexobj(raw):
        return raw  # refused by _as_3d
    if not (np.isfinite(slope) and np.isfinite(inter)):
        return raw
    return rescaled(raw, slope, inter)


def _float_labels(data: np.ndarray) -> np.ndarray | None:
    """A float label map (MONAI's SaveImage writes masks as float32) as the smallest integer type
    that holds it; None when its values are not whole numbers (then it is no label map)."""
    from .dtypes import LABEL_INTEGERS, narrowest, rounded_whole

    rounded = rounded_whole(data)
    if rounded is None or rounded.min(initial=0) < 0:
        return None
    return narrowest(rounded.astype(np.int64), LABEL_INTEGERS)


class _ZeroPixdimFilter:
    """Drops nibabel's "pixdim[1,2,3] should be non-zero; setting 0 dims to 1" while a file is
    read: ``_check_header_spacing`` refuses such a file in its own words (or its sform gives the
    geometry).  It is the logger's filter, so the note is dropped for every thread while a read is
    on; each read adds and removes its own instance, so one read ending leaves another's in place."""

    @staticmethod
    def filter(record) -> bool:
        return not str(record.getMessage()).startswith("pixdim[1,2,3] should be non-zero")


def _check_header_spacing(img, path: Path, slice_ok: bool = False) -> None:
    """nibabel repairs a zero voxel size in pixdim to 1 mm as it loads the header; every
    volume and length measured on such a file would be wrong, so the header as stored is
    read again and such a file is refused (unless an sform gives the geometry).  ``slice_ok``
    (a single slice for the 2D denoisers): an axis one voxel thick may say 0; it is taken as
    1 mm, as a lone DICOM slice without a thickness is, and nothing is measured along it."""
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as stream:
        header = type(img.header).from_fileobj(stream, check=False)
    ndim = min(int(header["dim"][0]), 3)
    pixdim = np.asarray(header["pixdim"][1 : ndim + 1], dtype=float)
    if slice_ok:
        pixdim = pixdim[np.asarray(header["dim"][1 : ndim + 1]) > 1]
    if int(header["sform_code"]) == 0 and (np.any(pixdim == 0) or not np.all(np.isfinite(pixdim))):
        what = "0" if np.any(pixdim == 0) else "NaN" if np.any(np.isnan(pixdim)) else "infinite"
        raise InputError(f"{path.name}: the header gives a voxel size of {', '.join(f'{v:g}' for v in pixdim)} "
                         f"(pixdim); a voxel size of {what} leaves the geometry unknown")


def nifti_space(img, shape, file_ndim: int = 3) -> dict:
    """The header's space codes and which of its affines gave the geometry (nibabel's rule:
    the sform when its code is set, else the qform, else pixdim alone): "both" when the two
    codes are set and their affines agree, so that an output can state both again.  A 2D file
    (``file_ndim`` 2, read with ``allow_slice``) adds ``"file_ndim": 2``, so that an output on
    its grid is written 2D as well (the key rides with the codes, which hold for this grid)."""
    sform_code, qform_code = int(img.header["sform_code"]), int(img.header["qform_code"])
    if sform_code and qform_code:
        corners = np.array([[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                            for k in (0, shape[2] - 1)], dtype=float).T
        apart = np.abs(img.get_sform() @ corners - img.get_qform() @ corners).max() * _mm_per_unit(img)
        affine_from = "both" if apart < _SAME_AFFINE_MM else "sform"
    else:
        affine_from = "sform" if sform_code else "qform" if qform_code else "pixdim"
    space = {"sform_code": sform_code, "qform_code": qform_code, "affine_from": affine_from}
    if file_ndim == 2:
        space["file_ndim"] = 2
    return space


def _xform_codes(space, sheared: bool) -> tuple[int, int]:
    """(sform_code, qform_code) to write for a volume with ``space`` (``nifti_space``'s dict).

    Each affine the input held goes out with its code; one it did not hold (or a qform that
    disagreed with the sform, whose values are not kept) gets 0 rather than a claim about a
    matrix it never had.  A volume with no codes (a phantom, an array, a file whose geometry
    came from pixdim alone) gets "aligned", as before; io.read_volume gives DICOM "scanner"."""
    default = (ALIGNED, 0 if sheared else ALIGNED)
    space = space if isinstance(space, dict) else {}
    sform_code, qform_code = space.get("sform_code"), space.get("qform_code")
    known = [isinstance(c, (int, np.integer)) and int(c) in _XFORM_CODES for c in (sform_code, qform_code)]
    if not all(known):
        return default  # none, or not what nifti_space() stores (e.g. edited layer metadata)
    affine_from = space.get("affine_from")
    if affine_from == "sform":
        qform_code = 0
    elif affine_from == "qform":
        sform_code = 0
    elif affine_from != "both":  # pixdim alone: write the geometry explicitly, as before
        return default
    if sheared:  # a qform cannot hold the shear (see write_nifti): the sform takes the code
        sform_code, qform_code = sform_code or qform_code, 0
    return (int(sform_code), int(qform_code)) if sform_code or qform_code else default


def _affine_in_mm(img) -> np.ndarray:
    """The affine, converted to millimetres when the header's space unit is metres or microns."""
    affine = np.array(img.affine, dtype=float)
    affine[:3, :] *= _mm_per_unit(img)
    return affine


def _mm_per_unit(img) -> float:
    """mm per unit of the header's space code (its xyzt_units' low 3 bits: 1 metre, 2 mm, 3 micron);
    any other code is taken as mm.  nibabel's get_xyzt_units() raised KeyError on 228 of the 256
    byte values, a traceback for a file nibabel itself loads."""
    try:
        code = int(np.asarray(img.header["xyzt_units"]).item()) & 0x07
    except (KeyError, ValueError, TypeError):  # Analyze headers have no such field
        return 1.0
    return _MM_PER_CODE.get(code, 1.0)


def _claimed_bytes(img) -> int:
    return int(np.prod(img.shape, dtype=np.float64)) * np.dtype(img.get_data_dtype()).itemsize


def _check_claimed_size(img, path: Path) -> None:
    """A .nii (uncompressed) whose header claims more voxel bytes than the file holds is damaged
    (a header of 30000³ voxels on a 3 kB file was read as "out of memory")."""
    if path.name.lower().endswith(".nii"):
        offset = int(getattr(img.dataobj, "offset", 0) or 0)  # the header's vox_offset reads 0 once loaded
        held = max(path.stat().st_size - offset, 0)
        if _claimed_bytes(img) > held:
            raise InputError(f"{path.name} is damaged, truncated or not a NIfTI file: its header claims "
                             f"{_shape_text(img)} voxels ({_size_text(_claimed_bytes(img))}), the file holds "
                             f"{_size_text(held)} of voxels")


def _implausible_size(img, path: Path) -> InputError | None:
    """For a file that ran out of memory: an InputError when its header claims over 1500 times the
    file's size (a damaged header; gzip compresses nothing so well), else None (a real large volume)."""
    if img is None:
        return None
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if _claimed_bytes(img) <= 1500 * size:  # deflate reaches about 1032:1 at most
        return None
    return InputError(f"{path.name} is damaged, truncated or not a NIfTI file: its header claims "
                      f"{_shape_text(img)} voxels ({_size_text(_claimed_bytes(img))}) from a file of {_size_text(size)}")


def _size_text(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} bytes"


def _shape_text(img) -> str:
    return " x ".join(str(int(n)) for n in img.shape)


def write_nifti(volume: Volume, path, *, orientation: str | None = None) -> Path:
    """Write ``volume`` to ``path`` (.nii or .nii.gz) atomically and return the path.

    ``orientation``: where the file's index axes point (e.g. 'RAS'); an output written with
    its input file's orientation (``Volume.metadata["nifti_orientation"]``) lies on that
    file's voxel grid, voxel for voxel.  Default: LPS, the plugin's display frame.  Either
    way the world geometry is the same, and so is its space: the sform/qform codes come from
    ``volume.metadata["nifti_space"]`` (see ``_xform_codes``)."""
    path = Path(path)
    if not is_nifti_path(path):
        raise InputError(f"a NIfTI file name must end in .nii or .nii.gz, got {path.name!r}")
    data = storable(volume.data, volume.is_labels)
    data_ijk, nifti_affine = from_display_frame(data, volume.affine, orientation or "LPS")
    space = volume.metadata.get("nifti_space")
    if isinstance(space, dict) and space.get("file_ndim") == 2 and data_ijk.shape[2] == 1:
        data_ijk = data_ijk[..., 0]  # an output of a 2D file's slice: 2D like its input file
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path.name}: the folder {path.parent} does not exist")
    img = nib.Nifti1Image(data_ijk, nifti_affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm")
    # a qform is a rotation, so it cannot hold a gantry tilt's shear; a qform without it
    # would contradict the sform by millimetres, so only the sform is stored
    sheared = is_sheared(nifti_affine)
    sform_code, qform_code = _xform_codes(space, sheared)
    img.set_sform(nifti_affine, code=sform_code)
    img.set_qform(None if sheared else nifti_affine, code=qform_code)
    kind = "labels" if volume.is_labels else "image"
    if volume.is_labels:
        img.header.set_intent("label")
        named = _classes_extension(volume.metadata.get("classes"))
        if named is not None:
            img.header.extensions.append(named)
    # a guessed modality is not written as if the file had said it: read back, it is guessed again
    said = "" if volume.metadata.get("modality_guessed") else f"modality={volume.modality} "
    img.header["descrip"] = f"medai {said}kind={kind}".encode()

    # nibabel picks the compression from the temporary file's ending
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"
    replace_atomically(path, lambda tmp: nib.save(img, str(tmp)), suffix=suffix)
    return path


def _as_3d(data: np.ndarray, name: str, allow_slice: bool = False) -> np.ndarray:
    """``data`` as a 3D array, or an InputError; ``allow_slice``: a 2D slice (y, x) is taken as
    (y, x, 1), and a 3D array may have one axis of size 1 (a single slice)."""
    if np.iscomplexobj(data):
        raise InputError(f"{name} holds complex voxels; save its magnitude as a real-valued volume")
    if data.dtype.fields is not None or not np.issubdtype(data.dtype, np.number):
        raise InputError(f"{name} holds {data.dtype} voxels (e.g. RGB); a grey-level volume is needed")
    if data.size == 0:  # nibabel hands a header with a zero dimension back as shape (0,)
        raise InputError(f"{name} holds no voxels (an empty image); the plugin works on 3D CT/MR volumes")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise InputError(
            f"{name} holds {data.shape[3]} volumes (4D, shape {data.shape}); open a single 3D volume"
        )
    if allow_slice:
        if data.ndim == 2:
            data = data[..., None]
        if data.ndim != 3 or sorted(data.shape)[1] < 2:  # at most one axis of size 1
            raise InputError(f"{name} is neither a 3D volume nor a 2D slice (shape {data.shape})")
    elif data.ndim != 3 or min(data.shape) < 2:
        raise InputError(
            f"{name} is not a 3D volume (shape {data.shape}); the plugin works on 3D CT/MR volumes"
        )
    return data


def _header_text(header, field: str) -> str:
    raw = header[field]
    value = raw.item() if hasattr(raw, "item") else raw
    if isinstance(value, bytes):
        value = value.split(b"\x00", 1)[0].decode("latin-1")
    return str(value).strip()


# A label file's class table (index -> name, colour) rides in a NIfTI "comment" extension
# (code 6) as JSON under this key: NIfTI has no field for label names, and without them a
# segmentation saved and opened again lost "1 lung, 2 nodule" (and its colours).  Other
# software skips the extension; a file without it reads as before.
CLASSES_KEY = "medai_classes"


def _classes_extension(classes):
    """The extension holding ``classes`` ({index: {"name", "color"}}), or None without any."""
    if not classes:
        return None
    table = {str(int(k)): {"name": str(v.get("name", f"class {k}")), "color": v.get("color")}
             for k, v in classes.items()}
    return nib.nifti1.Nifti1Extension("comment", json.dumps({CLASSES_KEY: table}).encode())


def _classes_of(header) -> dict[int, dict] | None:
    """The class table of a label file written by ``write_nifti``; None for any other file (an
    extension that is not ours, or not readable as ours, is left alone: it never stops a read)."""
    for extension in header.extensions:
        if extension.get_code() != 6:
            continue
        try:
            table = json.loads(extension.get_content().decode("utf-8"))[CLASSES_KEY]
            classes = {int(k): {"name": str(v["name"]), "color": _hex_color(v.get("color"))}
                       for k, v in table.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if classes:
            return classes
    return None


def _hex_color(value) -> str | None:
    """A "#rrggbb" colour from a file's class table; None for anything else (a palette colour
    is given instead: a list or a name written by other code must not stop the layer opening)."""
    return value if isinstance(value, str) and re.fullmatch(r"#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?", value) else None


def _tagged_kind(description: str) -> tuple[str | None, str | None]:
    """(modality, kind) from a ``medai modality=.. kind=..`` description, else Nones."""
    if not description.startswith("medai "):
        return None, None
    fields = dict(re.findall(r"(\w+)=(\w+)", description))
    modality, kind = fields.get("modality"), fields.get("kind")
    return (
        normalise_modality(modality) if modality else None,
        kind if kind in ("image", "labels") else None,
    )


def _sidecar_modality(path: Path) -> str | None:
    """Modality from a BIDS-style JSON sidecar (``scan.nii.gz`` -> ``scan.json``)."""
    sidecar = path.with_name(nifti_stem(path) + ".json")
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None  # no sidecar, or one we cannot parse: fall back to the heuristic
    value = meta.get("Modality") if isinstance(meta, dict) else None
    return normalise_modality(value) if value else None
