"""A read-only float32 volume (np.load(mmap_mode="r"), a read-only view) runs without torch's
warning that the array is not writable (nothing writes to it) and is left as it was."""

from __future__ import annotations

import warnings

import numpy as np
from fixed_rule_models import blob_volume, install, segmentation_card

from napari_medai.inference import run_model


def test_a_read_only_float32_volume_runs_without_a_warning_and_unchanged(tmp_path):
    model = str(install(segmentation_card(), tmp_path / "model"))
    path = tmp_path / "volume.npy"
    np.save(path, blob_volume())
    volume = np.load(path, mmap_mode="r")
    assert volume.dtype == np.float32 and not volume.flags.writeable
    want = run_model(model, np.array(volume), (2.0, 1.0, 1.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = run_model(model, volume, (2.0, 1.0, 1.0))
    assert [str(w.message) for w in caught if "not writable" in str(w.message)] == []
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(volume, blob_volume())
