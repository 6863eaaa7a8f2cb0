"""Segmentation widget on a small crop of the chest phantom, with a fixed-rule test model
installed as a built-in (so the model picker lists it) in a temporary weights folder."""

from __future__ import annotations

import numpy as np
import pytest
from fixed_rule_models import expected_labels, install, segmentation_card
from scipy import ndimage
from widget_helpers import (
    assert_unchanged,
    count_forward_calls,
    layer_snapshot,
    record_cancel,
    run_and_cancel,
)

pytestmark = pytest.mark.gui
TIMEOUT_MS = 15_000
CROP = (slice(2, 18), slice(4, 44), slice(4, 44))


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    monkeypatch.setattr("napari_medai.models.registry.WEIGHTS_DIR", folder)
    return folder


@pytest.fixture
def phantom_crop(viewer):
    """A crop of a small chest phantom as an Image layer in the phantom's world space."""
    from napari_medai.io import Volume
    from napari_medai.phantoms import make_chest_ct

    phantom = make_chest_ct(0, shape=(20, 48, 48), spacing=(6.0, 4.0, 4.0), n_nodules=3)
    ct = Volume(phantom.hu, phantom.affine, modality="CT")
    start = np.array([s.start for s in CROP], dtype=float)
    geometry = ct.napari_geometry()
    translate = np.asarray(geometry["translate"]) + start * np.asarray(geometry["scale"])
    return viewer.add_image(phantom.hu[CROP].astype(np.float32), name="phantom crop",
                            scale=geometry["scale"], translate=translate)


def open_segmentation(viewer):
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Segmentation")
    return widget


def run_and_wait(qtbot, widget) -> str:
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.run_button.click()
    return ended.args[0]


def choose(widget, name: str) -> None:
    index = widget.model_box.findText(name)
    assert index >= 0, [widget.model_box.itemText(i) for i in range(widget.model_box.count())]
    widget.model_box.setCurrentIndex(index)


def test_segments_a_phantom_crop_into_an_aligned_labels_layer(qtbot, viewer, weights_dir, phantom_crop):
    card = segmentation_card(roi_size=(8, 32, 32))
    card.extra["min_lesion_mm3"] = 40.0
    install(card, weights_dir)
    widget = open_segmentation(viewer)
    items = [widget.model_box.itemText(i) for i in range(widget.model_box.count())]
    assert items[0] == "rule-seg" and "Load model file…" in items and "Load MONAI bundle folder…" in items
    choose(widget, "rule-seg")
    assert widget.min_size_box.value() == 40.0  # the card's minimum lesion size is the default
    widget.min_size_box.setValue(0.0)  # ... and the widget's value overrides it
    widget.probability_check.setChecked(True)
    before = phantom_crop.data.copy()
    assert run_and_wait(qtbot, widget) == "done"
    np.testing.assert_array_equal(phantom_crop.data, before)  # the input is untouched

    labels = viewer.layers["phantom crop segmentation"]
    np.testing.assert_array_equal(labels.data, expected_labels(phantom_crop.data))
    for output in (labels, viewer.layers["phantom crop lesion probability"]):
        np.testing.assert_allclose(output.scale, phantom_crop.scale)
        np.testing.assert_allclose(output.translate, phantom_crop.translate)
        np.testing.assert_allclose(output.affine.affine_matrix, phantom_crop.affine.affine_matrix)
    # class names under the cursor, colours from the card, background transparent
    assert list(labels.features["class"]) == ["background", "lung", "nodule"]
    np.testing.assert_allclose(labels.colormap.map(2), [0xE6 / 255, 0x19 / 255, 0x4B / 255, 1.0], atol=1e-3)
    assert labels.colormap.map(0)[3] == 0
    z, y, x = np.argwhere(labels.data == 2)[0]
    viewer.dims.set_point(0, labels.data_to_world((z, y, x))[0])
    assert "class: nodule" in labels.get_status(labels.data_to_world((z, y, x)), world=True)["value"]
    # per-class volumes in the dock
    voxel_ml = float(np.prod(phantom_crop.scale)) / 1000
    table = widget.volume_table
    assert [table.cell_text(r, 0) for r in range(table.rowCount())] == ["lung", "nodule"]
    assert float(table.cell_text(1, 1)) == pytest.approx((labels.data == 2).sum() * voxel_ml, rel=1e-3)
    assert widget.layer_picker.current_layer() is phantom_crop


def test_the_widgets_minimum_lesion_size_removes_small_lesions(qtbot, viewer, weights_dir, phantom_crop):
    install(segmentation_card(roi_size=(8, 32, 32)), weights_dir)
    widget = open_segmentation(viewer)
    choose(widget, "rule-seg")
    min_mm3 = 500.0
    widget.min_size_box.setValue(min_mm3)
    assert run_and_wait(qtbot, widget) == "done"
    labels = viewer.layers["phantom crop segmentation"].data
    expected = expected_labels(phantom_crop.data)
    components, _ = ndimage.label(expected == 2, structure=np.ones((3, 3, 3)))
    sizes_mm3 = np.bincount(components.ravel())[1:] * float(np.prod(phantom_crop.scale))
    assert (sizes_mm3 < min_mm3).any() and (sizes_mm3 >= min_mm3).any()
    big = np.isin(components, 1 + np.flatnonzero(sizes_mm3 >= min_mm3))
    np.testing.assert_array_equal(labels == 2, big)
    np.testing.assert_array_equal(labels == 1, expected == 1)  # other classes untouched


def test_cancel_stops_and_adds_no_layer(qtbot, viewer, weights_dir, phantom_crop, notifications, monkeypatch):
    from fixed_rule_models import ThresholdSegmenter

    install(segmentation_card(roi_size=(4, 8, 8), delay_s=0.05), weights_dir)  # ~100 slow batches
    forwards = count_forward_calls(monkeypatch, ThresholdSegmenter)
    tokens = record_cancel(monkeypatch, "napari_medai.inference.engine.run_model")
    widget = open_segmentation(viewer)
    choose(widget, "rule-seg")
    snapshot = layer_snapshot(viewer)
    status, at_cancel, after_cancel_s = run_and_cancel(
        qtbot, widget, lambda: widget.progress_bar.value() > 0, count=lambda: len(forwards), timeout_ms=TIMEOUT_MS)
    assert status == "cancelled"
    # the network stopped within a batch or two of Cancel, far from its ~100, and the job ended
    # at once; the engine got the widget's own token (the one Cancel set)
    assert len(forwards) <= at_cancel + 2 and len(forwards) < 50, (at_cancel, len(forwards))
    assert after_cancel_s < 2.5
    assert len(tokens) == 1 and tokens[0] is not None and tokens[0].cancelled
    assert_unchanged(viewer, snapshot)
    assert any("no layer was added" in message for _, message in notifications())
    assert widget.run_button.isEnabled()


def test_a_points_layer_gets_a_clear_message_and_nothing_changes(qtbot, viewer, weights_dir, notifications):
    install(segmentation_card(), weights_dir)
    marks = viewer.add_points(np.array([[1.0, 2.0, 3.0]]), name="marks")
    viewer.layers.selection.active = marks
    widget = open_segmentation(viewer)
    snapshot = layer_snapshot(viewer)
    assert run_and_wait(qtbot, widget) == "error"
    severity, message = notifications()[-1]
    assert severity == "error" and "select an image layer: 'marks' is a Points layer" in message
    assert_unchanged(viewer, snapshot)
    assert widget.volume_table.rowCount() == 0
