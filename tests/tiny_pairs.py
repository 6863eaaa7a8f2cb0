"""Tiny CT image/label pairs on disk, with two nodules each, for the trainers' tests."""

import numpy as np

from napari_medai.io import Volume, write_volume


def write_nodule_pairs(folder, n=2):
    """``n`` pairs of 16 x 48 x 48 voxels at 2 x 1 x 1 mm: lung at -850 HU, two 3 x 6 x 6 nodules."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.full((16, 48, 48), 40, np.int16)
        lab = np.zeros(img.shape, np.uint8)
        lab[2:14, 6:42, 6:42] = 1
        img[lab == 1] = -850
        for z, y, x in ((5, 15, 15), (10, 30, 32)):
            lab[z - 1:z + 2, y - 3:y + 3, x - 3:x + 3] = 2
        img[lab == 2] = 20
        img = (img + rng.normal(0, 15, img.shape)).astype(np.int16)
        write_volume(Volume.from_spacing(img, (2.0, 1.0, 1.0), modality="CT"), folder / f"case{i}_image.nii.gz")
        write_volume(Volume.from_spacing(lab, (2.0, 1.0, 1.0), is_labels=True), folder / f"case{i}_label.nii.gz")
