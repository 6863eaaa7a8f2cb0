"""What ``segment`` / ``detect`` accept besides a numpy array and a tuple of floats, and what
they refuse before any model runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixed_rule_models import blob_volume, detection_card, install, segmentation_card

import napari_medai
from napari_medai.errors import InputError

SPACING = (2.0, 1.0, 1.0)
BLOBS = ((4, 8, 8, 2, 200.0), (10, 20, 20, 2, 0.0))


@pytest.fixture
def seg_model(tmp_path):
    card = segmentation_card()
    # clean-up steps that read the image: each used to get the caller's object as it came
    card.extra.update(lesion_refine={"reach_mm": 1.0, "level": 0.5}, extrapulmonary_air={"organ": 1})
    return str(install(card, tmp_path / "seg"))


@pytest.fixture
def det_model(tmp_path):
    card = detection_card()
    card.extra["mask_refine"] = {"reach_mm": 1.0, "level": 0.5}
    return str(install(card, tmp_path / "det"))


def _chest():
    """The blobs in lung, and an airway: a 3x3 tube of air in soft tissue along z, which the
    card's extrapulmonary-air step follows slice by slice on the image."""
    volume = blob_volume(blobs=BLOBS)
    volume[:, 24:32, 24:32] = -400.0
    volume[:, 26:29, 26:29] = -1000.0
    return volume


def _findings(found):
    return [(tuple(f.center_voxel), f.volume_ml, f.score) for f in found]


def test_a_torch_tensor_volume_gives_the_numpy_results(seg_model, det_model):
    volume = _chest()
    tensor = torch.from_numpy(volume.copy())
    want = napari_medai.segment(volume, SPACING, model=seg_model).labels
    assert want[:, 27, 27].max() == 0  # the airway went: the image was read
    np.testing.assert_array_equal(napari_medai.segment(tensor, SPACING, model=seg_model).labels, want)
    found = _findings(napari_medai.detect(volume, SPACING, det_model))
    assert found and _findings(napari_medai.detect(tensor, SPACING, det_model)) == found


def test_a_torch_tensor_spacing_gives_the_numpy_results(seg_model, det_model):
    volume, spacing = blob_volume(blobs=BLOBS), torch.tensor(SPACING)  # MONAI's MetaTensor.pixdim
    want = napari_medai.segment(volume, SPACING, model=seg_model).labels
    np.testing.assert_array_equal(napari_medai.segment(volume, spacing, model=seg_model).labels, want)
    found = _findings(napari_medai.detect(volume, SPACING, det_model))
    assert found and _findings(napari_medai.detect(volume, spacing, det_model)) == found


def test_a_lazy_dask_volume_is_read_once(seg_model, det_model):
    da = pytest.importorskip("dask.array")
    import dask

    volume = blob_volume(blobs=BLOBS)
    reads = []

    def load(block):
        if block.size:  # dask calls it once on an empty block to learn the output's type
            reads.append(block.shape)
        return block

    lazy = da.from_array(volume, chunks=volume.shape).map_blocks(load, dtype=volume.dtype)  # one block
    with dask.config.set(scheduler="synchronous"):
        labels = napari_medai.segment(lazy, SPACING, model=seg_model).labels
        assert len(reads) == 1
        reads.clear()
        found = napari_medai.detect(lazy, SPACING, det_model)
        assert len(reads) == 1
    np.testing.assert_array_equal(labels, napari_medai.segment(volume, SPACING, model=seg_model).labels)
    assert _findings(found) == _findings(napari_medai.detect(volume, SPACING, det_model))


def test_an_affine_given_where_the_model_goes_is_named(det_model):
    volume = blob_volume(blobs=BLOBS)
    with pytest.raises(InputError, match="affine=") as err:
        napari_medai.detect(volume, SPACING, np.diag([*SPACING, 1.0]))  # screen(volume, spacing, affine)
    assert "ndarray" not in str(err.value)


@pytest.mark.parametrize("value", ["5", True, float("nan"), -1.0, [5.0]])
def test_a_minimum_lesion_size_that_is_not_a_size_is_refused_before_the_model(monkeypatch, value):
    from napari_medai import api

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(api, "_model", no_model)
    with pytest.raises(InputError, match="min_lesion_mm3"):
        napari_medai.segment(blob_volume(blobs=BLOBS), SPACING, min_lesion_mm3=value)


def test_whole_and_zero_minimum_lesion_sizes_are_taken(seg_model):
    volume = blob_volume(blobs=BLOBS)
    for value in (0, np.float32(5.0), None):
        assert napari_medai.segment(volume, SPACING, model=seg_model, min_lesion_mm3=value).labels.shape == volume.shape
