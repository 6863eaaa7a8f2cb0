import json

import numpy as np

from napari_medai.training import phantom_dataset as pd


def test_acquisition_is_deterministic_and_clinical():
    seen = set()
    for seed in range(40):
        shape, spacing = pd.acquisition_for(seed)
        assert (shape, spacing) == pd.acquisition_for(seed)
        assert spacing[0] in pd.SLICE_THICKNESS_MM and 0.65 <= spacing[1] == spacing[2] <= 1.0
        assert 330 <= shape[1] * spacing[1] <= 401 and 200 <= shape[0] * spacing[0] <= 285
        seen.add(spacing[0])
    assert len(seen) >= 4  # the protocols really vary


def test_case_files_and_fixed_nodule_count(tmp_path, monkeypatch):
    # a coarse grid keeps the test fast; the chest and its nodules are generated as usual
    monkeypatch.setattr(pd, "acquisition_for", lambda seed: ((36, 96, 96), (5.0, 3.6, 3.6)))
    img = pd.write_phantom_case(5, tmp_path, n_nodules=3)
    name = pd.case_name(5)
    assert img == tmp_path / f"{name}_image.nii.gz"
    assert (tmp_path / f"{name}_label.nii.gz").exists()
    nodules = json.loads((tmp_path / f"{name}_nodules.json").read_text())
    assert len(nodules) == 3
    # a complete case is not generated again
    mtime = img.stat().st_mtime_ns
    assert pd.write_phantom_case(5, tmp_path, n_nodules=3) == img and img.stat().st_mtime_ns == mtime
    from napari_medai.io import read_volume

    labels = read_volume(tmp_path / f"{name}_label.nii.gz").data
    assert labels.shape == (36, 96, 96) and np.count_nonzero(labels == 2) > 0

