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


def test_lesions_must_touch_their_host_class():
    lab = np.zeros((10, 40, 40), np.uint8)
    lab[1:9, 5:35, 2:15] = 1  # lung
    lab[1:9, 5:35, 22:38] = 1
    lab[4:7, 10:13, 5:8] = 2  # nodule inside the lung
    lab[4:7, 10:13, 15:18] = 2  # juxta-pleural: touches the lung from outside (x=15 next to x=14)
    lab[4:7, 36:39, 17:20] = 2  # in the mediastinum/outside air: no lung voxel next to it
    lab[0, 0, 0] = 1  # speck of "lung" the organ rule removes; its neighbour must not survive by it
    lab[0, 1, 1] = 2
    kwargs = dict(organs={1: 2}, lesions=(2,), min_lesion_mm3=0)
    out = clean_segmentation(lab, (2.0, 1.0, 1.0), lesion_hosts=(1,), **kwargs)
    assert (out[4:7, 10:13, 5:8] == 2).all() and (out[4:7, 10:13, 15:18] == 2).all()
    assert (out[4:7, 36:39, 17:20] == 0).all() and out[0, 1, 1] == 0
    assert (out == 2).sum() == 54
    # without hosts every lesion component stays
    assert (clean_segmentation(lab, (2.0, 1.0, 1.0), **kwargs) == 2).sum() == 82


def test_relabel_above_only_below_one_half():
    from napari_medai.postprocess.components import relabel_above

    lab = np.array([0, 1, 1, 0], np.uint8)
    prob = np.array([0.1, 0.35, 0.6, 0.45], np.float32)
    np.testing.assert_array_equal(relabel_above(lab, prob, 2, 0.3), [0, 2, 2, 2])
    np.testing.assert_array_equal(relabel_above(lab, prob, 2, 0.5), lab)  # argmax only
    assert lab[1] == 1  # input untouched
