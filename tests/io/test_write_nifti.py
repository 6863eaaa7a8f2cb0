"""NIfTI writing: read -> write -> read is bit-exact; dtypes kept; no partial files."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medai.errors import InputError
from napari_medai.io import Volume, read_volume, write_volume
from napari_medai.io.resources import sample_path


@pytest.mark.parametrize("sample", ["lung1_ct", "lung1_nodule_mask", "colin27_t1"])
def test_read_write_read_is_bit_exact(tmp_path, sample):
    first = read_volume(sample_path(sample))
    out = write_volume(first, tmp_path / "copy.nii.gz")
    second = read_volume(out)
    assert second.data.dtype == first.data.dtype
    np.testing.assert_array_equal(second.data, first.data)
    np.testing.assert_array_equal(second.affine, first.affine)  # exact, not close
    assert (second.modality, second.is_labels) == (first.modality, first.is_labels)


def test_dicom_volume_written_to_nifti_reads_back_exactly(tmp_path, tiny_ct, volume_to_dicom):
    volume_to_dicom(tmp_path / "series", tiny_ct, shuffle_seed=0)
    from_dicom = read_volume(tmp_path / "series")
    again = read_volume(write_volume(from_dicom, tmp_path / "ct.nii"))
    np.testing.assert_array_equal(again.data, from_dicom.data)
    np.testing.assert_array_equal(again.affine, from_dicom.affine)


@pytest.mark.parametrize(
    "dtype, is_labels, stored",
    [
        (np.int16, False, np.int16),
        (np.float32, False, np.float32),
        (np.uint8, True, np.uint8),
        (np.int64, True, np.uint8),  # napari's default label dtype, narrowed for other tools
        (bool, True, np.uint8),
    ],
)
def test_dtypes_are_kept_or_made_storable(tmp_path, dtype, is_labels, stored):
    data = (np.arange(60).reshape(3, 4, 5) % 3).astype(dtype)
    vol = read_volume(write_volume(data, tmp_path / "d.nii.gz", is_labels=is_labels))
    assert vol.data.dtype == stored
    np.testing.assert_array_equal(vol.data, data.astype(stored))
    assert vol.is_labels == is_labels


def test_array_with_affine_is_placed_in_the_world(tmp_path):
    affine = np.diag([2.0, 0.5, 0.25, 1.0])
    affine[:3, 3] = (-10.0, 20.0, 30.5)
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5) - 30
    vol = read_volume(write_volume(data, tmp_path / "a.nii", affine=affine))
    np.testing.assert_array_equal(vol.affine, affine)
    np.testing.assert_array_equal(vol.data, data)


def test_writing_needs_a_nifti_name_and_3d_data(tmp_path):
    data = np.zeros((3, 4, 5), np.int16)
    with pytest.raises(InputError, match=r"must end in \.nii or \.nii\.gz"):
        write_volume(data, tmp_path / "x.png")
    with pytest.raises(InputError, match="only 3D volumes"):
        write_volume(np.zeros((4, 5)), tmp_path / "x.nii")
    with pytest.raises(InputError, match="spacing"):
        write_volume(Volume(data, np.diag([1.0, 0.0, 1.0, 1.0])), tmp_path / "x.nii")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(InputError, match="cannot write x.nii.gz: the folder .*missing_dir does not exist"):
        write_volume(np.zeros((3, 4, 5), np.int16), tmp_path / "missing_dir" / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_64_bit_integer_images_are_narrowed_or_refused(tmp_path):
    image = np.arange(-30, 30, dtype=np.int64).reshape(3, 4, 5) * 50  # numpy's default integer
    vol = read_volume(write_volume(image, tmp_path / "i.nii.gz"))
    assert vol.data.dtype == np.int16
    np.testing.assert_array_equal(vol.data, image)
    huge = np.full((3, 4, 5), 2**40, np.uint64)
    with pytest.raises(InputError, match="do not fit a 32-bit integer"):
        write_volume(huge, tmp_path / "h.nii.gz", is_labels=True)
    assert not (tmp_path / "h.nii.gz").exists()


def test_labels_carry_the_label_intent_and_millimetre_units(tmp_path):
    import nibabel as nib

    path = write_volume(np.ones((3, 4, 5), np.uint8), tmp_path / "l.nii.gz", is_labels=True)
    header = nib.load(str(path)).header
    assert header.get_intent()[0] == "label"
    assert header.get_xyzt_units()[0] == "mm"


def test_a_gantry_tilt_keeps_its_true_voxel_volume_and_one_consistent_affine(tmp_path):
    import nibabel as nib

    tilt = np.deg2rad(25)
    affine = np.eye(4)  # slices 2.5 mm apart along the table, tilted by 25 degrees
    affine[:3, 0] = (2.5, 0.0, 0.0)
    affine[:3, 1] = (0.7 * np.sin(tilt), 0.7 * np.cos(tilt), 0.0)
    affine[:3, 2] = (0.0, 0.0, 0.7)
    vol = Volume(np.ones((6, 7, 8), np.int16), affine)
    # the distance between slice planes, so that the product is the voxel's true volume
    np.testing.assert_allclose(vol.spacing, (2.5 * np.cos(tilt), 0.7, 0.7))
    np.testing.assert_allclose(np.prod(vol.spacing), abs(np.linalg.det(affine[:3, :3])))
    img = nib.load(str(write_volume(vol, tmp_path / "tilt.nii.gz")))
    # a qform cannot hold the shear: only the sform is stored, so the two never disagree
    assert int(img.header["qform_code"]) == 0 and int(img.header["sform_code"]) > 0
    np.testing.assert_allclose(read_volume(tmp_path / "tilt.nii.gz").affine, affine, atol=1e-5)


def test_writing_over_a_file_keeps_its_permissions_follows_a_link_and_refuses_read_only(tmp_path):
    import os
    import stat

    vol = Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4) - 1000, np.eye(4), modality="CT")
    private = write_volume(vol, tmp_path / "private.nii.gz")
    os.chmod(private, 0o600)  # a scan only its owner may read
    write_volume(vol, private)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    # a link to the archive: the archive is what gets written, the link stays a link
    archive = write_volume(vol, tmp_path / "archive.nii.gz")
    link = tmp_path / "link.nii.gz"
    link.symlink_to(archive)
    changed = Volume(vol.data + 1, np.eye(4), modality="CT")
    assert write_volume(changed, link) == link
    assert link.is_symlink() and np.array_equal(read_volume(archive).data, changed.data)
    # a read-only file is refused and left as it was, whoever runs this (root can rename over it)
    before = archive.read_bytes()
    os.chmod(archive, 0o444)
    with pytest.raises(InputError, match="read-only"):
        write_volume(vol, archive)
    assert archive.read_bytes() == before and not list(tmp_path.glob(".*.tmp*"))
