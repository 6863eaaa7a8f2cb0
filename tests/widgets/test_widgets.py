"""The three dock widgets in a real viewer: opening, samples, bad input, results, cancel."""

from __future__ import annotations

import time
from contextlib import suppress

import numpy as np
import pytest
from widget_helpers import assert_unchanged, fake_core, fake_engine, layer_snapshot

from napari_medai.widgets._base import TaskWidget

pytestmark = pytest.mark.gui

WIDGETS = {"Lesion detection": "detection", "Segmentation": "segmentation", "Denoising": "denoising",
           "Screening report": "detection"}  # the screening widget picks a detector (and a segmentation)
TIMEOUT_MS = 15_000


def open_widget(viewer, display_name):
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", display_name)
    return widget


def run_and_wait(qtbot, widget):
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run_button.click()
    return blocker.args[0]


@pytest.mark.parametrize("display_name", WIDGETS)
def test_each_widget_opens_and_says_its_model_is_not_installed(
    qtbot, viewer, ct_layer, notifications, display_name, tmp_path, monkeypatch
):
    # no built-in model installed: an empty weights folder
    monkeypatch.setattr("napari_medai.models.registry.WEIGHTS_DIR", tmp_path / "no-weights")
    (tmp_path / "no-weights").mkdir()
    widget = open_widget(viewer, display_name)
    task = WIDGETS[display_name]
    assert widget.task == task
    assert widget.layer_picker.current_layer() is ct_layer
    assert widget.model_box.currentData() is None
    assert widget.status_label.text().startswith(f"No {task} model is installed yet")
    snapshot = layer_snapshot(viewer)
    assert run_and_wait(qtbot, widget) == "error"
    assert any(f"No {task} model is installed yet" in msg for _, msg in notifications())
    assert_unchanged(viewer, snapshot)
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert [widget.device_box.itemText(i) for i in range(widget.device_box.count())] == ["auto", "cpu", "cuda"]
    # test-time mirroring reaches the core's settings; the denoiser (no run_model) does not offer it
    assert widget.offers_mirroring == (task != "denoising")
    if widget.offers_mirroring:
        for choice in ("mirror-lesions", "mirror"):
            widget.tta_box.setCurrentText(choice)
            assert widget.params().inference_settings().tta == choice
    else:
        assert widget.tta_box.isHidden()


@pytest.mark.parametrize(
    "key, sample_file",
    [("lung1", "lung1_ct.nii.gz"), ("colin27", "colin27_t1.nii.gz"), ("synthetic_chest_ct", None)],
)
def test_each_sample_opens_as_a_3d_volume(viewer, key, sample_file):
    from importlib.resources import files

    if sample_file:  # the samples ship with the package
        assert (files("napari_medai") / "sample_data" / sample_file).is_file(), f"sample_data/{sample_file} is missing"
    viewer.open_sample("napari-medai", key)
    images = [layer for layer in viewer.layers if layer._type_string == "image"]
    assert images, f"sample {key} added no image layer"
    assert images[0].data.ndim == 3 and min(images[0].data.shape) > 8


def _bad_inputs(small_ct):
    """(layer kind, data, kwargs, expected message); each is the viewer's only layer."""
    return [
        ("labels", (small_ct > 0).astype(np.uint8), {"name": "mask"},
         "select an image layer: 'mask' is a Labels layer"),
        ("points", np.array([[1.0, 2.0, 3.0]]), {"name": "marks"},
         "select an image layer: 'marks' is a Points layer"),
        ("image", small_ct[5], {"name": "slice"}, "'slice' has 2 dimension(s)"),
        ("image", np.full_like(small_ct, -1000.0), {"name": "air"}, "the image 'air' is constant"),
        ("image", np.where(small_ct > 0, np.nan, small_ct), {"name": "holes"}, "NaN or infinite value"),
        ("image", small_ct, {"name": "flat-z", "scale": (0, 1, 1)}, "voxel spacing must be positive"),
    ]


def _add(viewer, kind, data, kwargs):
    kwargs = dict(kwargs)
    scale = kwargs.pop("scale", None)
    layer = getattr(viewer, f"add_{kind}")(data, **kwargs)
    if scale is not None:  # napari refuses scale 0 at creation and while drawing, but keeps it
        with suppress(np.linalg.LinAlgError):
            layer.scale = scale
    return layer


def test_bad_input_gives_a_clear_message_and_changes_no_layer(qtbot, viewer, small_ct, notifications):
    widget = open_widget(viewer, "Segmentation")
    widget.add_model_path("a-model-that-is-never-loaded.pt")  # so only the input can fail
    for kind, data, kwargs, message in _bad_inputs(small_ct):
        viewer.layers.clear()
        layer = _add(viewer, kind, data, kwargs)
        viewer.layers.selection.active = layer
        snapshot = layer_snapshot(viewer)
        assert run_and_wait(qtbot, widget) == "error", kwargs["name"]
        last_severity, last_message = notifications()[-1]
        assert last_severity == "error" and message in last_message, (kwargs["name"], last_message)
        assert message in widget.status_label.text()
        assert_unchanged(viewer, snapshot)
        assert widget.run_button.isEnabled()


def _fake_inference(probabilities, steps=4, delay_s=0.0):
    """Replace the engine call of every task widget by a fake core job."""

    def make_job(self, volume, spacing, params):
        return fake_core(probabilities, steps=steps, delay_s=delay_s)

    return make_job


def _two_class_probabilities(shape):
    probs = np.zeros((2, *shape), np.float32)
    probs[0] = 1.0
    probs[:, 3:7, 5:12, 6:14] = [[[[0.1]]], [[[0.9]]]]  # a 4 x 7 x 8 voxel "lesion"
    probs[:, 9, 20, 20] = [0.2, 0.8]  # one voxel: a speck the minimum size removes
    return probs


def test_segmentation_adds_new_layers_in_the_inputs_space(qtbot, viewer, ct_layer, monkeypatch):
    probs = _two_class_probabilities(ct_layer.data.shape)
    fake_engine(monkeypatch, probs, extra={"lesions": [1]})  # the minimum size applies to class 1
    widget = open_widget(viewer, "Segmentation")
    widget.add_model_path("fake.pt")
    widget.probability_check.setChecked(True)
    widget.min_size_box.setValue(10.0)  # mm³: the 1.6 mm³ speck goes, the lesion stays
    before = ct_layer.data.copy()
    assert run_and_wait(qtbot, widget) == "done"
    np.testing.assert_array_equal(ct_layer.data, before)  # the input is untouched
    assert widget.progress_bar.value() == widget.progress_bar.maximum()
    labels, probability = viewer.layers["ct segmentation"], viewer.layers["ct lesion probability"]
    assert labels._type_string == "labels" and probability._type_string == "image"
    assert int((labels.data == 1).sum()) == 4 * 7 * 8
    for output in (labels, probability):
        np.testing.assert_allclose(output.scale, ct_layer.scale)
        np.testing.assert_allclose(output.translate, ct_layer.translate)
        np.testing.assert_allclose(output.affine.affine_matrix, ct_layer.affine.affine_matrix)
    assert widget.layer_picker.current_layer() is ct_layer  # outputs don't become the input

    first = labels.data.copy()
    assert run_and_wait(qtbot, widget) == "done"  # a second run adds, never replaces
    assert len([layer for layer in viewer.layers if layer.name.startswith("ct segmentation")]) == 2
    np.testing.assert_array_equal(viewer.layers["ct segmentation"].data, first)


def test_detection_adds_findings_at_the_lesion(qtbot, viewer, ct_layer, monkeypatch):
    import torch

    from napari_medai.widgets._threads import default_job_threads

    probs = _two_class_probabilities(ct_layer.data.shape)
    threads_seen = []
    fake_engine(monkeypatch, probs, threads_seen=threads_seen)
    main_threads = torch.get_num_threads()
    widget = open_widget(viewer, "Lesion detection")
    widget.add_model_path("fake.pt")
    widget.max_findings_box.setValue(1)
    before = ct_layer.data.copy()
    assert run_and_wait(qtbot, widget) == "done"
    np.testing.assert_array_equal(ct_layer.data, before)  # the input is untouched
    findings = viewer.layers["ct findings"]
    assert len(findings.data) == 1
    np.testing.assert_allclose(findings.data[0], [4.5, 8.0, 9.5])  # centre of the block, in voxels
    assert findings.features["score"][0] == pytest.approx(0.9)
    np.testing.assert_allclose(findings.scale, ct_layer.scale)
    # The model ran with one core left for the viewer; the viewer's thread kept its own count.
    assert threads_seen == [default_job_threads()]
    assert torch.get_num_threads() == main_threads


def test_detection_says_when_max_findings_cut_the_list(qtbot, viewer, ct_layer, monkeypatch, notifications):
    probs = _two_class_probabilities(ct_layer.data.shape)
    probs[:, 3:6, 14:19, 14:19] = [[[[0.3]]], [[[0.7]]]]  # a second lesion, scoring lower
    probs[:, 9, 20, 20] = [0.6, 0.4]  # the speck under the threshold: two findings in all
    fake_engine(monkeypatch, probs)
    widget = open_widget(viewer, "Lesion detection")
    widget.add_model_path("fake.pt")
    widget.threshold_box.setValue(0.5)
    widget.max_findings_box.setValue(2)
    assert run_and_wait(qtbot, widget) == "done"
    assert len(viewer.layers["ct findings"].data) == 2
    assert not any("than the" in message for _severity, message in notifications())
    widget.max_findings_box.setValue(1)
    assert run_and_wait(qtbot, widget) == "done"
    listed = viewer.layers["ct findings [1]"]
    assert len(listed.data) == 1 and listed.features["score"][0] == pytest.approx(0.9)  # the higher one
    assert any("more findings reached the score threshold 0.50 than the 1 listed" in message
               for _severity, message in notifications())


@pytest.mark.parametrize("strength", [0.5, 0.2])
def test_denoising_blends_with_strength_and_shows_the_difference(qtbot, viewer, ct_layer, monkeypatch, strength):
    clean = np.full((1, *ct_layer.data.shape), 5.0, np.float32)
    monkeypatch.setattr(TaskWidget, "_make_job", _fake_inference(clean))
    ct_layer.metadata["modality"] = "CT"
    widget = open_widget(viewer, "Denoising")
    widget.add_model_path("fake.pt")
    widget.strength_box.setValue(strength)  # 0.2: not symmetric, so input and output cannot swap
    widget.difference_check.setChecked(True)
    assert run_and_wait(qtbot, widget) == "done"
    denoised, difference = viewer.layers["ct denoised"], viewer.layers["ct difference"]
    expected = (1 - strength) * ct_layer.data + strength * 5.0
    np.testing.assert_allclose(denoised.data, expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(difference.data, ct_layer.data - denoised.data, atol=1e-3)
    # the denoised image is still CT; the difference is no image in HU, and saved must not reopen as one
    assert (denoised.metadata["modality"], difference.metadata["modality"]) == ("CT", "unknown")


def test_denoising_keeps_an_integer_ct_integer_and_refuses_strength_zero(qtbot, viewer, small_ct, monkeypatch):
    clean = np.full((1, *small_ct.shape), 5.0, np.float32)
    monkeypatch.setattr(TaskWidget, "_make_job", _fake_inference(clean))
    ct = viewer.add_image(np.rint(small_ct).astype(np.int16), name="ct16")
    widget = open_widget(viewer, "Denoising")
    widget.add_model_path("fake.pt")
    widget.strength_box.setValue(0.3)
    assert run_and_wait(qtbot, widget) == "done"
    denoised = viewer.layers["ct16 denoised"].data
    # as denoise() and `medai denoise` write it: the input's dtype, rounded
    assert denoised.dtype == np.int16
    np.testing.assert_array_equal(denoised, np.rint(0.7 * ct.data.astype(np.float32) + 0.3 * 5.0).astype(np.int16))
    names = [layer.name for layer in viewer.layers]
    widget.strength_box.setValue(0.0)
    assert run_and_wait(qtbot, widget) == "error"
    assert "strength 0 keeps the image as it is" in widget.status_label.text()
    assert [layer.name for layer in viewer.layers] == names


def test_cancel_in_the_widget_stops_and_adds_nothing(qtbot, viewer, ct_layer, monkeypatch):
    probs = _two_class_probabilities(ct_layer.data.shape)
    steps_run = []
    # 500 steps of 10 ms that report progress only at the first and the last: only the cancel
    # token the widget hands to the core can stop them early
    fake_engine(monkeypatch, probs, steps=500, delay_s=0.01, steps_run=steps_run, progress_every=500)
    widget = open_widget(viewer, "Segmentation")
    widget.add_model_path("fake.pt")
    snapshot = layer_snapshot(viewer)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run_button.click()
        assert not widget.run_button.isEnabled()
        qtbot.waitUntil(lambda: widget.progress_bar.value() > 0, timeout=TIMEOUT_MS)
        at_cancel = len(steps_run)
        widget.cancel_button.click()
        clicked = time.monotonic()
    after_cancel_s = time.monotonic() - clicked
    assert blocker.args == ["cancelled"]
    # the model itself stopped within a step of Cancel, and the job ended at once (not after
    # the 4 s or more the remaining steps take)
    assert at_cancel <= len(steps_run) <= at_cancel + 2 and len(steps_run) < 250, (at_cancel, len(steps_run))
    assert after_cancel_s < 2.5
    assert widget.progress_bar.value() == 0  # the bar does not pretend it finished
    assert_unchanged(viewer, snapshot)
    assert widget.run_button.isEnabled() and "cancelled" in widget.status_label.text()


def test_the_picker_follows_the_users_image_choice(viewer, small_ct):
    first = viewer.add_image(small_ct, name="first")
    # docked as a plugin: the widget's viewer is napari's PublicOnlyProxy, whose active layer
    # is a new proxy object each time it is read
    widget = open_widget(viewer, "Denoising")
    second = viewer.add_image(small_ct + 1, name="second")
    viewer.add_labels((small_ct > 0).astype(np.uint8), name="mask")
    assert [widget.layer_picker.itemText(i) for i in range(widget.layer_picker.count())] == ["first", "second"]
    assert widget.layer_picker.current_layer() is second  # napari made the new image active
    viewer.layers.selection.active = first
    assert widget.layer_picker.current_layer() is first
    viewer.layers.selection.active = second  # not the first item of the list
    assert widget.layer_picker.current_layer() is second
    second.name = "renamed"
    assert widget.layer_picker.currentText() == "renamed"
    viewer.layers.remove(second)
    assert widget.layer_picker.current_layer() is first


def test_closing_the_dock_cancels_its_job_and_lets_go_of_the_viewer(qtbot, viewer, ct_layer, monkeypatch):
    probs = _two_class_probabilities(ct_layer.data.shape)
    fake_engine(monkeypatch, probs)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Lesion detection")
    widget.add_model_path("fake.pt")
    assert run_and_wait(qtbot, widget) == "done"  # findings: "Add missed nodule" can be armed
    widget.mark_button.setChecked(True)
    assert widget._mark_on_click in viewer.mouse_drag_callbacks
    steps_run = []
    # the next run is slow, and only the cancel token handed to the core can stop it early
    fake_engine(monkeypatch, probs, steps=500, delay_s=0.01, steps_run=steps_run, progress_every=500)
    names = [layer.name for layer in viewer.layers]
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.run_button.click()
        qtbot.waitUntil(lambda: widget.progress_bar.value() > 0, timeout=TIMEOUT_MS)
        at_close = len(steps_run)
        # napari 0.9 closes a dock with widget().setParent(None): the widget is not deleted
        viewer.window.remove_dock_widget(dock)
        closed = time.monotonic()
    after_close_s = time.monotonic() - closed
    assert ended.args == ["cancelled"]
    # the model stopped within a step of the close, and the job ended at once
    assert at_close <= len(steps_run) <= at_close + 2 and len(steps_run) < 250, (at_close, len(steps_run))
    assert after_close_s < 2.5
    assert [layer.name for layer in viewer.layers] == names
    assert widget._mark_on_click not in viewer.mouse_drag_callbacks  # a click measures nothing
    # the closed widget no longer follows the layer list
    images, targets = widget.layer_picker.count(), widget.target_picker.count()
    viewer.add_image(ct_layer.data, name="later")
    viewer.add_labels(np.zeros(ct_layer.data.shape, np.int32), name="later labels")
    assert (widget.layer_picker.count(), widget.target_picker.count()) == (images, targets)


def _remove_during_run(qtbot, viewer, widget, layer):
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.run_button.click()
        qtbot.waitUntil(lambda: widget.progress_bar.value() > 0, timeout=TIMEOUT_MS)
        viewer.layers.remove(layer)
    return ended.args[0]


def test_removing_the_image_while_its_job_runs_adds_nothing_and_says_so(qtbot, viewer, ct_layer, monkeypatch,
                                                                      notifications):
    fake_engine(monkeypatch, _two_class_probabilities(ct_layer.data.shape), steps=100, delay_s=0.02)
    widget = open_widget(viewer, "Segmentation")
    widget.add_model_path("fake.pt")
    assert _remove_during_run(qtbot, viewer, widget, ct_layer) == "error"
    assert len(viewer.layers) == 0
    message = "'ct' was removed while segmentation ran; nothing was added"
    assert message in widget.status_label.text()
    assert ("error", f"Segmentation: {message}") in notifications()
    assert widget.volume_table.rowCount() == 0 and widget.run_button.isEnabled()


def test_detection_keeps_its_last_run_when_the_image_goes_during_the_next(qtbot, viewer, ct_layer, monkeypatch,
                                                                          notifications):
    probs = _two_class_probabilities(ct_layer.data.shape)
    fake_engine(monkeypatch, probs)
    widget = open_widget(viewer, "Lesion detection")
    widget.add_model_path("fake.pt")
    assert run_and_wait(qtbot, widget) == "done"
    findings, outputs = widget.findings_layer, [layer.name for layer in viewer.layers][1:]
    fake_engine(monkeypatch, probs, steps=100, delay_s=0.02)
    assert _remove_during_run(qtbot, viewer, widget, ct_layer) == "error"
    assert [layer.name for layer in viewer.layers] == outputs  # nothing named after the removed image
    message = "'ct' was removed while lesion detection ran; nothing was added"
    assert message in widget.status_label.text()
    assert ("error", f"Lesion detection: {message}") in notifications()
    assert widget.findings_layer is findings
    # a mark says why it cannot be measured, not "run the detection first"
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.measure_at((0.0, 0.0, 0.0))
    assert ended.args == ["error"]
    assert "'ct', the image the findings came from, was removed" in widget.status_label.text()
    assert "run the detection first" not in widget.status_label.text()


def _pickers(*widgets):
    return [widget.layer_picker.currentText() for widget in widgets]


def test_one_widgets_outputs_become_no_other_widgets_input(qtbot, viewer, ct_layer, monkeypatch):
    monkeypatch.setattr(TaskWidget, "_make_job", _fake_inference(np.full((1, *ct_layer.data.shape), 5.0, np.float32)))
    fake_engine(monkeypatch, _two_class_probabilities(ct_layer.data.shape), extra={"lesions": [1]})
    denoising, segmentation, detection = (open_widget(viewer, name) for name in
                                          ("Denoising", "Segmentation", "Lesion detection"))
    for widget in (denoising, segmentation):
        widget.add_model_path("fake.pt")
    segmentation.probability_check.setChecked(True)
    assert run_and_wait(qtbot, denoising) == "done"
    assert viewer.layers.selection.active.name == "ct denoised"  # napari made it active
    assert _pickers(denoising, segmentation, detection) == ["ct"] * 3
    assert run_and_wait(qtbot, segmentation) == "done"
    assert viewer.layers.selection.active.name == "ct lesion probability"
    assert _pickers(denoising, segmentation, detection) == ["ct"] * 3
    # an output the user selects is followed
    viewer.layers.selection.active = viewer.layers["ct denoised"]
    assert _pickers(denoising, segmentation, detection) == ["ct denoised"] * 3


def _new_data(layer):
    layer.data = layer.data + 1.0  # the same shape, other voxels


def _new_shape(layer):
    layer.data = layer.data[:, :20, :20].copy()


def _new_grid(layer):
    layer.scale = (1.0, 1.0, 1.0)


@pytest.mark.parametrize("change", [_new_data, _new_shape, _new_grid])
def test_changing_the_images_data_while_its_job_runs_adds_nothing_and_says_so(qtbot, viewer, ct_layer, monkeypatch,
                                                                            notifications, change):
    fake_engine(monkeypatch, _two_class_probabilities(ct_layer.data.shape), steps=50, delay_s=0.02)
    widget = open_widget(viewer, "Segmentation")
    widget.add_model_path("fake.pt")
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.run_button.click()
        qtbot.waitUntil(lambda: widget.progress_bar.value() > 0, timeout=TIMEOUT_MS)
        change(ct_layer)
    assert ended.args == ["error"]
    assert [layer.name for layer in viewer.layers] == ["ct"]
    message = "'ct' changed while segmentation ran; nothing was added"
    assert message in widget.status_label.text()
    assert ("error", f"Segmentation: {message}") in notifications()
    assert widget.volume_table.rowCount() == 0 and widget.run_button.isEnabled()


def _lazy_layer(viewer, volume, reads):
    import dask.array as da

    def read(block):
        reads.append(1)
        return block

    lazy = da.from_array(volume, chunks=volume.shape).map_blocks(read, dtype=volume.dtype)
    # hidden: napari does not draw it, so every read counted is the widget's
    return viewer.add_image(lazy, name="lazy", contrast_limits=(-1000, 400), visible=False)


@pytest.mark.parametrize("display_name", ["Denoising", "Segmentation"])
def test_a_lazy_image_is_read_once_per_run(qtbot, viewer, small_ct, monkeypatch, display_name):
    shape = small_ct.shape
    monkeypatch.setattr(TaskWidget, "_make_job", _fake_inference(np.full((1, *shape), 5.0, np.float32)))
    fake_engine(monkeypatch, _two_class_probabilities(shape))
    reads = []
    _lazy_layer(viewer, small_ct, reads)
    widget = open_widget(viewer, display_name)
    widget.add_model_path("fake.pt")
    if display_name == "Denoising":
        widget.difference_check.setChecked(True)  # its job converts the input twice more
        widget.strength_box.setValue(0.5)
    before = len(reads)
    assert run_and_wait(qtbot, widget) == "done"
    assert len(reads) - before == 1
    if display_name == "Denoising":  # the job's conversions all got the volume's voxels
        denoised, difference = viewer.layers["lazy denoised"].data, viewer.layers["lazy difference"].data
        np.testing.assert_allclose(denoised, 0.5 * small_ct + 0.5 * 5.0, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(difference, small_ct - denoised, atol=1e-3)
    else:
        assert viewer.layers["lazy segmentation"].data.shape == shape


BUILT_IN = {"Lesion detection": "lung-nodule-detection", "Segmentation": "chest-ct-lung-nodule",
            "Denoising": "ct-lowdose-denoising", "Screening report": "lung-nodule-detection"}


def _select_built_in(widget, display_name):
    names = [getattr(widget.model_box.itemData(i), "name", None) for i in range(widget.model_box.count())]
    widget.model_box.setCurrentIndex(names.index(BUILT_IN[display_name]))


@pytest.mark.parametrize("display_name", WIDGETS)
def test_every_widget_refuses_a_wrong_layer_and_an_empty_image(qtbot, viewer, small_ct, notifications,
                                                               display_name):
    widget = open_widget(viewer, display_name)
    _select_built_in(widget, display_name)
    for kind, data, kwargs, message in [_bad_inputs(small_ct)[0], _bad_inputs(small_ct)[3]]:  # Labels; constant
        viewer.layers.clear()
        layer = _add(viewer, kind, data, kwargs)
        viewer.layers.selection.active = layer
        snapshot = layer_snapshot(viewer)
        assert run_and_wait(qtbot, widget) == "error", (display_name, kwargs["name"])
        severity, text = notifications()[-1]
        assert severity == "error" and message in text, (display_name, text)
        assert_unchanged(viewer, snapshot)


@pytest.mark.parametrize("display_name", WIDGETS)
def test_every_widget_refuses_an_mr_image_for_its_ct_model(qtbot, viewer, rng, notifications, display_name):
    widget = open_widget(viewer, display_name)
    _select_built_in(widget, display_name)  # each built-in picked here is a CT model
    viewer.layers.clear()
    t1 = viewer.add_image(rng.uniform(0, 400, (10, 40, 40)).astype(np.float32), name="t1", metadata={"modality": "MR"})
    viewer.layers.selection.active = t1
    snapshot = layer_snapshot(viewer)
    assert run_and_wait(qtbot, widget) == "error", display_name
    severity, text = notifications()[-1]
    assert severity == "error" and "reads CT in Hounsfield units" in text, (display_name, text)
    assert_unchanged(viewer, snapshot)
    assert widget.run_button.isEnabled()


@pytest.mark.parametrize("display_name", WIDGETS)
def test_every_widget_refuses_a_layer_its_file_called_mr_even_with_values_like_hu(
        qtbot, viewer, small_ct, notifications, display_name):
    # the values pass a CT model's checks: only the modality the reader took from the file says
    # otherwise, as medai segment/detect/screen read the file's header
    widget = open_widget(viewer, display_name)
    _select_built_in(widget, display_name)
    viewer.layers.clear()
    t1 = viewer.add_image(small_ct, name="t1", metadata={"modality": "MR"})
    viewer.layers.selection.active = t1
    snapshot = layer_snapshot(viewer)
    assert run_and_wait(qtbot, widget) == "error", display_name
    severity, text = notifications()[-1]
    assert severity == "error" and ("'t1' is an MR image by the file it was opened from, but model "
                                    f"'{BUILT_IN[display_name]}' is made for CT: choose a model made for MR") in text
    assert_unchanged(viewer, snapshot)
    # the same voxels said to be CT, or said nothing of, get past the check (the screening widget
    # then finds too little lung in this small crop for a report)
    for metadata in ({"modality": "CT"}, {}):
        t1.metadata = metadata
        seen = len(notifications())
        outcome = run_and_wait(qtbot, widget)
        assert outcome == "done" or "lung" in notifications()[-1][1], (display_name, notifications()[-1])
        assert not any("MR image" in text for _, text in notifications()[seen:])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on machines without CUDA")
@pytest.mark.parametrize("display_name", WIDGETS)
def test_every_widget_says_plainly_that_there_is_no_gpu(qtbot, viewer, ct_layer, notifications, display_name):
    widget = open_widget(viewer, display_name)
    _select_built_in(widget, display_name)
    widget.device_box.setCurrentText("cuda")
    viewer.layers.selection.active = ct_layer
    snapshot = layer_snapshot(viewer)
    assert run_and_wait(qtbot, widget) == "error"
    severity, text = notifications()[-1]
    assert severity == "error" and "CUDA" in text, text
    assert_unchanged(viewer, snapshot)
    assert widget.run_button.isEnabled()


@pytest.mark.parametrize("display_name", ["Segmentation", "Lesion detection", "Screening report"])
def test_each_widget_selects_its_default_built_in_model_first(viewer, display_name):
    # (denoising: "automatic" first.) A variant card (extra.variant_of, e.g. chest-ct-lung-nodule-argmax)
    # is listed after its model; the screening widget's segmentation picker follows the same rule.
    widget = open_widget(viewer, display_name)
    boxes = [(widget.model_box, BUILT_IN[display_name])]
    if display_name == "Screening report":
        boxes.append((widget.segmenter_box, "chest-ct-lung-nodule"))
    for box, default in boxes:
        assert getattr(box.itemData(0), "name", None) == default
        names = [getattr(box.itemData(i), "name", None) for i in range(box.count())]
        for i, name in enumerate(names):
            card = box.itemData(i)
            if getattr(card, "extra", {}).get("variant_of"):
                assert names.index(card.extra["variant_of"]) < i


def _stand_in_preload(monkeypatch, tmp_path, name: str, source: str) -> None:
    """The Segmentation dock preloads only ``name``, a module of the test's own (``source``),
    with no preload run before in this process."""
    import sys

    from napari_medai.widgets import _base
    from napari_medai.widgets.segmentation import SegmentationWidget

    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(_base, "_preloads", [])
    monkeypatch.setattr(_base, "_preload_requested", set())
    monkeypatch.setattr(SegmentationWidget, "preload_modules", (name,))


def test_a_dock_imports_what_a_run_needs_in_the_background_and_a_run_waits_for_it(
        qtbot, viewer, ct_layer, tmp_path, monkeypatch):
    """torch and MONAI imported by the first Run's worker held the GIL and froze the viewer 0.6-2.6 s
    about a second after the click.  The dock, once shown, imports them in a background thread
    (not on the Qt thread: 3.6 s frozen), and a Run's job waits for that thread rather than import
    beside it.  A module of the test's own, whose import lasts until the test lets it end, stands
    for them."""
    import sys

    from napari_medai.widgets import _base

    (tmp_path / "medai_gate.py").write_text("import threading\nOPEN = threading.Event()\n")
    _stand_in_preload(monkeypatch, tmp_path, "medai_slow_import",
                      "import threading\nimport medai_gate\nIMPORTED_BY = threading.current_thread().name\n"
                      "medai_gate.OPEN.wait(10)\n")
    import medai_gate
    fake_engine(monkeypatch, _two_class_probabilities(ct_layer.data.shape))
    widget = open_widget(viewer, "Segmentation")
    widget.add_model_path("fake.pt")
    assert "medai_slow_import" not in sys.modules  # the dock is built first
    # Run at once: the job finds the import running and waits for it, saying so
    seen = []
    original = _base.wait_for_preload

    def watched(progress=None, modules=()):
        running = any(thread.is_alive() for thread in _base._preloads)
        medai_gate.OPEN.set()  # the import may end now
        original(progress, modules)
        seen.append((running, "medai_slow_import" in sys.modules))

    monkeypatch.setattr(_base, "wait_for_preload", watched)
    qtbot.waitUntil(lambda: bool(_base._preloads), timeout=TIMEOUT_MS)
    assert run_and_wait(qtbot, widget) == "done"
    assert seen == [(True, True)]
    assert sys.modules["medai_slow_import"].IMPORTED_BY == "napari-medai preload"  # not the Qt thread
    # a second dock asks for nothing more: the module is imported once a process
    open_widget(viewer, "Segmentation")
    qtbot.wait(50)
    assert len(_base._preloads) == 1


def test_a_run_clicked_before_the_preload_started_imports_under_the_same_lock(
        qtbot, viewer, ct_layer, tmp_path, monkeypatch):
    """The preload starts from a timer once the dock is shown: a Run clicked before it imported
    MONAI in its job while the preload thread imported it too, and the Run failed with "cannot
    import name 'Compose' from partially initialized module" (seen in this suite).  The job now
    imports the dock's modules itself, under the lock the preload thread takes."""
    import sys

    from napari_medai.widgets import _base

    _stand_in_preload(monkeypatch, tmp_path, "medai_early",
                      "import threading\nfrom napari_medai.widgets import _base\n"
                      "HELD = _base._IMPORTING.locked()\nIMPORTED_BY = threading.current_thread().name\n")
    monkeypatch.setattr(_base, "preload", lambda modules: None)  # the dock's timer has not fired yet
    fake_engine(monkeypatch, _two_class_probabilities(ct_layer.data.shape))
    widget = open_widget(viewer, "Segmentation")
    widget.add_model_path("fake.pt")
    assert run_and_wait(qtbot, widget) == "done"
    early = sys.modules["medai_early"]
    assert early.HELD and early.IMPORTED_BY != "napari-medai preload"  # by the job, holding the lock


def test_the_preload_holds_what_a_first_run_imports():
    """models.networks imports MONAI's networks only when a card names one, so the preload never
    reached MONAI: the first Run imported about 1,400 modules in its job, where Cancel waited for
    them (an audit helper's finding).  In a fresh process: after the Segmentation dock's preload,
    a segmentation imports no MONAI module."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import importlib, sys
        import numpy as np
        from napari_medai.widgets.segmentation import SegmentationWidget
        for name in SegmentationWidget.preload_modules:
            importlib.import_module(name)
        before = set(sys.modules)
        import napari_medai
        volume = np.full((16, 48, 48), -800, np.int16)
        volume[4:12, 16:32, 16:32] = 40
        napari_medai.segment(volume, (2.0, 1.0, 1.0), postprocess=False)
        print(sorted(m for m in set(sys.modules) - before if m.split(".")[0] == "monai"))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
