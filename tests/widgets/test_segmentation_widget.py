"""Segmentation widget on a small crop of the chest phantom, with a fixed-rule test model
installed as a built-in (so the model picker lists it) in a temporary weights folder."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt
from fixed_rule_models import expected_labels, install, segmentation_card
from scipy import ndimage
from widget_helpers import (
    assert_unchanged,
    count_forward_calls,
    layer_snapshot,
    pick_load_entry_and_cancel,
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
                            scale=geometry["scale"], translate=translate, metadata={"modality": "CT"})


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
    probability = viewer.layers["phantom crop lesion probability"]
    # labels keep the image's modality (as medai segment writes them); the probability is no CT
    assert labels.metadata["modality"] == "CT" and probability.metadata["modality"] == "unknown"
    for output in (labels, probability):
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
    # each nodule with the outline it got (this card refines no edge: the network's)
    outlines = labels.metadata["lesion_outlines"]
    assert outlines and {r["outline"] for r in outlines} == {"network"}
    assert sum(r["voxels"] for r in outlines) == int((labels.data == 2).sum())


def test_a_model_reinstalled_under_its_name_while_the_widget_is_open_runs_with_its_new_weights(
        qtbot, viewer, weights_dir, phantom_crop):
    """``medai train ... --install-as NAME --replace`` with napari open: the list's card was read
    before, and its sha256 called the new weights "corrupted or replaced; reinstall"."""
    from fixed_rule_models import unit

    from napari_medai.models.networks import build_network
    from napari_medai.models.registry import save_builtin

    install(segmentation_card(roi_size=(8, 32, 32)), weights_dir)
    widget = open_segmentation(viewer)
    choose(widget, "rule-seg")
    card = segmentation_card(roi_size=(8, 32, 32), nodule_above=unit(0.0))  # other weights (thresholds)
    save_builtin(card, build_network(card), folder=weights_dir, replace=True)
    assert run_and_wait(qtbot, widget) == "done", widget.status_label.text()
    labels = viewer.layers["phantom crop segmentation"].data
    np.testing.assert_array_equal(labels, expected_labels(phantom_crop.data, nodule_above_hu=0.0))


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


def test_a_card_file_sets_the_minimum_lesion_size_and_runs_as_the_cli_would(qtbot, viewer, weights_dir, phantom_crop,
                                                                            tmp_path):
    from napari_medai.api import segment
    from napari_medai.widgets._layers import layer_spacing

    install(segmentation_card(roi_size=(8, 32, 32)), weights_dir)  # a built-in model, minimum size 0
    strict = segmentation_card("rule-strict", roi_size=(8, 32, 32))
    strict.extra["min_lesion_mm3"] = 500.0
    card_path = install(strict, tmp_path / "mine")
    widget = open_segmentation(viewer)
    for path in (card_path.with_suffix(".pt"), card_path):  # the weights beside their card, the card
        choose(widget, "rule-seg")
        assert widget.min_size_box.value() == 0.0
        widget.add_model_path(str(path))  # what "Load model file…" does after its dialog
        assert widget.min_size_box.value() == 500.0
    assert run_and_wait(qtbot, widget) == "done"
    labels = viewer.layers["phantom crop segmentation"].data
    cli = segment(phantom_crop.data, layer_spacing(phantom_crop), model=str(card_path)).labels  # medai segment
    np.testing.assert_array_equal(labels, cli)
    assert (labels == 2).sum() < (expected_labels(phantom_crop.data) == 2).sum()  # the card removed lesions


def test_the_minimum_size_overrides_the_card_only_when_changed(viewer, weights_dir):
    card = segmentation_card()
    card.extra["min_lesion_mm3"] = 7.25  # the box shows it rounded to 0.1 mm³
    install(card, weights_dir)
    widget = open_segmentation(viewer)
    choose(widget, "rule-seg")
    assert widget.min_size_box.value() == pytest.approx(7.25, abs=0.05)
    assert widget.params().min_lesion_mm3 is None  # segment() takes the card's 7.25 itself
    widget.min_size_box.setValue(3.0)
    assert widget.params().min_lesion_mm3 == 3.0
    widget.add_model_path("plain.pt")  # a TorchScript file may carry its card: it decides ...
    assert widget.min_size_box.text() == "model's own" and widget.params().min_lesion_mm3 is None
    widget.min_size_box.setValue(3.0)  # ... unless a value is typed
    assert widget.params().min_lesion_mm3 == 3.0


@pytest.mark.parametrize("entry", ["Load model file…", "Load MONAI bundle folder…"])
def test_a_cancelled_load_dialog_leaves_the_model_and_the_minimum_size_as_they_were(viewer, weights_dir, tmp_path,
                                                                                   monkeypatch, entry):
    card = segmentation_card()
    card.extra["min_lesion_mm3"] = 7.25
    install(card, weights_dir)
    widget = open_segmentation(viewer)
    choose(widget, "rule-seg")
    widget.min_size_box.setValue(3.0)  # the reader's own value, over the card's
    before = widget.params()
    assert pick_load_entry_and_cancel(widget, monkeypatch, entry) == ["file" if "file" in entry else "folder"]
    assert widget.model_box.currentText() == "rule-seg" and widget.params() == before
    assert widget.min_size_box.value() == 3.0
    # a model file loaded earlier sits at index 0; the reader went back to the built-in model
    widget.add_model_path(str(tmp_path / "mine.pt"))
    choose(widget, "rule-seg")
    widget.min_size_box.setValue(3.0)
    before = widget.params()
    pick_load_entry_and_cancel(widget, monkeypatch, entry)
    assert widget.model_box.currentText() == "rule-seg" and widget.params() == before


def test_label_values_that_are_no_class_are_drawn_in_napari_colours():
    from napari.layers import Labels

    from napari_medai.napari_hooks.label_classes import class_colormap

    classes = {0: {"name": "background", "color": "#000000"}, 1: {"name": "lung", "color": "#4aa3ff"},
               2: {"name": "nodule", "color": "#ff3030"}}
    colormap = class_colormap(classes)
    napari_default = Labels(np.zeros((2, 2), np.uint8)).colormap
    values = np.array([3, 4, 200, 255])  # painted with napari's "new label" (max + 1) and others
    np.testing.assert_allclose(colormap.map(values), napari_default.map(values))
    assert (colormap.map(values)[:, 3] == 1).all()
    np.testing.assert_allclose(colormap.map(2), [1.0, 0x30 / 255, 0x30 / 255, 1.0], atol=1e-3)
    assert colormap.map(0)[3] == 0 and colormap.map(1000)[3] == 1  # background only is transparent


def _table(widget) -> list[tuple[str, str]]:
    table = widget.volume_table
    return [(table.cell_text(r, 0), table.cell_text(r, 1)) for r in range(table.rowCount())]


def _shown(rows) -> list[tuple[str, str]]:
    """The table's text for class-volume rows."""
    from napari_medai.widgets._tables import VolumeTable

    table = VolumeTable()
    table.show_volumes(rows)
    return [(table.cell_text(r, 0), table.cell_text(r, 1)) for r in range(table.rowCount())]


def _volumes(labels) -> list[dict]:
    from napari_medai.postprocess import class_volumes
    from napari_medai.widgets._layers import layer_spacing

    names = {i: c["name"] for i, c in labels.metadata["classes"].items()}
    return class_volumes(labels.data, layer_spacing(labels), names)


def _erase(labels, value: int, fraction: float = 0.5) -> None:
    """An undoable edit, as a brush stroke makes: part of class ``value`` back to background."""
    where = np.nonzero(labels.data == value)
    with labels.block_history():
        labels.data_setitem(tuple(axis[: int(len(axis) * fraction)] for axis in where), 0)


def test_the_volume_table_follows_edits_and_forgets_a_removed_layer(qtbot, viewer, weights_dir, phantom_crop,
                                                                   monkeypatch):
    from napari_medai.widgets import segmentation

    install(segmentation_card(roi_size=(8, 32, 32)), weights_dir)
    widget = open_segmentation(viewer)
    choose(widget, "rule-seg")
    assert run_and_wait(qtbot, widget) == "done"
    labels = viewer.layers["phantom crop segmentation"]
    original = _table(widget)
    assert original == _shown(_volumes(labels))
    counted = []
    real_counts = segmentation.label_counts
    monkeypatch.setattr(segmentation, "label_counts", lambda data: counted.append(1) or real_counts(data))

    _erase(labels, 1)  # paint
    qtbot.waitUntil(lambda: _table(widget) != original, timeout=TIMEOUT_MS)
    assert _table(widget) == _shown(_volumes(labels)) and labels.metadata["class_volumes"] == _volumes(labels)
    labels.undo()  # no paint event: the undo history moved
    qtbot.waitUntil(lambda: _table(widget) == original, timeout=TIMEOUT_MS)
    assert labels.metadata["class_volumes"] == _volumes(labels)
    calls = len(counted)
    viewer.dims.set_point(0, viewer.dims.point[0] + float(labels.scale[0]))  # a slice change counts nothing
    qtbot.wait(3 * segmentation.RECOUNT_DELAY_MS)
    assert len(counted) == calls
    labels.data_setitem(tuple(np.array([[1], [2], [3]])), 3)  # napari's "new label": a row of its own
    qtbot.waitUntil(lambda: _table(widget)[-1][0] == "class 3", timeout=TIMEOUT_MS)
    decoration = widget.volume_table.item(2, 0).data(Qt.DecorationRole)
    np.testing.assert_allclose(decoration.getRgbF()[:3], labels.colormap.map(3)[:3], atol=3e-3)
    labels.data = np.zeros_like(labels.data)  # replaced
    qtbot.waitUntil(lambda: [v for _, v in _table(widget)] == ["0.000", "0.000"], timeout=TIMEOUT_MS)

    viewer.layers.remove(labels)
    assert widget.volume_table.rowCount() == 0
    assert "'phantom crop segmentation' was removed" in widget.volume_caption.text()


def test_a_new_run_or_a_closed_dock_stops_following_a_layer(qtbot, viewer, weights_dir, phantom_crop, monkeypatch):
    from napari_medai.widgets import segmentation

    install(segmentation_card(roi_size=(8, 32, 32)), weights_dir)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Segmentation")
    choose(widget, "rule-seg")
    assert run_and_wait(qtbot, widget) == "done"
    assert run_and_wait(qtbot, widget) == "done"
    first, second = viewer.layers["phantom crop segmentation"], viewer.layers["phantom crop segmentation [1]"]
    counted = []
    real_counts = segmentation.label_counts
    monkeypatch.setattr(segmentation, "label_counts", lambda data: counted.append(1) or real_counts(data))
    _erase(first, 1)  # the first run's layer is no longer followed
    qtbot.wait(3 * segmentation.RECOUNT_DELAY_MS)
    assert not counted and "[1]" in widget.volume_caption.text()
    _erase(second, 1)
    qtbot.waitUntil(lambda: _table(widget) == _shown(_volumes(second)), timeout=TIMEOUT_MS)

    shown, calls = _table(widget), len(counted)
    viewer.window.remove_dock_widget(dock)  # napari 0.9: the widget lives on, unparented
    _erase(second, 1)
    qtbot.wait(3 * segmentation.RECOUNT_DELAY_MS)
    assert _table(widget) == shown and len(counted) == calls
    viewer.window.add_dock_widget(widget)  # docked again: counts what it missed
    assert _table(widget) == _shown(_volumes(second))


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
