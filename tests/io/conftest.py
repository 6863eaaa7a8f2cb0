"""Fixtures for the I/O tests: tiny NIfTI files and DICOM series written with pydicom."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from napari_medai.io import Volume


def _ds_number(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) that keeps the value when possible."""
    text = repr(float(value))
    return text if len(text) <= 16 else f"{value:.10g}"


def write_dicom_series(
    folder,
    raw_slices,
    positions_lps,
    orientation,
    pixel_spacing,
    *,
    slope=1.0,
    intercept=0.0,
    modality="CT",
    series_uid=None,
    shuffle_seed=None,
):
    """Write one single-frame file per slice; returns the file paths.

    ``raw_slices`` are stored values (k, rows, columns), unsigned 16 bit; positions are
    ImagePositionPatient per slice (LPS mm); orientation is the 6 ImageOrientationPatient
    cosines.  With ``shuffle_seed``, file names are in a random order unrelated to position.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    n = len(raw_slices)
    names = np.arange(n)
    if shuffle_seed is not None:
        names = np.random.default_rng(shuffle_seed).permutation(n)
    paths = []
    for k, (pixels, position) in enumerate(zip(raw_slices, positions_lps)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.PatientName = "Phantom^Test"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.SeriesDescription = "test series"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds_number(v) for v in position]
        ds.ImageOrientationPatient = [_ds_number(v) for v in orientation]
        ds.PixelSpacing = [_ds_number(v) for v in pixel_spacing]
        if k + 1 < n:
            ds.SliceThickness = _ds_number(np.linalg.norm(np.subtract(positions_lps[k + 1], position)))
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = _ds_number(slope), _ds_number(intercept)
        ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
        path = folder / f"IM{names[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_volume_as_dicom(folder, vol: Volume, *, intercept=-1024, shuffle_seed=None, series_uid=None):
    """Write an axial (display-frame) volume as a CT series, raw = value - intercept."""
    lin = vol.affine[:3, :3]
    assert np.allclose(lin, np.diag(np.diag(lin))), "helper handles axis-aligned volumes only"
    dz, dy, dx = np.diag(lin)
    raw = vol.data.astype(np.int32) - intercept
    assert raw.min() >= 0 and raw.max() < 2**16
    # World is (S, P, L); DICOM positions are (L, P, S).
    positions = [vol.voxel_to_world((k, 0, 0))[::-1] for k in range(vol.data.shape[0])]
    return write_dicom_series(
        folder,
        raw.astype(np.uint16),
        positions,
        orientation=(1, 0, 0, 0, 1, 0),
        pixel_spacing=(dy, dx),
        slope=1,
        intercept=intercept,
        series_uid=series_uid,
        shuffle_seed=shuffle_seed,
    )


@pytest.fixture
def dicom_writer():
    """The series writer, as a fixture so tests need no import path tricks."""
    return write_dicom_series


@pytest.fixture
def volume_to_dicom():
    return write_volume_as_dicom


@pytest.fixture
def tiny_ct():
    """An axial 4 x 5 x 6 CT-like volume (int16 HU, air at -1024) with distinct values."""
    rng = np.random.default_rng(0)
    data = rng.integers(-1024, 1500, size=(4, 5, 6)).astype(np.int16)
    data[0, 0, 0] = -1024
    return Volume.from_spacing(data, (2.5, 0.75, 0.5), origin=(-40.0, -120.5, -90.25), modality="CT")
