import numpy as np

from napari_medai.postprocess import class_volumes, clean_segmentation


def test_clean_keeps_two_lungs_and_drops_small_lesions():
    lab = np.zeros((10, 40, 40), np.uint8)
    lab[1:9, 5:35, 2:15] = 1  # right lung
    lab[1:9, 5:35, 22:38] = 1  # left lung
    lab[0, 0, 0] = 1  # speck of "lung" outside
    lab[4:7, 10:13, 5:8] = 2  # 27 voxels nodule
    lab[2, 30, 30] = 2  # 1-voxel false lesion
    out = clean_segmentation(lab, (2.0, 1.0, 1.0), organs={1: 2}, lesions=(2,), min_lesion_mm3=10)
    assert out[0, 0, 0] == 0 and out[2, 30, 30] == 0
    assert (out == 2).sum() == 27
    assert (out == 1).sum() == (lab == 1).sum() - 1
    assert lab[0, 0, 0] == 1  # input untouched


def test_class_volumes_in_ml():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[:5] = 1
    lab[0, 0, 0] = 2
    rows = class_volumes(lab, (2.0, 1.0, 0.5), {1: "lung", 2: "nodule", 3: "vessel"})
    assert [r["name"] for r in rows] == ["lung", "nodule", "vessel"]
    assert rows[0]["volume_ml"] == (499 * 1.0) / 1000
    assert rows[1]["voxels"] == 1 and rows[2]["voxels"] == 0
