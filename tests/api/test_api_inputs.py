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


@pytest.mark.parametrize("affine, message", [(np.full((4, 4), np.nan), "NaN or infinite"),
                                             (np.zeros((4, 4)), "singular")])
def test_a_nan_or_singular_affine_is_refused_before_the_model(monkeypatch, affine, message):
    from napari_medai import api

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(api, "_model", no_model)
    with pytest.raises(InputError, match=message):  # it gave NaN (or 0) finding centres in mm
        napari_medai.detect(blob_volume(blobs=BLOBS), SPACING, affine=affine)


@pytest.mark.parametrize("given, message", [
    ("scan.nii.gz", r"pass the image as an array, not the file name 'scan.nii.gz' \(read a file with "
                    r"napari_medai.read_volume\(path\)"),
    (None, "^no image given"),
])
def test_a_file_name_or_no_image_is_named_before_the_model(monkeypatch, given, message):
    """Both said "expects a 3D volume (z, y, x) ... 0 dimension(s) ()" from the engine."""
    from pathlib import Path

    from napari_medai import api

    monkeypatch.setattr(api, "_model", lambda *a, **k: pytest.fail("the model was loaded"))
    for call in (napari_medai.segment, napari_medai.detect):
        with pytest.raises(InputError, match=message):
            call(given, SPACING)
    with pytest.raises(InputError, match="not the file name 'a/scan.nii'"):  # a Path too
        napari_medai.segment(Path("a/scan.nii"), SPACING)


@pytest.mark.parametrize("cancel", [True, "stop", __import__("threading").Event()])
def test_a_cancel_that_is_no_cancel_token_is_refused_before_the_model(monkeypatch, cancel):
    """cancel=True failed at the first window with "'bool' object has no attribute
    'raise_if_cancelled'" (after the model had loaded)."""
    from napari_medai import api

    monkeypatch.setattr(api, "_model", lambda *a, **k: pytest.fail("the model was loaded"))
    for call in (napari_medai.segment, napari_medai.detect, napari_medai.denoise):
        with pytest.raises(InputError, match=r"cancel must be a napari_medai.inference.CancelToken .* or None; got "):
            call(blob_volume(blobs=BLOBS), SPACING, cancel=cancel)


def test_a_cancel_token_and_none_are_taken(seg_model):
    from napari_medai.inference import CancelToken

    volume = blob_volume(blobs=BLOBS)
    for cancel in (None, CancelToken()):
        assert napari_medai.segment(volume, SPACING, model=seg_model, cancel=cancel).labels.shape == volume.shape


def test_a_spacing_given_as_x_y_z_is_warned_about(monkeypatch):
    """(0.7, 0.7, 5), SimpleITK's order, read as (z, y, x) resampled along the wrong axes without a
    word (an audit helper's finding); (z, y, x) itself, and in-plane pixels that are square, pass."""
    import warnings

    from napari_medai import api

    with pytest.warns(UserWarning, match=r"spacing \(0\.7, 0\.7, 5\.0\) is read as \(z, y, x\) mm.*7\.1 times.*"
                                         r"SimpleITK's GetSpacing\(\)"):
        api.warn_if_spacing_reversed((0.7, 0.7, 5.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for spacing in ((5.0, 0.7, 0.7), (0.7, 0.7, 0.7), (2.5, 0.8, 1.2), (1.0, 0.9, 1.5)):
            api.warn_if_spacing_reversed(spacing)
    monkeypatch.setattr(api, "_model", lambda *a, **k: pytest.fail("stop here"))
    with pytest.warns(UserWarning, match="is read as"), pytest.raises(pytest.fail.Exception):
        napari_medai.segment(blob_volume(blobs=BLOBS), (1.0, 1.0, 3.0))


@pytest.mark.parametrize("settings, message", [
    ({"device": 1}, r"device must be text \(auto, cpu, cuda, cuda:N or mps\), got 1"),
    ({"device": 0}, r"device must be text"),  # was read as "auto"
    ({"precision": 16}, r"precision must be text \(.*\), got 16"),
    ({"sw_batch_size": None}, r"sw_batch_size must be a whole number of windows, at least 1, got None"),
    ({"sw_batch_size": "x"}, r"sw_batch_size must be a whole number"),
])
def test_settings_of_the_wrong_type_are_input_errors(seg_model, settings, message):
    """Each was an AttributeError, TypeError or ValueError from deep inside (an audit helper's finding)."""
    with pytest.raises(InputError, match=message):
        napari_medai.segment(blob_volume(blobs=BLOBS), SPACING, model=seg_model, settings=settings)


def test_a_whole_number_window_batch_written_as_a_float_is_taken(seg_model):
    """4.0, as a JSON settings file gives it, was taken through int() before the type check."""
    from napari_medai.inference import InferenceSettings

    settings = InferenceSettings.of({"sw_batch_size": 4.0})
    settings.validate()
    assert settings.sw_batch_size == 4 and isinstance(settings.sw_batch_size, int)
    with pytest.raises(InputError, match="whole number of windows"):
        InferenceSettings.of({"sw_batch_size": 4.5}).validate()
