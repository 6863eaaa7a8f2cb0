"""The Denoising widget with the shipped CT model on a small noisy crop: new aligned layer, cancel."""

from __future__ import annotations

import numpy as np
import pytest
from widget_helpers import assert_unchanged, count_forward_calls, layer_snapshot, record_cancel, run_and_cancel

pytestmark = [pytest.mark.gui, pytest.mark.integration]
TIMEOUT_MS = 60_000


def _open_with_builtin_model(viewer, name="ct-lowdose-denoising"):
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Denoising")
    index = next(i for i in range(widget.model_box.count())
                 if getattr(widget.model_box.itemData(i), "name", None) == name)
    widget.model_box.setCurrentIndex(index)
    return widget


@pytest.fixture
def low_dose_layer(viewer):
    """A small CT-like crop (soft-tissue disc with a denser insert) with simulated low-dose noise."""
    from napari_medai.phantoms import simulate_low_dose

    yy, xx = np.mgrid[:64, :64]
    slice_hu = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 28**2, 40, -1000).astype(np.int16)
    slice_hu[24:34, 20:30] = 300
    clean = np.repeat(slice_hu[None], 4, axis=0)
    noisy = simulate_low_dose(clean, 3e3, seed=0, spacing=(2.5, 0.7, 0.7)).astype(np.float32)
    layer = viewer.add_image(noisy, name="ct", scale=(2.5, 0.7, 0.7), translate=(-30.0, 5.0, 7.0),
                             contrast_limits=(-200.0, 300.0))
    return layer, clean


def test_denoising_a_noisy_crop_adds_an_aligned_layer(qtbot, viewer, low_dose_layer):
    ct_layer, clean = low_dose_layer
    before = ct_layer.data.copy()
    widget = _open_with_builtin_model(viewer)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run_button.click()
    assert blocker.args == ["done"]
    out = viewer.layers["ct denoised"]
    assert out._type_string == "image" and out.data.shape == before.shape
    np.testing.assert_allclose(out.scale, ct_layer.scale)
    np.testing.assert_allclose(out.translate, ct_layer.translate)
    np.testing.assert_allclose(out.contrast_limits, ct_layer.contrast_limits)
    np.testing.assert_array_equal(ct_layer.data, before)  # the input is untouched
    assert widget.layer_picker.current_layer() is ct_layer
    # It denoised: the error against the noise-free crop went down inside the disc.
    disc = clean > -500
    assert np.abs(out.data - clean)[disc].mean() < 0.8 * np.abs(before - clean)[disc].mean()


def test_cancel_stops_the_model_and_adds_nothing(qtbot, viewer, rng, monkeypatch):
    from napari_medai.models.denoising_nets import ResidualDenoiser

    big = rng.normal(40, 30, (200, 96, 96)).astype(np.float32)  # 50 forward passes
    viewer.add_image(big, name="big", scale=(1.0, 0.7, 0.7))
    forwards = count_forward_calls(monkeypatch, ResidualDenoiser)
    tokens = record_cancel(monkeypatch, "napari_medai.denoising.denoise")
    widget = _open_with_builtin_model(viewer)
    widget.device_box.setCurrentText("cpu")  # passes of some 40 ms: Cancel comes long before the end
    snapshot = layer_snapshot(viewer)
    status, at_cancel, _seconds = run_and_cancel(
        qtbot, widget, lambda: widget.progress_bar.value() > 0, count=lambda: len(forwards), timeout_ms=TIMEOUT_MS)
    assert status == "cancelled"
    # the network stopped within a pass or two of Cancel, before its 50; the denoiser got the
    # widget's own token (the one Cancel set)
    assert len(forwards) <= at_cancel + 2 and len(forwards) < 50, (at_cancel, len(forwards))
    assert len(tokens) == 1 and tokens[0] is not None and tokens[0].cancelled
    assert_unchanged(viewer, snapshot)


def test_automatic_model_follows_the_layers_modality(qtbot, viewer, low_dose_layer, notifications):
    from napari_medai.widgets.denoising import AUTO_MODEL

    ct_layer, _clean = low_dose_layer
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Denoising")
    assert widget.model_box.currentText() == AUTO_MODEL  # the default choice
    ct_layer.metadata["modality"] = "CT"
    assert widget.params().model.name == "ct-lowdose-denoising"
    ct_layer.metadata["modality"] = "MR"
    assert widget.params().model.name == "mr-denoising"
    assert not any("does not state its modality" in text for _, text in notifications())
    # a modality the reader only guessed from the values (a CT without its HU rescale reads as MR): said
    ct_layer.metadata["modality_guessed"] = True
    assert widget.params().model.name == "mr-denoising"
    assert any("'ct' does not state its modality; it is read as MR" in text for _, text in notifications())
    del ct_layer.metadata["modality_guessed"]
    # unknown modality: a clear message at Run, no layer added
    ct_layer.metadata["modality"] = "unknown"
    snapshot = layer_snapshot(viewer)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run_button.click()
    assert blocker.args == ["error"]
    assert "cannot choose a denoising model for modality 'unknown'" in widget.status_label.text()
    assert_unchanged(viewer, snapshot)


def test_a_partial_strength_gives_what_the_api_and_cli_give(qtbot, viewer, low_dose_layer):
    """An int16 CT at strength 0.3: the widget's layer equals denoise(..., strength=0.3) voxel
    for voxel (it used to blend the API's rounded full-strength output and round again)."""
    from napari_medai.denoising import denoise

    ct_layer, _clean = low_dose_layer
    ct16 = np.rint(ct_layer.data).astype(np.int16)
    viewer.add_image(ct16, name="ct16", scale=ct_layer.scale, metadata={"modality": "CT"})
    widget = _open_with_builtin_model(viewer)
    widget.strength_box.setValue(0.3)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run_button.click()
    assert blocker.args == ["done"]
    out = viewer.layers["ct16 denoised"].data
    expected = denoise(ct16, tuple(ct_layer.scale), model="ct-lowdose-denoising", strength=0.3)
    assert out.dtype == np.int16
    assert not np.array_equal(expected, ct16)  # the blend moved the image
    np.testing.assert_array_equal(out, expected)


def _ct_slice(rng):
    """A noisy 64 x 64 int16 CT slice (soft-tissue disc in air)."""
    yy, xx = np.mgrid[:64, :64]
    clean = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 28**2, 40, -1000)
    return np.rint(clean + rng.normal(0, 60, clean.shape)).astype(np.int16)


@pytest.mark.parametrize("as_volume", [False, True], ids=["yx", "1yx"])
def test_a_single_slice_is_denoised_into_a_layer_in_its_space(qtbot, viewer, rng, as_volume):
    """The denoisers are 2D: a slice layer (y, x) or (1, y, x) used to be refused ("has 2
    dimension(s)", "too small to process")."""
    from napari_medai.denoising import denoise

    noisy = _ct_slice(rng)
    data = noisy[None] if as_volume else noisy
    scale, translate = ((2.5, 0.7, 0.8), (-30.0, 5.0, 7.0)) if as_volume else ((0.7, 0.8), (5.0, 7.0))
    affine = np.eye(data.ndim + 1)
    affine[-3, -1] = 4.0  # an extra shift in the layer's affine: the output keeps it too
    layer = viewer.add_image(data, name="key slice", scale=scale, translate=translate, affine=affine,
                             metadata={"modality": "CT"}, contrast_limits=(-200.0, 300.0))
    before = layer.data.copy()
    widget = _open_with_builtin_model(viewer)
    widget.difference_check.setChecked(True)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run_button.click()
    assert blocker.args == ["done"], widget.status_label.text()
    out = viewer.layers["key slice denoised"]
    assert out.data.shape == data.shape and out.data.dtype == np.int16
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(out.translate, layer.translate)
    np.testing.assert_allclose(out.affine.affine_matrix, layer.affine.affine_matrix)
    np.testing.assert_array_equal(out.data, denoise(data, model="ct-lowdose-denoising"))
    assert not np.array_equal(out.data, data)
    assert viewer.layers["key slice difference"].data.shape == data.shape
    np.testing.assert_array_equal(layer.data, before)  # the input is untouched
    assert widget.layer_picker.current_layer() is layer


@pytest.mark.parametrize("given_as", ["card", "file"])
def test_a_3d_model_refuses_a_single_slice_and_changes_nothing(qtbot, viewer, rng, monkeypatch, given_as):
    """A user's 3D model (its card listed, or a file or bundle added) cannot denoise one slice: a
    message naming both, no layer added, the model choice kept."""
    import dataclasses
    from types import SimpleNamespace

    import napari_medai.models as models
    from napari_medai.models import get_card

    card3d = dataclasses.replace(get_card("ct-lowdose-denoising"), name="user-3d-denoiser", spatial_dims=3,
                                 roi_size=(32, 96, 96), source_dir=None)
    viewer.add_image(_ct_slice(rng), name="key slice", metadata={"modality": "CT"})
    widget = _open_with_builtin_model(viewer)
    if given_as == "card":
        widget.model_box.insertItem(0, card3d.name, card3d)
        widget.model_box.setCurrentIndex(0)
    else:  # loaded in the worker: only then are its dimensions known
        monkeypatch.setattr(models, "load_model", lambda spec, device=None: SimpleNamespace(card=card3d))
        widget.add_model_path("my-3d-bundle")
    chosen = widget.model_box.currentText()
    snapshot = layer_snapshot(viewer)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run_button.click()
    assert blocker.args == ["error"]
    assert ("'key slice' is a single 2D slice, and model 'user-3d-denoiser' is 3D"
            in widget.status_label.text()), widget.status_label.text()
    assert_unchanged(viewer, snapshot)
    assert widget.model_box.currentText() == chosen and widget.run_button.isEnabled()


def test_the_difference_layer_is_float32_for_an_int32_image(qtbot, viewer, rng):
    """float32 minus an int32 image gave a float64 difference layer, twice the memory (an audit
    helper's finding); the denoised layer keeps the input's int32."""
    layer = viewer.add_image(_ct_slice(rng).astype(np.int32)[None], name="ct32", metadata={"modality": "CT"})
    widget = _open_with_builtin_model(viewer)
    widget.difference_check.setChecked(True)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run_button.click()
    assert blocker.args == ["done"], widget.status_label.text()
    assert viewer.layers["ct32 denoised"].data.dtype == np.int32
    difference = viewer.layers["ct32 difference"].data
    assert difference.dtype == np.float32
    np.testing.assert_allclose(difference, layer.data.astype(np.float32) - viewer.layers["ct32 denoised"].data)
