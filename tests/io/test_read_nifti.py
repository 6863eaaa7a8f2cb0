"""NIfTI reading: re-orientation to the display frame, modality and label-map detection."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import axcodes2ornt, inv_ornt_aff, ornt_transform

from napari_medai.errors import InputError
from napari_medai.io import read_volume
from napari_medai.io.resources import sample_path


def _save(path, data_ijk, affine, description=None):
    img = nib.Nifti1Image(data_ijk, affine)
    if description is not None:
        img.header["descrip"] = description.encode()
    nib.save(img, str(path))
    return path


def _ras_affine(axcodes, shape, spacing=(0.5, 0.75, 2.0), origin=(10.0, -20.0, 30.0)):
    """An affine whose index axes point along ``axcodes`` (e.g. 'PIR')."""
    base = np.diag([*spacing, 1.0])
    base[:3, 3] = origin
    ornt = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(axcodes)))
    return base @ inv_ornt_aff(ornt, shape)


def _assert_same_world_positions(vol, data_ijk, nifti_affine):
    """Every voxel of the file is found, with its value, at its world position in ``vol``."""
    to_index = np.linalg.inv(vol.affine)
    ijk = np.indices(data_ijk.shape).reshape(3, -1)
    ras = nifti_affine[:3, :3] @ ijk + nifti_affine[:3, 3:4]
    spl = np.stack([ras[2], -ras[1], -ras[0]])  # RAS -> (S, P, L)
    zyx = np.rint(to_index[:3, :3] @ spl + to_index[:3, 3:4]).astype(int)
    np.testing.assert_array_equal(vol.data[tuple(zyx)], data_ijk.reshape(-1))


AXIS_ORDERS = ["RAS", "LPS", "PIR", "SLA", "ILP"]


def _read_in_order(path, axcodes, seed):
    """A random int16 (3, 4, 5) file stored with its index axes along ``axcodes``, read back:
    (the file's array, its affine, the Volume)."""
    data = np.random.default_rng(seed).integers(0, 3000, size=(3, 4, 5)).astype(np.int16)
    affine = _ras_affine(axcodes, data.shape)
    return data, affine, read_volume(_save(path, data, affine))


@pytest.mark.parametrize("axcodes", AXIS_ORDERS)
def test_any_axis_order_is_shown_axial_with_voxels_in_place(tmp_path, axcodes):
    data, affine, vol = _read_in_order(tmp_path / "v.nii.gz", axcodes, seed=1)
    assert vol.metadata["source_orientation"] == axcodes
    assert not vol.is_oblique and np.all(np.diag(vol.affine[:3, :3]) > 0)
    # after re-orientation z runs along S (2 mm), y along P (0.75 mm), x along L (0.5 mm)
    assert vol.spacing == pytest.approx((2.0, 0.75, 0.5))
    assert vol.data.dtype == np.int16
    _assert_same_world_positions(vol, data, affine)


def test_oblique_volume_keeps_its_full_affine(tmp_path):
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.5, 0.5, 1.0])
    affine[:3, 3] = (-3.0, 4.0, 5.0)
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    vol = read_volume(_save(tmp_path / "obl.nii", data, affine.astype(np.float32)))
    assert vol.is_oblique and set(vol.napari_geometry()) == {"affine"}
    _assert_same_world_positions(vol, data, affine.astype(np.float32).astype(float))


def test_lung1_sample_is_an_axial_int16_ct():
    vol = read_volume(sample_path("lung1_ct"))
    assert vol.data.shape == (48, 386, 512) and vol.data.dtype == np.int16
    assert vol.modality == "CT" and not vol.is_labels
    assert vol.spacing == pytest.approx((5.0, 0.5703125, 0.5703125))
    assert vol.data.min() == -1024
    geometry = vol.napari_geometry()
    assert geometry["scale"] == pytest.approx((5.0, 0.5703125, 0.5703125))


def test_lung1_mask_is_a_label_map_on_the_ct_grid():
    ct = read_volume(sample_path("lung1_ct"))
    mask = read_volume(sample_path("lung1_nodule_mask"))
    assert mask.is_labels and mask.data.dtype == np.uint8
    assert int(mask.data.sum()) == 837
    np.testing.assert_array_equal(mask.affine, ct.affine)


def test_colin27_is_mr_read_from_ras():
    vol = read_volume(sample_path("colin27_t1"))
    assert vol.modality == "MR" and not vol.is_labels
    assert vol.metadata["source_orientation"] == "RAS"
    assert vol.data.shape == (181, 217, 181)


@pytest.mark.parametrize(
    "data, modality, is_labels",
    [
        (np.r_[-1024, 40, 900].astype(np.int16), "CT", False),
        (np.arange(200).astype(np.uint8), "MR", False),
        (np.r_[0, 1, 2, 2].astype(np.uint8), "unknown", True),
        (np.r_[-3.0, 0.5, 2.0].astype(np.float32), "unknown", False),
    ],
)
def test_modality_and_labels_are_guessed_without_a_hint(tmp_path, data, modality, is_labels):
    block = np.resize(data, (4, 5, 6))
    vol = read_volume(_save(tmp_path / "x.nii.gz", block, np.eye(4)))
    assert (vol.modality, vol.is_labels) == (modality, is_labels)


def test_header_tag_and_sidecar_override_the_guess(tmp_path):
    few_values = np.resize(np.r_[0, 1, 2].astype(np.uint8), (4, 5, 6))
    tagged = read_volume(_save(tmp_path / "t.nii.gz", few_values, np.eye(4), "medai modality=MR kind=image"))
    assert (tagged.modality, tagged.is_labels) == ("MR", False)

    _save(tmp_path / "s.nii.gz", few_values, np.eye(4))
    (tmp_path / "s.json").write_text(json.dumps({"Modality": "MR"}))
    with_sidecar = read_volume(tmp_path / "s.nii.gz")
    assert (with_sidecar.modality, with_sidecar.is_labels) == ("MR", False)


def test_4d_file_with_one_volume_is_squeezed_and_several_refused(tmp_path):
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5, 1)
    assert read_volume(_save(tmp_path / "one.nii", data, np.eye(4))).data.shape == (5, 4, 3)
    with pytest.raises(InputError, match="holds 2 volumes"):
        read_volume(_save(tmp_path / "two.nii", np.zeros((3, 4, 5, 2), np.int16), np.eye(4)))


@pytest.mark.parametrize("axcodes", AXIS_ORDERS)
def test_an_output_written_in_its_inputs_orientation_lies_on_the_input_files_grid(tmp_path, axcodes):
    from napari_medai.io import Volume, write_volume

    data, affine, vol = _read_in_order(tmp_path / "in.nii.gz", axcodes, seed=2)
    assert vol.metadata["nifti_orientation"] == axcodes
    # an output computed on the display grid (here: the input + 1) comes back voxel for voxel
    out = write_volume(Volume(vol.data + 1, vol.affine), tmp_path / "out.nii.gz",
                       orientation=vol.metadata["nifti_orientation"])
    img = nib.load(out)
    assert "".join(nib.aff2axcodes(img.affine)) == axcodes
    np.testing.assert_allclose(img.affine, affine, atol=1e-4)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data + 1)
    np.testing.assert_array_equal(read_volume(out).data, vol.data + 1)  # and reads back the same
    # a Volume read from NIfTI keeps its own orientation; without one, outputs are LPS
    assert "".join(nib.aff2axcodes(nib.load(write_volume(vol, tmp_path / "same.nii.gz")).affine)) == axcodes
    plain = write_volume(Volume(vol.data, vol.affine), tmp_path / "lps.nii.gz")
    assert "".join(nib.aff2axcodes(nib.load(plain).affine)) == "LPS"


def test_a_wrong_orientation_is_refused(tmp_path):
    from napari_medai.io import Volume, write_volume

    with pytest.raises(InputError, match="three axis codes"):
        write_volume(Volume(np.zeros((2, 3, 4), np.int16), np.eye(4)), tmp_path / "x.nii.gz", orientation="RAX")
    assert not (tmp_path / "x.nii.gz").exists()


def test_a_label_intent_or_a_float_mask_is_read_as_labels(tmp_path):
    many = np.resize(np.arange(118, dtype=np.uint8), (4, 5, 6))  # TotalSegmentator has 117 classes
    img = nib.Nifti1Image(many, np.eye(4))
    img.header.set_intent("label")
    nib.save(img, str(tmp_path / "many.nii.gz"))
    assert read_volume(tmp_path / "many.nii.gz").is_labels  # the header says so: no guess
    assert not read_volume(_save(tmp_path / "plain.nii.gz", many, np.eye(4))).is_labels

    mask = np.zeros((4, 5, 6), np.float32)  # MONAI's SaveImage writes masks as float32
    mask[1:3, 2:4, 2:5] = 1.0
    read = read_volume(_save(tmp_path / "mask.nii.gz", mask, np.eye(4)))
    assert read.is_labels and read.data.dtype == np.uint8  # napari's Labels layers take integers only
    almost = mask + 0.5 * (mask == 0)  # not whole numbers: an image
    assert not read_volume(_save(tmp_path / "img.nii.gz", almost, np.eye(4))).is_labels


def test_nan_background_is_left_out_of_the_modality_guess():
    from napari_medai.io.heuristics import guess_modality

    mr = np.random.default_rng(0).uniform(10, 500, (4, 5, 6)).astype(np.float32)
    mr[0] = np.nan
    assert guess_modality(mr) == "MR"
    assert guess_modality(np.full((2, 2, 2), np.nan, np.float32)) == "unknown"


def test_a_whole_number_rescale_keeps_integers_and_others_give_float32(tmp_path):
    raw = np.resize(np.arange(0, 3000, 7, dtype=np.uint16), (4, 5, 6))
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(1, -1024)
    nib.save(img, str(tmp_path / "hu.nii.gz"))
    vol = read_volume(tmp_path / "hu.nii.gz")
    assert vol.data.dtype == np.int16  # nibabel alone gives float64: four times the memory
    np.testing.assert_array_equal(vol.data, np.transpose(raw.astype(int) - 1024, (2, 1, 0))[:, ::-1, ::-1])

    img.header.set_slope_inter(0.5, -1024)
    nib.save(img, str(tmp_path / "half.nii.gz"))
    half = read_volume(tmp_path / "half.nii.gz")
    assert half.data.dtype == np.float32
    np.testing.assert_allclose(half.data, np.transpose(raw * 0.5 - 1024, (2, 1, 0))[:, ::-1, ::-1])


def test_a_zero_voxel_size_is_refused_not_read_as_1_mm(tmp_path):
    img = nib.Nifti1Image(np.ones((4, 5, 6), np.int16), np.eye(4))
    img.set_qform(np.eye(4), code=1)  # the qform is built from pixdim, which nibabel repairs to 1
    img.set_sform(None, code=0)
    nib.save(img, str(tmp_path / "zero.nii"))
    raw = bytearray((tmp_path / "zero.nii").read_bytes())
    raw[88:92] = np.float32(0).tobytes()  # pixdim[3] (NIfTI-1 header bytes 76-107)
    (tmp_path / "zero.nii").write_bytes(bytes(raw))
    # nibabel itself reads that voxel size as 1 mm (it repairs the header as it loads it)
    assert nib.load(str(tmp_path / "zero.nii")).header.get_zooms()[2] == 1
    with pytest.raises(InputError, match="voxel size of 1, 1, 0.*geometry unknown"):
        read_volume(tmp_path / "zero.nii")


def test_a_bad_voxel_size_is_named_as_it_is_and_nibabels_repair_note_is_not_printed(tmp_path, caplog):
    """nibabel printed "pixdim[1,2,3] should be non-zero; setting 0 dims to 1" before medai's own
    message, and a NaN voxel size was reported as "a voxel size of 0"."""
    img = nib.Nifti1Image(np.ones((4, 5, 6), np.int16), np.eye(4))
    img.set_qform(np.eye(4), code=1)
    img.set_sform(None, code=0)
    nib.save(img, str(tmp_path / "base.nii"))
    for name, value in (("zero", 0.0), ("nan", np.nan)):
        raw = bytearray((tmp_path / "base.nii").read_bytes())
        raw[88:92] = np.float32(value).tobytes()  # pixdim[3]
        (tmp_path / f"{name}.nii").write_bytes(bytes(raw))
    # nibabel logs the note to its 'nibabel.global' logger, whose handler prints it on stderr
    with pytest.raises(InputError, match="voxel size of 1, 1, 0 .*a voxel size of 0 leaves"):
        read_volume(tmp_path / "zero.nii")
    with pytest.raises(InputError, match="voxel size of 1, 1, nan .*a voxel size of NaN leaves"):
        read_volume(tmp_path / "nan.nii")
    assert "should be non-zero" not in caplog.text
    nib.load(str(tmp_path / "zero.nii"))  # nibabel's own note is only silenced while medai reads
    assert "should be non-zero" in caplog.text


def test_an_affine_in_metres_is_read_in_millimetres(tmp_path):
    img = nib.Nifti1Image(np.ones((4, 5, 6), np.int16), np.diag([0.0005, 0.0005, 0.0025, 1.0]))
    img.header.set_xyzt_units("meter")
    nib.save(img, str(tmp_path / "metres.nii.gz"))
    np.testing.assert_allclose(read_volume(tmp_path / "metres.nii.gz").spacing, (2.5, 0.5, 0.5))


def test_complex_voxels_are_refused(tmp_path):
    data = (np.ones((4, 5, 6)) * (1 + 2j)).astype(np.complex64)
    with pytest.raises(InputError, match="complex voxels.*magnitude"):
        read_volume(_save(tmp_path / "c.nii.gz", data, np.eye(4)))


@pytest.mark.parametrize("shape", [(6, 7), (6, 7, 1), (1, 6, 7)])
def test_a_single_slice_is_read_with_allow_slice_and_written_back_in_its_files_shape(tmp_path, shape):
    """For the 2D denoisers only: a 2D file, or a 3D one a slice thick along any axis, reads as a
    volume one voxel thick; written on its grid it has its file's shape, dtype and affine again.
    Without ``allow_slice`` (every other task) it is refused as before (test_io_errors)."""
    from napari_medai.io import write_volume

    data = np.random.default_rng(0).integers(-1000, 1000, size=shape).astype(np.int16)
    affine = _ras_affine("LPS", (*shape, 1)[:3], spacing=(0.7, 0.8, 5.0))
    path = _save(tmp_path / "slice.nii.gz", data, affine)
    vol = read_volume(path, allow_slice=True)
    assert vol.data.size == data.size and sorted(vol.data.shape)[0] == 1
    np.testing.assert_allclose(sorted(vol.spacing), [0.7, 0.8, 5.0], rtol=1e-6)
    out = write_volume(vol.derived(vol.data), tmp_path / "out.nii.gz")
    src, img = nib.load(str(path)), nib.load(str(out))
    assert img.shape == shape and img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data)
    np.testing.assert_allclose(img.affine, src.affine, atol=1e-5)
    assert (int(img.header["sform_code"]), int(img.header["qform_code"])) == (
        int(src.header["sform_code"]), int(src.header["qform_code"]))
    np.testing.assert_array_equal(read_volume(out, allow_slice=True).affine, vol.affine)
    with pytest.raises(InputError, match=r"not a 3D volume \(shape"):
        read_volume(path)


@pytest.mark.parametrize("shape", [(6, 1), (6, 1, 1), (1, 1, 7)])
def test_allow_slice_still_refuses_a_line_with_a_message(tmp_path, shape):
    path = _save(tmp_path / "line.nii.gz", np.arange(np.prod(shape), dtype=np.int16).reshape(shape), np.eye(4))
    with pytest.raises(InputError, match=r"line\.nii\.gz is neither a 3D volume nor a 2D slice \(shape"):
        read_volume(path, allow_slice=True)


def test_a_single_slice_whose_thin_axis_says_0_mm_is_read_as_a_slice(tmp_path):
    """pixdim[3] = 0 on a one-voxel-thick file leaves nothing unknown for a 2D denoiser (the
    thin axis is taken as 1 mm, as a lone DICOM slice without a thickness is); a volume, or the
    same file read as one, is still refused."""
    from napari_medai.io.nifti import read_nifti

    data = (np.random.default_rng(0).standard_normal((32, 24, 1)) * 100).astype(np.int16)
    img = nib.Nifti1Image(data, np.diag([0.7, 0.8, 1.0, 1.0]))
    img.set_sform(None, code=0)
    path = tmp_path / "thin.nii"
    nib.save(img, str(path))
    header = nib.Nifti1Header.from_fileobj(open(path, "rb"))
    header["pixdim"][3] = 0.0  # nibabel writes no 0 itself: the header as another tool left it
    body = path.read_bytes()[len(header.binaryblock):]
    path.write_bytes(header.binaryblock + body)
    with pytest.raises(InputError, match="voxel size of 0"):
        read_nifti(path)
    volume = read_nifti(path, allow_slice=True)
    assert 1 in volume.data.shape and np.isclose(sorted(volume.spacing)[0], 0.7, atol=1e-6)
