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
    with pytest.raises(InputError, match=r"cut\.nii\.gz cannot be read: "):
        read_volume(cut)


def test_file_that_is_not_nifti(tmp_path):
    fake = tmp_path / "fake.nii"
    fake.write_bytes(b"hello, this is not an image" * 20)
    with pytest.raises(InputError, match=r"fake\.nii cannot be read"):
        read_volume(fake)


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
