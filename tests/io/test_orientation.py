"""``io.orientation.file_voxel``: a display-frame point back to its file's own (i, j, k) index."""

import nibabel as nib
import numpy as np
import pytest

from napari_medai.io import read_volume
from napari_medai.io.orientation import file_voxel

AFFINES = {
    "RAS": np.diag([0.8, 0.9, 2.5, 1.0]),
    "LPS": np.diag([-0.8, -0.9, 2.5, 1.0]),
    "AIR": np.array([[0, 0, 2.5, 0], [0.9, 0, 0, 0], [0, -0.8, 0, 0], [0, 0, 0, 1.0]]),
}


@pytest.mark.parametrize("codes", AFFINES)
def test_a_marked_voxel_comes_back_to_its_index_in_the_file(tmp_path, codes):
    data = np.full((20, 30, 12), -1000, np.int16)
    data[3, 7, 9] = 500
    path = tmp_path / f"{codes}.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINES[codes]), str(path))
    vol = read_volume(path)
    assert vol.metadata["nifti_orientation"] == codes
    marked = np.argwhere(vol.data == 500)[0]
    assert file_voxel(marked, vol.data.shape, codes) == [3.0, 7.0, 9.0]
    # sub-voxel positions stay sub-voxel: a flipped axis maps c to n - 1 - c
    shifted = file_voxel(marked + 0.25, vol.data.shape, codes)
    assert all(abs(a - b) == pytest.approx(0.25) for a, b in zip(shifted, [3.0, 7.0, 9.0]))


def test_the_display_frame_itself_is_the_array_index_reversed():
    assert file_voxel((4.0, 8.0, 2.0), (10, 20, 30), "LPS") == [2.0, 8.0, 4.0]


@pytest.mark.parametrize("codes", ["RAS", "LPS", "AIR", "PLI"])
def test_display_voxel_undoes_file_voxel(codes):
    from napari_medai.io.orientation import display_voxel

    shape, point = (12, 30, 20), [3.25, 7.0, 11.5]
    there = file_voxel(point, shape, codes)
    assert display_voxel(there, shape, codes) == point


def test_a_file_voxel_for_a_wrong_orientation_code_is_refused_with_the_readers_message():
    from napari_medai.errors import InputError
    from napari_medai.io.orientation import display_voxel, file_voxel

    from napari_medai.io.orientation import from_display_frame

    for codes in ("RAX", "RLS", "RRS"):  # an unknown code; one axis named twice
        for fn in (file_voxel, display_voxel):
            with pytest.raises(InputError, match="three axis codes"):
                fn([1, 2, 3], (4, 5, 6), codes)
        with pytest.raises(InputError, match="three axis codes"):
            from_display_frame(np.zeros((4, 5, 6)), np.eye(4), codes)
