"""Bad files give an InputError whose message says what is wrong, never a traceback."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_medai.errors import InputError
from napari_medai.io import read_volume
from napari_medai.io.resources import sample_path


def test_truncated_nifti_gz(tmp_path):
    whole = sample_path("colin27_t1").read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match=r"^cut\.nii\.gz is damaged, truncated or not a NIfTI file$"):
        read_volume(cut)


def test_file_that_is_not_nifti(tmp_path):
    fake = tmp_path / "fake.nii"
    fake.write_bytes(b"hello, this is not an image" * 20)
    with pytest.raises(InputError, match=r"^fake\.nii is damaged, truncated or not a NIfTI file$"):
        read_volume(fake)


@pytest.mark.parametrize("name", ["short.nii", "short.nii.gz", "random.nii.gz"])
def test_damaged_nifti_gets_one_plain_sentence(tmp_path, name):
    """nibabel's own words (a path, "Cannot work out file type", byte counts) are not shown."""
    rng = np.random.default_rng(0)
    path = tmp_path / name
    nib.save(nib.Nifti1Image(rng.integers(0, 999, (6, 7, 5)).astype(np.int16), np.eye(4)), str(path))
    whole = path.read_bytes()
    path.write_bytes(rng.bytes(2000) if name.startswith("random") else whole[: len(whole) - 200])
    with pytest.raises(InputError) as info:
        read_volume(path)
    # a cut .nii also says what its header claims against what it holds
    assert str(info.value).startswith(f"{name} is damaged, truncated or not a NIfTI file")
    assert "nibabel" not in str(info.value) and "Cannot work out" not in str(info.value)


def test_damaged_dicom_gets_one_plain_sentence(tmp_path):
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(InputError) as info:
        read_volume(garbage)
    assert str(info.value) == "garbage.dcm is damaged, truncated or not a DICOM file"  # no "force=True"


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_volume(tmp_path / "nowhere.nii.gz")


def test_unsupported_format(tmp_path):
    png = tmp_path / "slice.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(InputError, match="not a supported format"):
        read_volume(png)


@pytest.mark.parametrize("shape", [(6, 7), (6, 7, 1)])
def test_2d_image(tmp_path, shape):
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(shape, np.int16), np.eye(4)), str(path))
    with pytest.raises(InputError, match=r"not a 3D volume \(shape"):
        read_volume(path)


def test_empty_image(tmp_path):
    path = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((0, 7, 8), np.int16), np.eye(4)), str(path))
    with pytest.raises(InputError, match=r"empty\.nii\.gz holds no voxels"):
        read_volume(path)


def test_zero_spacing(tmp_path):
    path = tmp_path / "zero.nii.gz"
    img = nib.Nifti1Image(np.ones((3, 4, 5), np.int16), np.eye(4))
    img.set_qform(None, code=0)
    img.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=2)  # a second axis of 0 mm
    nib.save(img, str(path))
    with pytest.raises(InputError, match=r"zero\.nii\.gz: voxel spacing must be positive"):
        read_volume(path)


def test_rgb_voxels(tmp_path):
    rgb = np.zeros((3, 4, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = tmp_path / "rgb.nii"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(path))
    with pytest.raises(InputError, match="grey-level volume is needed"):
        read_volume(path)


@pytest.mark.parametrize("slope, inter", [(1e20, 0.0), (1.0, 1e19)])
def test_a_huge_whole_number_rescale_does_not_wrap_round(tmp_path, slope, inter):
    # int64 arithmetic used to wrap silently: a slope of 1e20 gave values near -9.2e18
    path = tmp_path / "huge.nii"
    img = nib.Nifti1Image(np.arange(10, 70, dtype=np.int16).reshape(3, 4, 5), np.eye(4))
    img.header.set_slope_inter(slope, inter)
    nib.save(img, str(path))
    data = read_volume(path).data
    np.testing.assert_allclose(float(data.max()), 69 * slope + inter, rtol=1e-6)
    assert data.min() > 0


def test_a_rescale_beyond_any_image_is_refused(tmp_path):
    path = tmp_path / "inf.nii"
    img = nib.Nifti1Image(np.arange(10, 70, dtype=np.int16).reshape(3, 4, 5), np.eye(4))
    img.header.set_slope_inter(1e38, 0.0)  # float32 would overflow to inf
    nib.save(img, str(path))
    with pytest.raises(InputError, match="rescale .* gives values beyond"):
        read_volume(path)


def test_slices_nearly_parallel_to_an_axis_are_refused_when_read(tmp_path):
    # the columns are 2 mm long, but the slice planes lie 0.005 mm apart: every task refused the
    # file after it opened, blaming the layer's scale
    affine = np.eye(4)
    affine[:3, 2] = (2.0, 0.0, 0.005)
    path = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(np.ones((5, 6, 7), np.int16), affine), str(path))
    with pytest.raises(InputError, match=r"flat\.nii: voxel spacing \(0\.005, 1, 1\) mm .*check the voxel size and axes"):
        read_volume(path)


def test_nan_voxels_do_not_make_an_ordinary_rescale_look_damaged(tmp_path):
    data = np.ones((3, 4, 5), np.float32)
    data[1, 2, 3] = np.nan
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(2.0, 5.0)
    nib.save(img, str(tmp_path / "nan.nii"))
    out = read_volume(tmp_path / "nan.nii").data
    assert np.isnan(out).sum() == 1 and np.nanmax(out) == 7.0  # read as before; NaN is refused by the tasks


def _series(tmp_path, dicom_writer, n=4):
    raw = np.full((n, 6, 6), 1000, np.uint16)
    return dicom_writer(tmp_path / "series", raw, [(0.0, 0.0, 2.5 * k) for k in range(n)], (1, 0, 0, 0, 1, 0),
                        (0.7, 0.7), intercept=-1024)


def _element_offset(data: bytes, tag: int) -> int:
    group, elem = tag >> 16, tag & 0xFFFF
    return data.index(group.to_bytes(2, "little") + elem.to_bytes(2, "little"), 132)


@pytest.mark.parametrize("damage", ["garbled VR of ImageOrientationPatient", "Columns tag garbled",
                                    "cut in the pixel data's header", "cut at every byte"])
def test_a_slice_with_a_damaged_header_is_named_not_a_traceback(tmp_path, dicom_writer, damage):
    # pydicom parses an element when it is first read: the damage surfaced deep in the reader as
    # NotImplementedError, AttributeError or struct.error (found by an audit helper)
    paths = _series(tmp_path, dicom_writer)
    good = paths[1].read_bytes()
    iop, columns, pixels = (_element_offset(good, t) for t in (0x00200037, 0x00280011, 0x7FE00010))
    damaged = {"garbled VR of ImageOrientationPatient": [good[:iop + 4] + b"\x44\xb2" + good[iop + 6:]],
               "Columns tag garbled": [good[:columns + 2] + b"\x19\x00" + good[columns + 4:]],
               "cut in the pixel data's header": [good[:pixels + 8]],
               "cut at every byte": [good[:cut] for cut in range(132, len(good), 7)]}[damage]
    for data in damaged:
        paths[1].write_bytes(data)
        with pytest.raises(InputError) as info:
            read_volume(paths[1].parent)
        assert "\n" not in str(info.value)
        with pytest.raises(InputError, match="damaged") as info:  # the file itself: "damaged, truncated or ..."
            read_volume(paths[1])
        assert "\n" not in str(info.value)


def test_a_multi_frame_file_is_refused_wherever_it_sorts(tmp_path, dicom_writer):
    import pydicom

    paths = _series(tmp_path, dicom_writer)
    ds = pydicom.dcmread(paths[-1])  # the last by name, not the first
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    ds.save_as(paths[-1])
    with pytest.raises(InputError, match="multi-frame"):
        read_volume(paths[0].parent)


@pytest.mark.parametrize("units", [5, 0x0D, 0x1A, 0x3F])
def test_an_unknown_space_unit_is_taken_as_mm(tmp_path, units):
    # nibabel's get_xyzt_units() raised KeyError for 228 of the 256 byte values
    img = nib.Nifti1Image(np.arange(8 * 9 * 10, dtype=np.int16).reshape(8, 9, 10) - 500, np.diag([0.8, 0.8, 2.5, 1]))
    img.header["xyzt_units"] = units
    nib.save(img, tmp_path / "u.nii.gz")
    vol = read_volume(tmp_path / "u.nii.gz")
    assert vol.spacing == pytest.approx((2.5, 0.8, 0.8))


def test_the_known_space_units_scale_to_mm(tmp_path):
    for code, mm in ((1, 1000.0), (2, 1.0), (3, 0.001), (0x0A, 1.0)):  # metre, mm, micron; mm with seconds
        img = nib.Nifti1Image(np.arange(8 * 9 * 10, dtype=np.int16).reshape(8, 9, 10) - 500,
                              np.diag([0.8, 0.8, 2.5, 1]) * [1.0 / mm if mm != 1 else 1, 1.0 / mm if mm != 1 else 1,
                                                             1.0 / mm if mm != 1 else 1, 1])
        img.header["xyzt_units"] = code
        nib.save(img, tmp_path / "m.nii.gz")
        assert read_volume(tmp_path / "m.nii.gz").spacing == pytest.approx((2.5, 0.8, 0.8))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_header_claiming_absurd_dimensions_is_damaged_not_out_of_memory(tmp_path, suffix):
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4))
    img.header.set_data_shape((30000, 30000, 30000))
    raw = img.header.binaryblock + b"\0" * 4 + np.zeros(64, np.int16).tobytes()
    path = tmp_path / f"huge{suffix}"
    if suffix == ".nii.gz":
        import gzip

        raw = gzip.compress(raw)
    path.write_bytes(raw)
    with pytest.raises(InputError, match="30000 x 30000 x 30000") as info:
        read_volume(path)
    assert "damaged" in str(info.value)


def test_a_compression_without_its_decoder_is_named_in_one_line(tmp_path, monkeypatch):
    import pydicom
    from pydicom.data import get_testdata_file

    source = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    ds = pydicom.dcmread(source)
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    for k in range(2):
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(tmp_path / f"IM{k}.dcm")

    def no_decoder(self, *args, **kwargs):
        raise RuntimeError("Unable to decompress 'JPEG-LS Lossless Image Compression' pixel data because all "
                           "plugins are missing dependencies:\n\tgdcm - requires gdcm\n\tpyjpegls - requires pyjpegls")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoder))
    with pytest.raises(InputError) as info:
        read_volume(tmp_path)
    assert "\n" not in str(info.value) and "pip install pyjpegls" in str(info.value)


def test_a_negative_pixel_spacing_is_named_with_its_tag(tmp_path, dicom_writer):
    raw = np.full((3, 6, 6), 1000, np.uint16)
    dicom_writer(tmp_path / "s", raw, [(0.0, 0.0, 2.5 * k) for k in range(3)], (1, 0, 0, 0, 1, 0), (-0.7, 0.7))
    with pytest.raises(InputError, match=r"PixelSpacing of \[-0.7, 0.7\] mm"):
        read_volume(tmp_path / "s")


def test_a_vendors_own_non_image_object_is_not_called_damaged(tmp_path, dicom_writer):
    # a Siemens CSA non-image object (a private SOP class) beside a series: a UID DICOM does not list
    # is no sign of damage in a file read whole (found by a review helper)
    import pydicom

    paths = _series(tmp_path, dicom_writer)
    ds = pydicom.dcmread(paths[0])
    ds.SOPClassUID = "1.3.12.2.1107.5.9.1"
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()  # a series of its own, as such exports have
    del ds.PixelData
    ds.save_as(paths[0].parent / "CSA0001.dcm")
    read_volume(paths[0].parent)  # the series reads, the CSA file is skipped
    with pytest.raises(InputError, match=r"CSA0001.dcm is not an image slice \(1.3.12.2.1107.5.9.1\)"):
        read_volume(paths[0].parent / "CSA0001.dcm")


def test_pixel_data_under_a_private_transfer_syntax_gets_a_sentence(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.TransferSyntaxUID = "1.2.840.113619.5.2"  # GE's own: is_compressed raised on it
    for k in range(2):
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(tmp_path / f"IM{k}.dcm")
    with pytest.raises(InputError, match="cannot be decoded") as info:
        read_volume(tmp_path)
    assert "\n" not in str(info.value)


def test_a_garbled_slice_thickness_is_damage_not_a_traceback(tmp_path, dicom_writer):
    import pydicom

    paths = _series(tmp_path, dicom_writer, n=1)
    ds = pydicom.dcmread(paths[0])
    ds.SliceThickness = "2.5"
    ds.save_as(paths[0])
    data = paths[0].read_bytes()
    at = _element_offset(data, 0x00180050)
    paths[0].write_bytes(data[:at + 4] + b"\x44\xb2" + data[at + 6:])
    with pytest.raises(InputError, match="damaged"):
        read_volume(paths[0].parent, allow_slice=True)


def test_a_nii_cut_by_a_few_bytes_says_what_its_header_claims(tmp_path):
    path = tmp_path / "cut.nii"
    nib.save(nib.Nifti1Image(np.zeros((6, 7, 5), np.int16), np.eye(4)), str(path))
    path.write_bytes(path.read_bytes()[:-20])  # less than the header: the check read vox_offset as 0
    with pytest.raises(InputError, match=r"claims 6 x 7 x 5 voxels \(420 bytes\), the file holds 400 bytes of voxels"):
        read_volume(path)
