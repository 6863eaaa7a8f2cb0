"""DICOM series reading: ordering, rescale, geometry, and refusal of ambiguous folders."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from napari_medai.errors import InputError
from napari_medai.io import Volume, read_volume
from napari_medai.io.resources import sample_path


def test_lung1_as_shuffled_dicom_series_matches_the_nifti(tmp_path, volume_to_dicom):
    nifti = read_volume(sample_path("lung1_ct"))
    files = volume_to_dicom(tmp_path / "lung1", nifti, intercept=-1024, shuffle_seed=1)
    names = [f.name for f in files]
    assert names != sorted(names)  # file order on disk is not slice order

    start = time.perf_counter()
    dicom = read_volume(tmp_path / "lung1")
    assert time.perf_counter() - start < 5

    assert dicom.data.dtype == np.int16  # slope 1, intercept -1024: exact HU, kept as int16
    np.testing.assert_array_equal(dicom.data, nifti.data)
    np.testing.assert_allclose(dicom.affine, nifti.affine, rtol=0, atol=1e-4)
    assert dicom.spacing == pytest.approx(nifti.spacing, abs=1e-6)
    assert dicom.modality == "CT" and not dicom.is_labels
    assert dicom.metadata["format"] == "DICOM"
    assert dicom.metadata["n_slices"] == 48
    assert "PatientName" not in str(dicom.metadata) and "Phantom" not in str(dicom.metadata)


def test_one_file_path_opens_its_series(tmp_path, tiny_ct, volume_to_dicom):
    files = volume_to_dicom(tmp_path / "s", tiny_ct, shuffle_seed=3)
    vol = read_volume(files[2])
    np.testing.assert_array_equal(vol.data, tiny_ct.data)
    np.testing.assert_allclose(vol.affine, tiny_ct.affine, atol=1e-6)


def test_sagittal_series_with_float_rescale_keeps_every_voxel_in_place(tmp_path, dicom_writer):
    """Rows along -z (feet), columns along +y (posterior), slices stepping to the patient's
    right: each stored pixel must end up at its DICOM world position, as rescaled value."""
    rng = np.random.default_rng(5)
    raw = rng.integers(0, 4000, size=(3, 4, 5)).astype(np.uint16)  # (slice, row, column)
    row_dir, col_dir = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    step = np.array([-1.5, 0.0, 0.0])
    origin = np.array([30.0, -20.0, 55.0])
    row_spacing, col_spacing = 0.8, 0.6
    positions = [origin + k * step for k in range(3)]
    dicom_writer(tmp_path / "sag", raw, positions, (*row_dir, *col_dir), (row_spacing, col_spacing),
                 slope=0.5, intercept=-10, modality="MR", shuffle_seed=2)

    vol = read_volume(tmp_path / "sag")
    assert vol.modality == "MR" and vol.data.dtype == np.float32
    assert not vol.is_oblique and np.all(np.diag(vol.affine[:3, :3]) > 0)  # displayed axial
    assert sorted(vol.spacing) == pytest.approx(sorted([1.5, row_spacing, col_spacing]))
    to_index = np.linalg.inv(vol.affine)
    for k, r, c in np.ndindex(raw.shape):
        lps = origin + k * step + c * col_spacing * row_dir + r * row_spacing * col_dir
        z, y, x = np.rint(to_index[:3, :3] @ lps[::-1] + to_index[:3, 3]).astype(int)
        assert vol.data[z, y, x] == pytest.approx(raw[k, r, c] * 0.5 - 10)


def test_two_series_in_one_folder_is_refused_naming_both(tmp_path, tiny_ct, volume_to_dicom):
    volume_to_dicom(tmp_path / "mixed", tiny_ct, series_uid="1.2.3.111")
    other = tiny_ct.data[:3]
    files = volume_to_dicom(tmp_path / "mixed" / "b", Volume(other, tiny_ct.affine), series_uid="1.2.3.222")
    for f in files:  # same folder as the first series, different names
        f.rename(tmp_path / "mixed" / f"B{f.name}")
    with pytest.raises(InputError) as err:
        read_volume(tmp_path / "mixed")
    message = str(err.value)
    assert "2 DICOM series" in message
    assert "4 slice(s), UID 1.2.3.111" in message and "3 slice(s), UID 1.2.3.222" in message
    assert "'test series'" in message  # the description a reader tells series apart by
    # Opening one file picks its own series.
    vol = read_volume(tmp_path / "mixed" / f"B{files[0].name}")
    np.testing.assert_array_equal(vol.data, other)


@pytest.mark.parametrize("content", [None, "notes.txt"])
def test_folder_without_dicom_is_refused(tmp_path, content):
    folder = tmp_path / "empty"
    folder.mkdir()
    if content:
        (folder / content).write_text("not an image")
    with pytest.raises(InputError, match="no DICOM images were found"):
        read_volume(folder)


def test_repeated_slice_position_is_refused(tmp_path, dicom_writer):
    raw = np.ones((3, 4, 4), np.uint16)
    positions = [(0, 0, 0), (0, 0, 2), (0, 0, 2)]
    dicom_writer(tmp_path / "dup", raw, positions, (1, 0, 0, 0, 1, 0), (1, 1))
    with pytest.raises(InputError, match="repeat a position"):
        read_volume(tmp_path / "dup")


def test_missing_slice_is_refused(tmp_path, dicom_writer):
    raw = np.ones((3, 4, 4), np.uint16)
    positions = [(0, 0, 0), (0, 0, 2), (0, 0, 6)]
    dicom_writer(tmp_path / "gap", raw, positions, (1, 0, 0, 0, 1, 0), (1, 1))
    with pytest.raises(InputError, match="unevenly spaced"):
        read_volume(tmp_path / "gap")


@pytest.mark.parametrize("step", [0.625, 1.25])
def test_positions_written_to_a_tenth_of_a_millimetre_are_read(tmp_path, dicom_writer, step):
    """0.625 mm slices whose ImagePositionPatient is rounded to 0.1 mm lie 0.6 to 0.7 mm apart:
    not a missing slice.  The volume gets the mean step."""
    n = 9
    raw = np.arange(n * 16, dtype=np.uint16).reshape(n, 4, 4)
    positions = [(0, 0, round(-100.0 + k * step, 1)) for k in range(n)]
    dicom_writer(tmp_path / "rounded", raw, positions, (1, 0, 0, 0, 1, 0), (1, 1))
    vol = read_volume(tmp_path / "rounded")
    assert vol.data.shape[0] == n and vol.spacing[0] == pytest.approx(step, abs=0.02)


def test_a_drifting_or_doubled_spacing_is_refused(tmp_path, dicom_writer):
    raw = np.ones((9, 4, 4), np.uint16)
    drift = [(0, 0, z) for z in (0.0, 1.0, 2.0, 3.0, 4.0, 5.3, 6.6, 7.9, 9.2)]  # 1 mm, then 1.3 mm
    dicom_writer(tmp_path / "drift", raw, drift, (1, 0, 0, 0, 1, 0), (1, 1))
    with pytest.raises(InputError, match="unevenly spaced"):
        read_volume(tmp_path / "drift")
    gap = [(0, 0, round(k * 0.625, 1)) for k in (0, 1, 2, 3, 5, 6, 7, 8, 9)]  # slice 4 missing
    dicom_writer(tmp_path / "gap", raw, gap, (1, 0, 0, 0, 1, 0), (1, 1))
    with pytest.raises(InputError, match="unevenly spaced"):
        read_volume(tmp_path / "gap")


@pytest.mark.parametrize("keep", [140, 600, -10], ids=["in-its-header", "before-its-pixels", "in-its-pixels"])
def test_a_slice_cut_short_is_named(tmp_path, dicom_writer, keep):
    raw = np.ones((4, 4, 4), np.uint16)
    positions = [(0, 0, 0), (0, 0, 2), (0, 0, 4), (0, 0, 6)]
    dicom_writer(tmp_path / "cut", raw, positions, (1, 0, 0, 0, 1, 0), (1, 1))
    damaged = sorted((tmp_path / "cut").iterdir())[1]
    damaged.write_bytes(damaged.read_bytes()[:keep])  # pydicom reads up to the cut without a word
    # without pixels it drops out and leaves a gap; with some pixels they cannot be decoded
    reason = "unevenly spaced.*could not be read" if keep > 0 else "pixel data of"
    with pytest.raises(InputError, match=rf"{reason}.*{damaged.name}"):
        read_volume(tmp_path / "cut")


@pytest.mark.parametrize("keep", [140, 600])
def test_a_damaged_file_opened_itself_gets_the_one_sentence(tmp_path, dicom_writer, keep):
    """Opening the cut file itself (not its folder) said it was "not an image slice" and then that
    it could not be read: one sentence says what it is."""
    raw = np.ones((4, 4, 4), np.uint16)
    positions = [(0, 0, 0), (0, 0, 2), (0, 0, 4), (0, 0, 6)]
    dicom_writer(tmp_path / "cut", raw, positions, (1, 0, 0, 0, 1, 0), (1, 1))
    damaged = sorted((tmp_path / "cut").iterdir())[1]
    damaged.write_bytes(damaged.read_bytes()[:keep])
    with pytest.raises(InputError, match=rf"^{damaged.name} is damaged, truncated or not a DICOM file$"):
        read_volume(damaged)


def test_single_slice_series_is_refused(tmp_path, dicom_writer):
    dicom_writer(tmp_path / "one", np.ones((1, 4, 4), np.uint16), [(0, 0, 0)], (1, 0, 0, 0, 1, 0), (1, 1))
    with pytest.raises(InputError, match="single slice"):
        read_volume(tmp_path / "one")


def test_zero_pixel_spacing_is_refused(tmp_path, dicom_writer):
    raw = np.ones((3, 4, 4), np.uint16)
    positions = [(0, 0, 0), (0, 0, 2), (0, 0, 4)]
    dicom_writer(tmp_path / "zero", raw, positions, (1, 0, 0, 0, 1, 0), (0, 1))
    with pytest.raises(InputError, match="spacing"):
        read_volume(tmp_path / "zero")


def _good_series(folder, dicom_writer, n=4):
    raw = np.arange(n * 16, dtype=np.uint16).reshape(n, 4, 4)
    return dicom_writer(folder, raw, [(0, 0, 2 * k) for k in range(n)], (1, 0, 0, 0, 1, 0), (1, 1))


def test_a_report_file_opened_on_its_own_is_named_not_a_crash(tmp_path, dicom_writer):
    import pydicom
    from pydicom.uid import BasicTextSRStorage

    files = _good_series(tmp_path / "s", dicom_writer)
    report = pydicom.dcmread(files[0], stop_before_pixels=True)
    del report.Rows, report.Columns
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    report.SeriesInstanceUID = "1.2.3.999"
    report.save_as(tmp_path / "s" / "ZSR", enforce_file_format=True)
    assert read_volume(tmp_path / "s").data.shape[0] == 4  # the folder: the report is skipped
    with pytest.raises(InputError, match=r"ZSR is not an image slice \(Basic Text SR Storage\)"):
        read_volume(tmp_path / "s" / "ZSR")


def test_a_gantry_tilt_gives_the_distance_between_slice_planes(tmp_path, dicom_writer):
    tilt = np.deg2rad(25)
    raw = np.ones((5, 6, 6), np.uint16)
    # the table moves 2.5 mm a slice; the slice planes are tilted, so they lie 2.5 cos(25) apart
    dicom_writer(tmp_path / "tilt", raw, [(0, 0, 2.5 * k) for k in range(5)],
                 (1, 0, 0, 0, np.cos(tilt), np.sin(tilt)), (0.7, 0.7))
    vol = read_volume(tmp_path / "tilt")
    np.testing.assert_allclose(vol.spacing[0], 2.5 * np.cos(tilt), rtol=1e-6)
    # thin slices (0.625 mm, closer than the 0.7 mm pixels): still the slice axis that is corrected
    dicom_writer(tmp_path / "thin", raw, [(0, 0, 0.625 * k) for k in range(5)],
                 (1, 0, 0, 0, np.cos(tilt), np.sin(tilt)), (0.7, 0.7))
    np.testing.assert_allclose(read_volume(tmp_path / "thin").spacing, (0.625 * np.cos(tilt), 0.7, 0.7), rtol=1e-5)
    # so the voxel volume every mL is computed from is the true one
    np.testing.assert_allclose(np.prod(vol.spacing), abs(np.linalg.det(vol.affine[:3, :3])), rtol=1e-6)


def test_blank_tags_get_a_clear_message_or_are_ignored(tmp_path, dicom_writer):
    import pydicom

    for tag, expect in (("WindowCenter", None), ("PixelSpacing", "lacks PixelSpacing"),
                        ("ImagePositionPatient", "lacks ImagePositionPatient")):
        folder = tmp_path / tag
        for path in _good_series(folder, dicom_writer):  # an anonymiser blanked the tag
            ds = pydicom.dcmread(path)
            ds.WindowCenter, ds.WindowWidth = "40", "400"
            setattr(ds, tag, "")
            ds.save_as(path, enforce_file_format=True)
        if expect is None:  # an optional display hint: the series reads, without a window
            assert "window" not in read_volume(folder).metadata
        else:
            with pytest.raises(InputError, match=expect):
                read_volume(folder)


def test_a_file_copied_twice_into_the_folder_is_read_once(tmp_path, dicom_writer):
    files = _good_series(tmp_path / "s", dicom_writer)
    (tmp_path / "s" / "copy_of_slice_2").write_bytes(files[2].read_bytes())
    assert read_volume(tmp_path / "s").data.shape[0] == 4


def test_dicom_without_its_file_header_is_read(tmp_path, dicom_writer):
    import pydicom

    files = _good_series(tmp_path / "s", dicom_writer)
    expected = read_volume(tmp_path / "s").data
    for path in files:  # older scanners write the data set alone: no preamble, no "DICM"
        ds = pydicom.dcmread(path)
        del ds.file_meta
        ds.preamble = None
        path.unlink()
        ds.save_as(tmp_path / "s" / path.stem, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert (tmp_path / "s" / files[0].stem).read_bytes()[:2] == b"\x08\x00"
    np.testing.assert_array_equal(read_volume(tmp_path / "s").data, expected)
    np.testing.assert_array_equal(read_volume(tmp_path / "s" / files[0].stem).data, expected)  # one file


def test_an_enhanced_multiframe_file_is_named_as_such(tmp_path, dicom_writer):
    import pydicom

    path = _good_series(tmp_path / "s", dicom_writer, n=2)[0]
    ds = pydicom.dcmread(path)  # enhanced files keep positions in per-frame groups, not here
    ds.NumberOfFrames = 2
    del ds.ImagePositionPatient
    (tmp_path / "one").mkdir()
    ds.save_as(tmp_path / "one" / "enhanced.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match="multi-frame"):
        read_volume(tmp_path / "one" / "enhanced.dcm")


def test_hidden_copies_and_a_dicomdir_do_not_hide_the_series(tmp_path, dicom_writer):
    from napari_medai.io import is_supported_path

    _good_series(tmp_path / "usb", dicom_writer)
    for k in range(25):  # macOS's AppleDouble files sort before the slices
        (tmp_path / "usb" / f"._IM{k:04d}").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    assert is_supported_path(tmp_path / "usb")
    (tmp_path / "cohort" / "case1").mkdir(parents=True)
    (tmp_path / "cohort" / "DICOMDIR").write_bytes(bytes(128) + b"DICM" + bytes(40))
    assert not is_supported_path(tmp_path / "cohort")  # a folder of cases, not one series


def test_a_colour_series_is_refused_up_front(tmp_path, dicom_writer):
    import pydicom

    for path in _good_series(tmp_path / "rgb", dicom_writer, n=2):
        ds = pydicom.dcmread(path)  # a secondary capture: three 8-bit samples per pixel
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = bytes(int(ds.Rows) * int(ds.Columns) * 3)
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError, match=r"rgb is colour \(RGB\); a grey-level CT/MR series is needed"):
        read_volume(tmp_path / "rgb")


@pytest.mark.parametrize("suffix", [".IMA", ".ima", ".dicom"])
def test_siemens_ima_and_dicom_names_are_dicom_files(tmp_path, dicom_writer, suffix):
    from napari_medai.io import is_supported_path

    files = _good_series(tmp_path / "s", dicom_writer)
    renamed = [path.rename(path.with_suffix(suffix)) for path in files]
    renamed[2].write_bytes(b"damaged")  # the name alone says DICOM: named, not skipped
    assert is_supported_path(renamed[0])
    with pytest.raises(InputError, match=rf"could not be read.*{renamed[2].name}"):
        read_volume(renamed[0])


def test_a_single_slice_is_read_with_allow_slice_as_thick_as_its_file_says(tmp_path, dicom_writer):
    """For the 2D denoisers only (``medai denoise`` on one DICOM slice); without ``allow_slice`` it is
    refused as before (test_single_slice_series_is_refused)."""
    import pydicom

    raw = np.arange(16, dtype=np.uint16).reshape(1, 4, 4)
    [path] = dicom_writer(tmp_path / "one", raw, [(5.0, -3.0, 12.0)], (1, 0, 0, 0, 1, 0), (0.6, 0.7),
                          intercept=-1024)
    vol = read_volume(path, allow_slice=True)
    assert vol.data.shape == (1, 4, 4) and vol.data.dtype == np.int16
    np.testing.assert_array_equal(vol.data[0], raw[0].astype(np.int16) - 1024)
    np.testing.assert_allclose(vol.spacing, (1.0, 0.6, 0.7))  # no thickness in the file: 1 mm
    np.testing.assert_allclose(vol.voxel_to_world((0, 0, 0)), (12.0, -3.0, 5.0))  # (S, P, L) of LPS
    ds = pydicom.dcmread(path)
    ds.SliceThickness = "2.5"
    ds.save_as(path)
    np.testing.assert_allclose(read_volume(tmp_path / "one", allow_slice=True).spacing, (2.5, 0.6, 0.7))
    with pytest.raises(InputError, match="single slice"):
        read_volume(path)


@pytest.mark.parametrize("orientation, why", [
    ((2, 0, 0, 0, 2, 0), "cosines of length 2: every in-plane size doubled"),
    ((1, 0, 0, 0.5, np.sqrt(0.75), 0), "rows at 60 degrees to the columns: a sheared grid"),
    ((0, 0, 0, 0, 0, 0), "no direction at all"),
])
def test_orientation_cosines_that_are_not_unit_and_at_right_angles_are_refused(tmp_path, dicom_writer,
                                                                             orientation, why):
    raw = np.ones((4, 4, 4), np.uint16)
    dicom_writer(tmp_path / "s", raw, [(0, 0, 2 * k) for k in range(4)], orientation, (0.7, 0.7))
    with pytest.raises(InputError, match="ImageOrientationPatient .* not two unit vectors at right angles"):
        read_volume(tmp_path / "s")


@pytest.mark.parametrize("orientation", [
    (round(np.cos(0.3), 6), round(np.sin(0.3), 6), 0, -round(np.sin(0.3), 6), round(np.cos(0.3), 6), 0),
    (-0.695, -0.453, -0.559, 0.207, -0.869, 0.449),  # 3 decimals: row . column = -0.0012
])
def test_rounded_cosines_of_an_oblique_series_are_read(tmp_path, dicom_writer, orientation):
    o = np.asarray(orientation, float)
    normal = np.cross(o[:3], o[3:])
    normal /= np.linalg.norm(normal)
    positions = [tuple(2 * k * normal) for k in range(4)]
    dicom_writer(tmp_path / "s", np.ones((4, 4, 4), np.uint16), positions, orientation, (0.7, 0.7))
    np.testing.assert_allclose(read_volume(tmp_path / "s").spacing, (2, 0.7, 0.7), rtol=1e-2)


def test_oblique_positions_rounded_to_a_tenth_of_a_millimetre_stay_on_the_stack():
    from napari_medai.io.dicom import _slice_step

    # a series the first sideways check refused: 0.625 mm slices, each coordinate rounded to 0.1 mm
    o = np.array([-0.76649, 0.617778, -0.175626, -0.557199, -0.503639, 0.66021])
    normal = np.cross(o[:3], o[3:])
    normal /= np.linalg.norm(normal)
    rng = np.random.default_rng(0)
    for _ in range(20):
        start = rng.uniform(-150, 150, 3)
        positions = np.round(start + 0.625 * np.arange(400)[:, None] * normal, 1)
        step = _slice_step(positions, normal, Path("series"))
        assert abs(np.linalg.norm(step) - 0.625) < 1e-3


def test_a_pixel_spacing_that_changes_within_the_series_is_refused(tmp_path, dicom_writer):
    import pydicom

    files = _good_series(tmp_path / "s", dicom_writer)
    for path in files[2:]:  # read from the first slice only, half the stack was measured at its scale
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = [2, 2]
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError, match=r"differ in PixelSpacing \(1 to 2 mm\)"):
        read_volume(tmp_path / "s")


def test_a_slice_shifted_sideways_off_the_stack_is_refused(tmp_path, dicom_writer):
    raw = np.ones((4, 4, 4), np.uint16)
    positions = [(0, 0, 0), (0, 0, 2), (10, 0, 4), (10, 0, 6)]  # two stacks side by side
    dicom_writer(tmp_path / "s", raw, positions, (1, 0, 0, 0, 1, 0), (1, 1))
    with pytest.raises(InputError, match=r"do not lie on one line: a slice is 3\.33 mm beside"):
        read_volume(tmp_path / "s")


@pytest.mark.parametrize("tag, value, expect", [
    ("PixelSpacing", "0.7", "PixelSpacing .* must hold 2 numbers"),
    ("ImageOrientationPatient", [1, 0, 0, 0, 1], "ImageOrientationPatient .* must hold 6 numbers"),
    ("ImagePositionPatient", [0, 0], "ImagePositionPatient .* must hold 3 numbers"),
    ("RescaleSlope", "7.2531", "RescaleSlope of .* is 'abcdef', not a number"),
])
def test_geometry_and_rescale_tags_of_the_wrong_form_get_a_clear_message(tmp_path, dicom_writer, tag, value,
                                                                         expect):
    import pydicom

    for path in _good_series(tmp_path / "s", dicom_writer):
        ds = pydicom.dcmread(path)
        setattr(ds, tag, value)
        ds.save_as(path, enforce_file_format=True)
        if tag == "RescaleSlope":  # a damaged value pydicom will not write itself: edited in the bytes
            path.write_bytes(path.read_bytes().replace(b"7.2531", b"abcdef"))
    with pytest.raises(InputError, match=expect):
        read_volume(tmp_path / "s")


@pytest.mark.parametrize("width", ["1e400", "0", "-400"])
def test_a_display_window_napari_cannot_draw_is_ignored(tmp_path, dicom_writer, width):
    import pydicom

    for path in _good_series(tmp_path / "s", dicom_writer):
        ds = pydicom.dcmread(path)
        ds.WindowCenter, ds.WindowWidth = "40", width
        ds.save_as(path, enforce_file_format=True)
    assert "window" not in read_volume(tmp_path / "s").metadata
