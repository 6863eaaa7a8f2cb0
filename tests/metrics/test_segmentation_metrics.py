"""components_found: per reference component, its volume and whether the prediction touches it."""

import numpy as np

from napari_medai.metrics import components_found


def test_each_reference_component_is_found_or_missed_with_its_volume():
    ref = np.zeros((10, 30, 30), bool)
    ref[2:5, 2:6, 2:6] = True  # 48 voxels
    ref[7, 20, 20] = True  # 1 voxel, missed
    pred = np.zeros_like(ref)
    pred[3, 3, 3] = True
    pred[0, 29, 29] = True  # a false positive changes nothing here
    assert components_found(pred, ref, (2.0, 1.0, 1.0)) == [(96.0, True), (2.0, False)]
    assert components_found(pred, np.zeros_like(ref)) == []
