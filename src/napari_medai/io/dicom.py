"""Reading one DICOM series (a folder of single-frame slices) with pydicom.

Slices are ordered by their ImagePositionPatient projected on the slice normal (the
cross product of the two ImageOrientationPatient direction cosines), never by file name
or InstanceNumber.  RescaleSlope/Intercept are applied so CT comes out in Hounsfield
units; integer rescales keep an integer array (int16 when the values fit).  Patient
identifiers are not copied into the volume's metadata.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ..errors import InputError
from .dtypes import rescaled
from .heuristics import normalise_modality
from .orientation import orientation_codes, to_display_frame
from .validate import check_spacing
from .volume import Volume

# DICOM patient coordinates are LPS; NIfTI's are RAS: flip the first two axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Two slices closer than this along the normal are at the same place (mm).
_SAME_POSITION_MM = 1e-3
# How far a slice may lie off an even stack: positions written to 0.1 mm are each up to 0.05 mm
# off, and the line through the rounded first and last positions as much again
POSITION_ROUNDING_MM = 0.15
# File names that say "DICOM" (.ima: Siemens); napari.yaml's reader patterns list the same.
DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")


def is_dicom_file(path) -> bool:
    """True for a file with the DICOM preamble ('DICM' at byte 128), a DICOM name (.dcm, .ima,
    .dicom), or a bare DICOM data set (no preamble: its first element is a group-0008 tag)."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or _bare_start(head)


def _bare_start(head: bytes) -> bool:
    return len(head) >= 4 and head[:2] == b"\x08\x00"  # group 0x0008, little endian


def read_dicom_series(path, *, allow_slice: bool = False) -> Volume:
    """Read the series in folder ``path``; given a file, read the series that file belongs to.

    ``allow_slice``: a series of one slice is read as a volume one slice thick (its thickness:
    SpacingBetweenSlices, else SliceThickness, else 1 mm) instead of refused."""
    path = Path(path)
    if path.is_file():
        folder, wanted = path.parent, series_uid_of(path)
    else:
        folder, wanted = path, None
    slices, unreadable = _image_datasets(folder)
    try:
        if not slices:
            raise InputError(f"no DICOM images were found in {folder}")
        series = _pick_series(slices, wanted, folder)
        if not series:  # the file given is no slice of an image series
            raise InputError(f"{path.name} is not an image slice ({_what_it_is(path)}); "
                             "open an image file of the series, or its folder")
        return _series_volume(series, folder, allow_slice)
    except InputError as exc:
        if not unreadable:
            raise
        if path.is_file() and path.name in unreadable:  # the file given is itself the damaged one
            raise InputError(f"{path.name} is damaged, truncated or not a DICOM file") from None
        # a truncated or damaged slice is the likely cause of a gap: name it
        names = ", ".join(unreadable[:5]) + (f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
        raise InputError(f"{exc}. {len(unreadable)} file(s) there look like DICOM but could not be read "
                         f"(damaged or truncated?): {names}") from None


def _what_it_is(path: Path) -> str:
    """A DICOM file's kind in words, from its SOP class (header only)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - any failure: the file cannot say what it is
        return "unreadable"
    name = _sop_class_name(ds) or ""
    if name and "Image Storage" not in name:
        return name
    return "no pixel data or no series UID: damaged or truncated?"


def series_uid_of(path) -> str:
    """SeriesInstanceUID of one DICOM file (its header only is read)."""
    path = Path(path)
    try:
        return _series_uid(_dcmread(path, stop_before_pixels=True))
    except (InvalidDicomError, EOFError):
        # pydicom's text is for programmers ("Use force=True to force reading")
        raise InputError(f"{path.name} is damaged, truncated or not a DICOM file") from None
    except OSError as exc:  # permissions, a vanished file: the system's words say it
        raise InputError(f"{path.name} cannot be read: {exc.strerror or exc}") from None


def _series_uid(ds) -> str:
    return str(ds.get("SeriesInstanceUID", "(no SeriesInstanceUID)"))


def _image_datasets(folder: Path) -> tuple[list, list[str]]:
    """Every DICOM file in ``folder`` (not its sub-folders) that holds an image, and the names
    of the files that look like DICOM but could not be read."""
    found, unreadable = [], []
    for file in sorted(folder.iterdir()):
        if not file.is_file() or file.name.startswith("."):
            continue
        try:
            ds = _dcmread(file)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            if is_dicom_file(file):  # a DICOM preamble or a .dcm name: damaged, not foreign
                unreadable.append(file.name)
            continue  # not DICOM (README, DICOMDIR index is skipped below), or unreadable
        if "PixelData" in ds and "Rows" in ds and "Columns" in ds:
            found.append(ds)
        elif _cut_short(ds):
            unreadable.append(file.name)
    return found, unreadable


# The elements the reader uses.  pydicom parses an element when it is first read, so a damaged
# one (a garbled VR, a length running past the end) raised NotImplementedError, struct.error and
# the like deep in the reader, as a traceback; reading them at once makes it a damaged file.
USED_TAGS = ("SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "SeriesNumber", "SeriesDescription", "Modality",
             "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "ImagePositionPatient",
             "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept", "WindowCenter",
             "WindowWidth", "InstanceNumber", "BitsAllocated", "BitsStored", "PixelRepresentation",
             "PhotometricInterpretation", "SliceThickness", "SpacingBetweenSlices")


def _dcmread(file: Path, stop_before_pixels: bool = False):
    """The dataset in ``file``, its used elements parsed (USED_TAGS): InvalidDicomError for a file
    that is not DICOM or is damaged, OSError where the system cannot read it."""
    try:
        ds = _read_dataset(file, stop_before_pixels)
        for tag in USED_TAGS:
            ds.get(tag)
    except (InvalidDicomError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on a cut or garbled file
        raise InvalidDicomError(str(exc)) from None
    return ds


def _read_dataset(file: Path, stop_before_pixels: bool = False):
    """The dataset in ``file``.  Files written without the 128-byte preamble and 'DICM' (older
    scanners and some exports) are still DICOM when their first element is a group-0008 tag:
    they are read as such; anything else without the preamble is not DICOM."""
    try:
        return pydicom.dcmread(file, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        if not _starts_like_bare_dicom(file):
            raise
    try:
        ds = pydicom.dcmread(file, force=True, stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on a foreign file
        raise InvalidDicomError(str(exc)) from None
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        # the encoding pydicom found is the transfer syntax; the pixel decoder asks for it
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

        implicit, little = ds.original_encoding
        ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return ds


def _starts_like_bare_dicom(file: Path) -> bool:
    try:
        with open(file, "rb") as fh:
            return _bare_start(fh.read(4))
    except OSError:
        return False


def _cut_short(ds) -> bool:
    """A file pydicom read up to where it ends, with no pixel data, that says it is an image
    (or says nothing of what it is): a slice cut short.  DICOMDIR indexes, reports and other
    non-image objects name their own SOP class and are not counted."""
    name = _sop_class_name(ds)
    return name is None or "Image Storage" in name


def _undecodable_why(ds, exc: Exception) -> str:
    """Why pixel data cannot be decoded, in one line: a compression with no decoder installed
    (pydicom's own text lists every missing plugin on lines of their own), else its first line."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if syntax is not None and "missing dependencies" in str(exc):  # (is_compressed raises on a private syntax)
        name = syntax.name
        package = ("pyjpegls" if "JPEG-LS" in name else "pylibjpeg pylibjpeg-openjpeg" if "2000" in name
                   else "pylibjpeg pylibjpeg-libjpeg" if "JPEG" in name else "python-gdcm")
        return f"({name}: no decoder for it is installed; pip install {package}, then open it again)"
    return f"(a damaged or truncated file, or a compression whose decoder is not installed): {first}"


def _sop_class_name(ds) -> str | None:
    """The SOP class a file names, in words ("CT Image Storage", "Basic Text SR Storage"), from
    the data set or its file meta; None when it names none, or none DICOM knows (a UID cut short,
    "1", named a truncated slice "not an image slice (1)")."""
    sop = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    if sop is None:
        return None
    name = str(getattr(sop, "name", "") or "")
    if name and name != str(sop):
        return name
    # a UID DICOM does not list: a vendor's own class (Siemens' CSA non-image objects) in a file
    # read whole, or a UID cut short in a file that ends before its series UID
    return str(sop) if "SeriesInstanceUID" in ds and getattr(sop, "is_valid", False) else None


def _pick_series(slices: list, wanted: str | None, folder: Path) -> list:
    counts = Counter(_series_uid(ds) for ds in slices)
    if wanted is None:
        if len(counts) > 1:
            # series number and description first: a reader tells series apart by them
            first = {}
            for ds in slices:
                first.setdefault(_series_uid(ds), ds)
            listing = "; ".join(f"{_series_name(first[uid])}{n} slice(s), UID {uid}"
                                for uid, n in counts.most_common())
            raise InputError(
                f"{folder} holds {len(counts)} DICOM series ({listing}). Put each series in its "
                "own folder, or open one file of the series you want"
            )
        wanted = next(iter(counts))
    return [ds for ds in slices if _series_uid(ds) == wanted]


def _series_name(ds) -> str:
    number, description = ds.get("SeriesNumber"), str(ds.get("SeriesDescription", "") or "").strip()
    words = " ".join(w for w in (f"series {number}" if number not in (None, "") else "",
                                 f"'{description}'" if description else "") if w)
    return f"{words}: " if words else ""


def _unique_instances(series: list) -> list:
    """The series without exact copies of a slice (the same SOPInstanceUID twice: a file
    copied twice into the folder); different slices at one position are refused later."""
    seen, kept = set(), []
    for ds in series:
        uid = ds.get("SOPInstanceUID")
        if uid is None or str(uid) not in seen:
            kept.append(ds)
        if uid is not None:
            seen.add(str(uid))
    return kept


def _missing(ds, tag: str) -> bool:
    """A tag that is absent or present with no value (anonymisers blank tags so)."""
    value = ds.get(tag)
    return value is None or value == "" or (hasattr(value, "__len__") and len(value) == 0)


def _series_volume(series: list, folder: Path, allow_slice: bool = False) -> Volume:
    first = series[0]
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in series):  # not only when it sorts first
        raise InputError("multi-frame (enhanced) DICOM files are not supported; export single-frame slices")
    if any(int(ds.get("SamplesPerPixel", 1) or 1) > 1 for ds in series):
        # a screenshot or secondary capture: the stack would get a colour axis no geometry has
        raise InputError(f"the DICOM series in {folder} is colour (RGB); a grey-level CT/MR series is needed")
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if any(_missing(ds, tag) for ds in series):
            raise InputError(f"the DICOM series in {folder} lacks {tag}, so its geometry is unknown")
    series = _unique_instances(series)
    if len(series) < 2 and not allow_slice:
        raise InputError(f"the DICOM series in {folder} has a single slice; a 3D volume is needed")
    if len({(int(ds.Rows), int(ds.Columns)) for ds in series}) > 1:
        raise InputError(f"the slices of the DICOM series in {folder} differ in size")

    orientation = np.array([_numbers(ds, "ImageOrientationPatient", 6, folder) for ds in series])
    if not np.allclose(orientation, orientation[0], atol=1e-4):
        raise InputError(f"the slices of the DICOM series in {folder} are not parallel")
    row_dir, col_dir = _direction_cosines(orientation[0], folder)
    normal = np.cross(row_dir, col_dir)
    positions = np.array([_numbers(ds, "ImagePositionPatient", 3, folder) for ds in series])
    pixel_spacing = np.array([_numbers(ds, "PixelSpacing", 2, folder) for ds in series])
    if not np.allclose(pixel_spacing, pixel_spacing[0], rtol=1e-4, atol=1e-6):
        # read from the first slice only, the others would be measured at its scale
        raise InputError(f"the slices of the DICOM series in {folder} differ in PixelSpacing "
                         f"({pixel_spacing.min():g} to {pixel_spacing.max():g} mm)")
    if not (pixel_spacing[0] > 0).all():  # the general check said "voxel spacing ... got (1.25, -0.7, 0.7) mm"
        raise InputError(f"the DICOM series in {folder} has a PixelSpacing of {pixel_spacing[0].tolist()} mm; "
                         "pixel sizes must be positive")
    order = np.argsort(positions @ normal, kind="stable")
    series = [series[i] for i in order]
    positions = positions[order]
    if len(series) == 1:  # allow_slice: one slice, as thick as the file says
        step = normal * _slice_thickness(first)
    else:
        step = _slice_step(positions, normal, folder)

    # PixelSpacing is (distance between rows, distance between columns).
    row_spacing, col_spacing = pixel_spacing[0]
    # the distance between slice planes (under a gantry tilt, shorter than the step)
    check_spacing((abs(float(step @ normal)), row_spacing, col_spacing),
                  what="check PixelSpacing and the slice positions")
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # i: along a row, one column further
    lps[:3, 1] = col_dir * row_spacing  # j: down a column, one row further
    lps[:3, 2] = step  # k: next slice (keeps any gantry tilt)
    lps[:3, 3] = positions[0]
    nifti_affine = _LPS_TO_RAS @ lps

    stack = _rescaled_stack(series)  # (k, rows j, columns i)
    data, affine = to_display_frame(np.transpose(stack, (2, 1, 0)), nifti_affine)
    metadata = {
        "source": str(folder),
        "format": "DICOM",
        "source_orientation": orientation_codes(nifti_affine),
        "series_instance_uid": _series_uid(first),
        "series_description": str(first.get("SeriesDescription", "")),
        "dicom_modality": str(first.get("Modality", "")),
        "n_slices": len(series),
    }
    window = _display_window(first)
    if window:
        metadata["window"] = window
    return Volume(data, affine, modality=normalise_modality(first.get("Modality")), metadata=metadata)


def _slice_step(positions: np.ndarray, normal: np.ndarray, folder: Path) -> np.ndarray:
    """The step from one slice to the next, from positions sorted along the slice ``normal``."""
    along_normal = positions @ normal
    gaps = np.diff(along_normal)
    if gaps.min() < _SAME_POSITION_MM:
        n_dup = int((gaps < _SAME_POSITION_MM).sum())
        raise InputError(
            f"{n_dup} slice(s) of the DICOM series in {folder} repeat a position already taken "
            "(several acquisitions, phases or echoes in one series?)"
        )
    # Scanners write ImagePositionPatient rounded, some to 0.1 mm: 0.625 mm slices then lie 0.6 to
    # 0.7 mm apart.  So each position is compared with an even stack from the first to the last
    # (a drift or a second spacing shows there), and each gap with the median (a missing slice
    # doubles one), with room for that rounding but not for a slice.
    median = float(np.median(gaps))
    even = along_normal[0] + np.arange(len(along_normal)) * (along_normal[-1] - along_normal[0]) / len(gaps)
    off = float(np.abs(along_normal - even).max())
    if gaps.max() > 1.5 * median or gaps.min() < 0.5 * median or off > max(POSITION_ROUNDING_MM, 0.25 * median):
        raise InputError(
            f"the slices of the DICOM series in {folder} are unevenly spaced "
            f"({gaps.min():.3f} to {gaps.max():.3f} mm apart, up to {off:.2f} mm off an even stack; a missing slice?)"
        )
    step = (positions[-1] - positions[0]) / (len(positions) - 1)
    # the step is a straight line from the first slice to the last (a gantry tilt shifts each
    # slice the same way); a slice off that line sideways would be drawn where it was not taken
    # only the part across the slice normal: the part along it is the spacing checked above; the
    # room is for positions rounded to 0.1 mm in all three coordinates (about 0.17 mm at worst)
    unit = normal / np.linalg.norm(normal)
    residual = positions - (positions[0] + np.arange(len(positions))[:, None] * step)
    residual -= np.outer(residual @ unit, unit)
    aside = float(np.linalg.norm(residual, axis=1).max())
    if aside > max(POSITION_ROUNDING_MM * np.sqrt(3), 0.25 * median):
        raise InputError(f"the slices of the DICOM series in {folder} do not lie on one line: a slice is "
                         f"{aside:.2f} mm beside where an even stack puts it (ImagePositionPatient; "
                         "several stacks in one series?)")
    return step


def _file_name(ds) -> str:
    """The file name a slice was read from ("" for one built in memory), for messages."""
    return Path(str(getattr(ds, "filename", "") or "")).name


def _numbers(ds, tag: str, count: int, folder: Path) -> np.ndarray:
    """The ``count`` finite numbers of a geometry tag of slice ``ds``; a clear error for a tag
    with another count or a value that is no number (a damaged or hand-edited header)."""
    value = ds.get(tag)
    values = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    try:
        numbers = np.array([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        numbers = None
    if numbers is None or numbers.size != count or not np.isfinite(numbers).all():
        name = _file_name(ds)
        raise InputError(f"{tag} of the DICOM series in {folder}{f' ({name})' if name else ''} must hold {count} "
                         f"numbers, it holds {str(value)[:80]!r}")
    return numbers


def _direction_cosines(orientation: np.ndarray, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The row and column directions of ImageOrientationPatient: unit vectors at right angles,
    as DICOM defines them.  Others used to pass: cosines of length 2 doubled every in-plane size
    (volumes 4x too large) and rows at 60 degrees to the columns gave a sheared grid."""
    row, col = orientation[:3], orientation[3:]
    lengths = (float(np.linalg.norm(row)), float(np.linalg.norm(col)))
    # 5e-3: cosines written to 3 decimals are off by up to about 2e-3; a real error is far more
    if min(lengths) == 0 or max(abs(n - 1) for n in lengths) > 5e-3 or abs(float(row @ col)) > 5e-3 * lengths[0] * lengths[1]:
        raise InputError(f"ImageOrientationPatient of the DICOM series in {folder} is not two unit vectors at right "
                         f"angles ({', '.join(f'{v:g}' for v in orientation)}): its geometry cannot be trusted")
    return row / lengths[0], col / lengths[1]


def _slice_thickness(ds) -> float:
    """The distance to the next slice of a lone slice: SpacingBetweenSlices, else SliceThickness,
    else 1 mm (a single slice has no neighbour to measure it from)."""
    for tag in ("SpacingBetweenSlices", "SliceThickness"):
        if not _missing(ds, tag):
            try:
                value = abs(float(ds.get(tag)))
            except (TypeError, ValueError):
                continue
            if np.isfinite(value) and value > 0:
                return value
    return 1.0


def _rescaled_stack(series: list) -> np.ndarray:
    pixels = []
    for ds in series:
        try:
            pixels.append(ds.pixel_array)
        except Exception as exc:  # compressed syntaxes need optional decoders; a cut file lacks bytes
            name = _file_name(ds)
            raise InputError(f"the DICOM pixel data{f' of {name}' if name else ''} cannot be decoded "
                             f"{_undecodable_why(ds, exc)}") from None
    raw = np.stack(pixels)
    slopes = np.array([_rescale_number(ds, "RescaleSlope", 1.0) for ds in series]).reshape(-1, 1, 1)
    intercepts = np.array([_rescale_number(ds, "RescaleIntercept", 0.0) for ds in series]).reshape(-1, 1, 1)
    return rescaled(raw, slopes, intercepts)


def _rescale_number(ds, tag: str, default: float) -> float:
    """RescaleSlope or RescaleIntercept as a finite number (``default`` when absent or blank)."""
    if _missing(ds, tag):
        return default
    try:
        value = float(ds.get(tag))
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value):
        name = _file_name(ds)
        raise InputError(f"{tag} of {name or 'a slice'} is {str(ds.get(tag))[:40]!r}, not a number: a damaged header")
    return default if tag == "RescaleSlope" and value == 0 else value  # a zero slope: as if absent, as before


def _display_window(ds) -> tuple[float, float] | None:
    """(centre, width) of the series' first stored display window, if any."""
    if _missing(ds, "WindowCenter") or _missing(ds, "WindowWidth"):
        return None
    centre, width = ds.WindowCenter, ds.WindowWidth
    centre = centre[0] if isinstance(centre, pydicom.multival.MultiValue) else centre
    width = width[0] if isinstance(width, pydicom.multival.MultiValue) else width
    try:
        centre, width = float(centre), float(width)
    except (TypeError, ValueError):  # an optional display hint: a bad one is ignored
        return None
    # "1e400" reads as inf: a contrast range napari cannot draw (found by a review helper)
    return (centre, width) if np.isfinite(centre) and np.isfinite(width) and width > 0 else None
