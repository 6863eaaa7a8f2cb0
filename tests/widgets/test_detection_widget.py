"""Lesion detection widget on a small crop of the chest phantom with a fixed-rule test model
(segmentation-based detection: bright regions inside the "lung" field become findings)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from fixed_rule_models import detection_card, install
from qtpy.QtCore import Qt
from qtpy.QtGui import QPalette
from widget_helpers import pick_load_entry_and_cancel

from napari_medai.errors import InputError
from napari_medai.postprocess.findings import axial_slice
from napari_medai.postprocess.report import CSV_FIELDS
from napari_medai.widgets._tables import attenuation_text

pytestmark = pytest.mark.gui
TIMEOUT_MS = 15_000
CROP = (slice(2, 18), slice(4, 44), slice(4, 44))
FIELDS = {"rank", "score", "diameter_mm", "short_axis_mm", "mean_diameter_mm", "volume_ml", "outline", "lung_rads",
          "attenuation", "solid_diameter_mm", "lung_rads_by_attenuation", "review", "added_by_reader",
          "slice", "center_z_mm", "center_y_mm", "center_x_mm", "bbox_voxel"}


@pytest.fixture
def widget_and_crop(viewer, tmp_path, monkeypatch):
    """The detection widget with the test model chosen, and a phantom crop layer."""
    from napari_medai.io import Volume
    from napari_medai.phantoms import make_chest_ct

    monkeypatch.setattr("napari_medai.models.registry.WEIGHTS_DIR", tmp_path / "weights")
    install(detection_card(roi_size=(8, 32, 32)), tmp_path / "weights")
    phantom = make_chest_ct(0, shape=(20, 48, 48), spacing=(6.0, 4.0, 4.0), n_nodules=3)
    geometry = Volume(phantom.hu, phantom.affine).napari_geometry()
    start = np.array([s.start for s in CROP], dtype=float)
    crop = viewer.add_image(phantom.hu[CROP].astype(np.float32), name="crop", scale=geometry["scale"],
                            translate=np.asarray(geometry["translate"]) + start * np.asarray(geometry["scale"]))
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Lesion detection")
    widget.model_box.setCurrentIndex(widget.model_box.findText("rule-det"))
    widget.max_findings_box.setValue(8)
    return widget, crop


def run_and_wait(qtbot, widget) -> str:
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.run_button.click()
    return ended.args[0]


@pytest.fixture
def detection(qtbot, widget_and_crop):
    """(widget, crop layer) after one run with score threshold 0.5."""
    widget, crop = widget_and_crop
    widget.threshold_box.setValue(0.5)
    assert run_and_wait(qtbot, widget) == "done"
    return widget, crop


def test_findings_become_points_with_every_field_a_mask_and_a_table(viewer, detection):
    from napari.utils.colormaps import ensure_colormap

    widget, crop = detection
    findings = widget.findings
    assert 1 < len(findings) <= 8
    assert [f.score for f in findings] == sorted((f.score for f in findings), reverse=True)
    assert min(f.score for f in findings) >= 0.5

    points = viewer.layers["crop findings"]
    np.testing.assert_allclose(points.data, [f.center_voxel for f in findings])
    np.testing.assert_allclose(points.scale, crop.scale)
    np.testing.assert_allclose(points.translate, crop.translate)
    assert FIELDS <= set(points.features.columns)
    assert list(points.features["score"]) == [f.score for f in findings]
    assert list(points.features["lung_rads"]) == [f.lung_rads for f in findings]
    assert list(points.features["attenuation"]) == [f.attenuation for f in findings]
    np.testing.assert_allclose(points.features[["center_z_mm", "center_y_mm", "center_x_mm"]].to_numpy(),
                               [f.center_mm for f in findings])
    # centres in world mm are the crop's own voxel -> world transform
    np.testing.assert_allclose(findings[0].center_mm, crop.data_to_world(findings[0].center_voxel), atol=0.05)
    # size: the long axis in in-plane pixels (4 mm); a ring (the nodule stays visible) coloured by the score
    np.testing.assert_allclose(points.size, [max(f.diameter_mm / 4.0, 3.0) for f in findings])
    plasma = ensure_colormap("plasma").map(np.array([f.score for f in findings]))
    np.testing.assert_allclose(points.border_color, plasma, atol=1e-3)
    assert np.all(points.face_color[:, 3] == 0) and np.all(points.border_width > 0)

    masks = viewer.layers["crop finding masks"]
    assert masks.data.shape == crop.data.shape
    assert set(np.unique(masks.data)) == set(range(len(findings) + 1))

    table = widget.findings_table
    assert table.rowCount() == len(findings)
    assert [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())] == [
        "#", "Score", "Long (mm)", "Mean (mm)", "Vol. (mL)", "Lung-RADS", "Type", "Slice", "Reader"]
    assert table.cell_text(0, 1) == f"{findings[0].score:.2f}"
    assert table.cell_text(1, 2) == f"{findings[1].diameter_mm:.1f}"
    assert table.cell_text(1, 3).rstrip("†") == f"{findings[1].mean_diameter_mm:.1f}"
    # the test model does not refine: its findings under 8 mm are marked, with the reason as a tip
    drawn = [f.outline == "network" and f.mean_diameter_mm < 8 for f in findings]
    assert any(drawn) and [table.cell_text(r, 3).endswith("†") for r in range(len(findings))] == drawn
    assert [bool(table.item(r, 3).toolTip()) for r in range(len(findings))] == drawn
    assert table.cell_text(1, 5) == findings[1].lung_rads
    assert table.cell_text(1, 6) == attenuation_text(findings[1]) and findings[1].attenuation  # read from the CT
    assert table.cell_text(1, 7) == str(int(np.floor(findings[1].center_voxel[0] + 0.5)))
    # every column fits the width the table asks for
    header = table.horizontalHeader()
    assert table.minimumWidth() >= sum(header.sectionSizeHint(c) for c in range(table.columnCount()))
    assert "decision support, not a diagnosis" in widget.note_label.text()


def _rotation(angles_deg):
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("zyx", angles_deg, degrees=True).as_matrix()


# (z, y, x) voxel -> world matrices: an oblique volume (rotated about all three axes), and a
# volume stored with two axes reversed (negative scale)
OBLIQUE = {
    "oblique": (_rotation((20.0, -15.0, 35.0)) @ np.diag([6.0, 4.0, 4.0]), (-40.0, 12.0, 30.0)),
    "flipped": (np.diag([-6.0, 4.0, -4.0]), (60.0, -80.0, 150.0)),
}


@pytest.mark.filterwarnings("ignore:Non-orthogonal slicing")  # napari draws an oblique slice as it can
@pytest.mark.parametrize("geometry", OBLIQUE)
def test_findings_on_a_rotated_or_flipped_layer_lie_where_the_layer_shows_them(qtbot, viewer, tmp_path,
                                                                               monkeypatch, geometry):
    from napari_medai.phantoms import make_chest_ct

    monkeypatch.setattr("napari_medai.models.registry.WEIGHTS_DIR", tmp_path / "weights")
    install(detection_card(roi_size=(8, 32, 32)), tmp_path / "weights")
    phantom = make_chest_ct(0, shape=(20, 48, 48), spacing=(6.0, 4.0, 4.0), n_nodules=3)
    linear, origin = OBLIQUE[geometry]
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = linear, origin
    layer = viewer.add_image(phantom.hu[CROP].astype(np.float32), name="oblique", affine=matrix)
    before = layer.data.copy()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Lesion detection")
    widget.model_box.setCurrentIndex(widget.model_box.findText("rule-det"))
    widget.max_findings_box.setValue(8)
    widget.threshold_box.setValue(0.5)
    assert run_and_wait(qtbot, widget) == "done"
    findings = widget.findings
    assert len(findings) >= 2
    # world mm through the layer's whole transform, rotation and signs included (centres are
    # rounded to 0.01 mm / voxel)
    for f in findings:
        np.testing.assert_allclose(f.center_mm, layer.data_to_world(f.center_voxel), atol=0.05)
        np.testing.assert_allclose(f.center_mm, linear @ np.asarray(f.center_voxel) + origin, atol=0.05)
    points, masks = viewer.layers["oblique findings"], viewer.layers["oblique finding masks"]
    np.testing.assert_allclose(points.features[["center_z_mm", "center_y_mm", "center_x_mm"]].to_numpy(),
                               [layer.data_to_world(f.center_voxel) for f in findings], atol=0.05)
    for output in (points, masks):
        np.testing.assert_allclose(output.affine.affine_matrix, layer.affine.affine_matrix)
        np.testing.assert_allclose(output.scale, layer.scale)
        np.testing.assert_allclose(output.translate, layer.translate)
        np.testing.assert_allclose(output.data_to_world(findings[0].center_voxel),
                                   layer.data_to_world(findings[0].center_voxel), atol=1e-6)
    np.testing.assert_array_equal(layer.data, before)  # the input is untouched


def test_findings_on_a_layer_in_micrometres_are_reported_in_millimetres(qtbot, viewer, tmp_path, monkeypatch):
    from napari_medai.phantoms import make_chest_ct

    monkeypatch.setattr("napari_medai.models.registry.WEIGHTS_DIR", tmp_path / "weights")
    install(detection_card(roi_size=(8, 32, 32)), tmp_path / "weights")
    phantom = make_chest_ct(0, shape=(20, 48, 48), spacing=(6.0, 4.0, 4.0), n_nodules=3)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Lesion detection")
    widget.model_box.setCurrentIndex(widget.model_box.findText("rule-det"))
    widget.max_findings_box.setValue(8)
    widget.threshold_box.setValue(0.5)
    runs = {}
    for name, factor, unit in (("in mm", 1.0, "mm"), ("in um", 1000.0, "um")):
        layer = viewer.add_image(phantom.hu[CROP].astype(np.float32), name=name, units=(unit,) * 3,
                                 scale=np.array([6.0, 4.0, 4.0]) * factor, translate=np.array([-40.0, 12.0, 30.0]) * factor)
        widget.layer_picker.set_layer(layer)
        assert widget.layer_picker.current_layer() is layer
        assert run_and_wait(qtbot, widget) == "done"
        runs[name] = widget.findings
    mm, um = runs["in mm"], runs["in um"]
    assert len(mm) >= 2 and len(um) == len(mm)
    for a, b in zip(mm, um):  # the same scan in other units: the same millimetres and millilitres
        np.testing.assert_allclose(b.center_mm, a.center_mm, atol=0.05)
        np.testing.assert_allclose(b.center_mm, np.array([6.0, 4.0, 4.0]) * b.center_voxel + [-40.0, 12.0, 30.0], atol=0.05)
        assert (b.diameter_mm, b.volume_ml, b.lung_rads) == (a.diameter_mm, a.volume_ml, a.lung_rads)


def test_clicking_a_row_moves_to_the_findings_slice_and_centres_it(qtbot, viewer, detection):
    widget, crop = detection
    table = widget.findings_table
    for row in (len(widget.findings) - 1, 0):
        finding = widget.findings[row]
        rect = table.visualItemRect(table.item(row, 0))
        qtbot.mouseClick(table.viewport(), Qt.LeftButton, pos=rect.center())
        assert viewer.dims.current_step[0] == int(table.cell_text(row, 7)) == axial_slice(finding.center_voxel)
        world = crop.data_to_world(finding.center_voxel)
        np.testing.assert_allclose(viewer.camera.center[-2:], world[1:], atol=1e-6)
        assert table.currentRow() == row
    # with the points layer deleted, the finding's own world centre still leads there
    viewer.layers.remove("crop findings")
    last = widget.findings[-1]
    widget.go_to_finding(len(widget.findings) - 1)
    assert viewer.dims.current_step[0] == axial_slice(last.center_voxel)


def _tilt(in_plane_deg: float, tilt_deg: float) -> np.ndarray:
    """(z, y, x) rotation: ``in_plane_deg`` about z (the axial plane turns), then ``tilt_deg`` mixing z and y
    (a gantry tilt)."""
    a, b = np.deg2rad(in_plane_deg), np.deg2rad(tilt_deg)
    in_plane = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    tilt = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return tilt @ in_plane


@pytest.mark.filterwarnings("ignore:Non-orthogonal slicing")  # napari draws a tilted slice as it can
@pytest.mark.parametrize("in_plane, tilt", [(0.0, 0.0), (20.0, 0.0), (20.0, 10.0)],
                         ids=["axis-aligned", "in-plane-rotated", "tilted"])
def test_a_row_click_shows_the_findings_slice_of_the_image_on_a_rotated_or_tilted_scan(
        qtbot, viewer, tmp_path, monkeypatch, in_plane, tilt):
    """napari slices a tilted layer through the sliced rows of its transform alone: the finding's
    world z once showed data slices 20.6 and 14.9 for findings listed on slices 13 and 7.  (The
    slider then moves the point to its nearest step: on a tilted layer its steps are not the
    image's slices, and napari draws the slice the data point rounds to.)"""
    from napari_medai.phantoms import make_chest_ct

    monkeypatch.setattr("napari_medai.models.registry.WEIGHTS_DIR", tmp_path / "weights")
    install(detection_card(roi_size=(8, 32, 32)), tmp_path / "weights")
    phantom = make_chest_ct(0, shape=(20, 48, 48), spacing=(6.0, 4.0, 4.0), n_nodules=3)
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = _tilt(in_plane, tilt), (12.0, -7.0, 30.0)
    layer = viewer.add_image(phantom.hu[CROP].astype(np.float32), name="scan", scale=(6.0, 4.0, 4.0),
                             translate=(-140.0, 60.0, -90.0), affine=matrix)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Lesion detection")
    widget.model_box.setCurrentIndex(widget.model_box.findText("rule-det"))
    widget.max_findings_box.setValue(8)
    widget.threshold_box.setValue(0.5)
    assert run_and_wait(qtbot, widget) == "done"
    table, points = widget.findings_table, widget.findings_layer
    assert len(widget.findings) >= 2
    viewer.dims.set_point(0, viewer.dims.range[0].start)  # start away from every finding
    for row in range(len(widget.findings)):
        finding = widget.findings[row]
        qtbot.mouseClick(table.viewport(), Qt.LeftButton, pos=table.visualItemRect(table.item(row, 0)).center())
        listed = int(table.cell_text(row, 7))
        assert listed == axial_slice(finding.center_voxel)
        # the slice napari draws of the image (its data point rounded) is the listed one
        assert np.round(layer._data_slice.point[0]) == listed
        if tilt == 0.0:  # the slider's steps are the image's slices: exactly there, with the ring drawn
            assert layer._data_slice.point[0] == pytest.approx(listed, abs=1e-6)
            assert row in points._view_indices
        # the view is centred where napari draws the finding on that slice
        drawn = layer._transforms.simplified.set_slice(list(viewer.dims.displayed))(finding.center_voxel[1:])
        np.testing.assert_allclose(viewer.camera.center[-2:], drawn, atol=1e-6)
        if tilt == 0.0:  # an axial plane: the finding's world position, and the slider's own step
            np.testing.assert_allclose(viewer.camera.center[-2:], layer.data_to_world(finding.center_voxel)[1:],
                                       atol=1e-6)
            assert viewer.dims.current_step[0] == listed


def test_the_view_of_a_voxel_uses_naparis_slicing_and_if_need_be_the_sliders_steps():
    """``view_of_voxel`` against napari's own slicing rule (``world_to_data.set_slice``) on a tilted
    volume: off the slider's steps the point draws the voxel's slice exactly; on them (where
    napari's slider may move it, steps that are not the image's slices) it draws that slice."""
    from types import SimpleNamespace

    from napari.utils.transforms import Affine

    from napari_medai.widgets.detection import view_of_voxel

    matrix = np.eye(4)
    matrix[:3, :3] = _tilt(20.0, 10.0) @ np.diag([5.0, 0.8, 0.8])
    matrix[:3, 3] = (-100.0, 20.0, -30.0)
    napari_slice = Affine(affine_matrix=matrix).inverse.set_slice([0])
    steps = (-110.0, 5.0, 4.973)  # 0.98 of its slices a step, as napari gave a volume like it
    dims = SimpleNamespace(ndim=3, not_displayed=[0], displayed=[1, 2], units=None,
                           range=[steps, (0.0, 1.0, 1.0), (0.0, 1.0, 1.0)])
    for z in (0.3, 3.0, 6.5, 9.4, 13.21, 18.7):
        voxel = [z, 30.0, 41.0]
        wanted = np.floor(z + 0.5)
        point, centre = view_of_voxel(matrix, voxel, dims)
        assert napari_slice([point[0]])[0] == pytest.approx(wanted, abs=1e-9)
        np.testing.assert_allclose(centre, matrix[1:3, 1:3] @ voxel[1:] + matrix[1:3, 3])  # as napari draws it
        point, _ = view_of_voxel(matrix, voxel, dims, on_steps=True)
        k = (point[0] - steps[0]) / steps[2]
        assert k == pytest.approx(round(k), abs=1e-9)  # a step of the slider
        assert np.round(napari_slice([point[0]])[0]) == wanted


def test_a_click_on_a_tilted_volume_reads_the_voxel_napari_draws_there():
    """``voxel_of_view`` undoes ``view_of_voxel``: a click where napari draws a voxel of a tilted
    volume is that voxel.  The full world -> data transform put it 9 slices and 7 rows away, and
    the reader's mark grew nothing or another structure (found by an audit helper)."""
    from types import SimpleNamespace

    from napari.utils.transforms import Affine

    from napari_medai.widgets.detection import view_of_voxel, voxel_of_view

    matrix = np.eye(4)
    matrix[:3, :3] = _tilt(20.0, 10.0) @ np.diag([5.0, 0.8, 0.8])
    matrix[:3, 3] = (-100.0, 20.0, -30.0)
    dims = SimpleNamespace(ndim=3, not_displayed=[0], displayed=[1, 2], units=None)
    for voxel in ([3.0, 30.0, 41.0], [13.0, 12.5, 60.25], [18.0, 70.0, 5.0]):
        point, centre = view_of_voxel(matrix, voxel, dims)
        click = [point[0], *centre]
        np.testing.assert_allclose(voxel_of_view(matrix, click, dims), voxel, atol=1e-9)
        assert np.abs(Affine(affine_matrix=matrix).inverse(click) - voxel).max() > 1.0  # what it was before
    # untilted: the plain world -> data transform, with a leading viewer axis (a 4D viewer)
    plain = np.diag([2.5, 0.7, 0.7, 1.0])
    plain[:3, 3] = (-30.0, 5.0, 7.0)
    four = SimpleNamespace(ndim=4, not_displayed=[0, 1], displayed=[2, 3], units=None)
    click = np.array([1.0, *(plain[:3, :3] @ [4.0, 9.0, 11.0] + plain[:3, 3])])
    np.testing.assert_allclose(voxel_of_view(plain, click, four), [4.0, 9.0, 11.0], atol=1e-9)


def test_arrow_keys_in_the_table_step_through_the_findings(qtbot, viewer, detection):
    widget, crop = detection
    table = widget.findings_table
    assert len(widget.findings) >= 2, "the crop must give two findings to step between"
    table.setFocus()
    qtbot.mouseClick(table.viewport(), Qt.LeftButton, pos=table.visualItemRect(table.item(0, 0)).center())
    qtbot.keyClick(table, Qt.Key_Down)
    second = widget.findings[1]
    assert table.currentRow() == 1
    assert viewer.dims.current_step[0] == axial_slice(second.center_voxel)
    np.testing.assert_allclose(viewer.camera.center[-2:], crop.data_to_world(second.center_voxel)[1:], atol=1e-6)
    qtbot.keyClick(table, Qt.Key_Up)
    assert viewer.dims.current_step[0] == axial_slice(widget.findings[0].center_voxel)


def test_export_csv_gives_the_index_in_the_image_files_own_voxel_order(qtbot, tmp_path, widget_and_crop):
    # an image the reader opened from a RAS-stored NIfTI keeps that order in its metadata
    from napari_medai.io.orientation import file_voxel

    widget, crop = widget_and_crop
    crop.metadata["nifti_orientation"] = "RAS"
    widget.threshold_box.setValue(0.5)
    assert run_and_wait(qtbot, widget) == "done" and widget.findings
    with widget.export_csv(tmp_path / "findings.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    shape = crop.data.shape
    assert [r["center_file_voxel"] for r in rows] == [
        " ".join(map(str, file_voxel(f.center_voxel, shape, "RAS"))) for f in widget.findings]
    assert rows[0]["center_file_voxel"] != " ".join(map(str, widget.findings[0].center_voxel[::-1]))


def test_the_findings_table_shows_six_rows_without_scrolling(viewer):
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Lesion detection")
    table = widget.findings_table
    # In a dock stacked with others it once got one row's height.
    assert table.minimumHeight() >= table.horizontalHeader().sizeHint().height() + 6 * table.verticalHeader().defaultSectionSize()
    tips = [table.horizontalHeaderItem(c).toolTip() for c in range(table.columnCount())]
    assert all(tips) and "Long-axis" in tips[2] and "Lung-RADS" in tips[3]


def test_export_csv_writes_every_finding(tmp_path, detection):
    widget, _crop = detection
    path = widget.export_csv(tmp_path / "findings")
    assert path.suffix == ".csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(CSV_FIELDS)
    assert [float(r["score"]) for r in rows] == [f.score for f in widget.findings]
    assert [r["lung_rads"] for r in rows] == [f.lung_rads for f in widget.findings]
    # the slice of each row is the one the table lists
    table = widget.findings_table
    assert [r["slice"] for r in rows] == [table.cell_text(row, 7) for row in range(table.rowCount())]
    assert widget.export_button.isEnabled() and str(path) in widget.status_label.text()


def test_the_readers_review_marks_the_table_hides_rejected_rings_and_goes_into_the_csv(qtbot, tmp_path, detection):
    widget, _crop = detection
    table, points = widget.findings_table, widget.findings_layer
    assert len(widget.findings) >= 2 and widget.review == [""] * len(widget.findings)
    assert widget.accept_button.isEnabled() and widget.reject_button.isEnabled()
    reader = table.columns.index("Reader")
    # keys in the table: R on the first finding, A on the second
    table.setFocus()
    qtbot.mouseClick(table.viewport(), Qt.LeftButton, pos=table.visualItemRect(table.item(0, 0)).center())
    qtbot.keyClick(table, Qt.Key_R)
    qtbot.keyClick(table, Qt.Key_Down)
    qtbot.keyClick(table, Qt.Key_A)
    assert widget.review[:2] == ["rejected", "accepted"]
    qtbot.keyClick(table, Qt.Key_R, Qt.ControlModifier)  # with a modifier it is no decision
    assert widget.review[:2] == ["rejected", "accepted"]
    assert [table.cell_text(row, reader) for row in (0, 1)] == ["✗", "✓"]
    grey = table.palette().color(QPalette.Disabled, QPalette.Text)
    assert table.item(0, 1).foreground().color() == grey != table.item(1, 1).foreground().color()
    assert list(points.features["review"][:2]) == ["rejected", "accepted"]
    assert not points.shown[0] and points.shown[1:].all()  # only the rejected ring is hidden
    masks = widget.masks_layer  # and its mask: transparent, while its voxels stay in the layer
    assert masks.colormap.map(np.array([1]))[0, 3] == 0 and masks.colormap.map(np.array([2]))[0, 3] > 0
    assert (masks.data == 1).any()
    assert len(points.data) == len(widget.findings)  # nothing is deleted
    csv_path = widget.export_csv(tmp_path / "reviewed.csv")
    with csv_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [*CSV_FIELDS, "review"] and [r["review"] for r in rows[:2]] == ["rejected", "accepted"]
    # the same button again undoes the decision
    table.selectRow(0)
    widget.reject_button.click()
    assert widget.review[0] == "" and points.shown[0] and table.cell_text(0, reader) == ""
    assert masks.colormap.map(np.array([1]))[0, 3] > 0
    # a new run starts unreviewed
    assert run_and_wait(qtbot, widget) == "done"
    assert widget.review == [""] * len(widget.findings)
    assert all(widget.findings_table.cell_text(row, reader) == "" for row in range(len(widget.findings)))


def test_review_without_a_chosen_finding_says_so(viewer):
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Lesion detection")
    assert not widget.accept_button.isEnabled()
    with pytest.raises(InputError, match="select a finding"):
        widget.set_review(0, "accepted")


def test_export_before_a_run_says_so(viewer):
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Lesion detection")
    assert not widget.export_button.isEnabled()
    with pytest.raises(InputError, match="run the detection first"):
        widget.export_csv("unused.csv")


def test_no_finding_above_the_threshold_gives_an_empty_points_layer(qtbot, viewer, tmp_path,
                                                                    widget_and_crop, notifications):
    widget, _crop = widget_and_crop
    widget.threshold_box.setValue(1.0)  # softmax scores never reach 1
    assert run_and_wait(qtbot, widget) == "done"
    assert len(viewer.layers["crop findings"].data) == 0
    assert "crop finding masks" not in viewer.layers
    assert widget.findings_table.rowCount() == 0
    assert any("no findings reached the score threshold" in message for _, message in notifications())
    with open(widget.export_csv(tmp_path / "none.csv")) as fh:
        assert fh.read().strip() == ",".join(CSV_FIELDS)  # the header only


def test_a_nodule_marked_after_a_run_with_no_findings_starts_the_table_and_the_masks(qtbot, viewer, widget_and_crop):
    from napari_medai.phantoms import make_chest_ct

    widget, crop = widget_and_crop
    widget.threshold_box.setValue(1.0)  # nothing is listed
    assert run_and_wait(qtbot, widget) == "done" and widget.findings == [] and widget.mark_button.isEnabled()
    nodule = make_chest_ct(0, shape=(20, 48, 48), spacing=(6.0, 4.0, 4.0), n_nodules=3).nodules[1]
    centre = np.asarray(nodule["center_voxel"]) - [s.start for s in CROP]
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.measure_at(crop.data_to_world(centre))
    assert ended.args[0] == "done"
    (finding,) = widget.findings
    assert finding.added_by_reader and widget.review == ["accepted"] and finding.lung_rads in ("4A", "4B")
    np.testing.assert_allclose(finding.center_voxel, centre, atol=1.5)
    assert widget.findings_table.rowCount() == 1 and widget.findings_table.cell_text(0, 1) == "reader"
    points, masks = viewer.layers["crop findings"], viewer.layers["crop finding masks"]
    assert len(points.data) == 1 and bool(points.features["added_by_reader"][0])
    assert (masks.data == 1).sum() == finding.mask.sum()
    np.testing.assert_allclose(masks.scale, crop.scale)
    np.testing.assert_allclose(masks.translate, crop.translate)
    assert viewer.layers.index(points) == len(viewer.layers) - 1  # the marker above its mask
    assert widget.layer_picker.current_layer() is crop  # the input stays the input


def _finding_mask_in_volume(finding, shape):
    full = np.zeros(shape, bool)
    (z0, y0, x0), (z1, y1, x1) = finding.bbox_voxel
    full[z0:z1, y0:y1, x0:x1] = finding.mask
    return full


def test_add_to_labels_writes_the_chosen_finding_as_one_undoable_edit(qtbot, viewer, detection):
    widget, crop = detection
    annotation = viewer.add_labels(np.zeros(crop.data.shape, np.uint8), name="my annotation",
                                   scale=crop.scale, translate=crop.translate)
    annotation.data[0, 0, 0] = 5  # the user's own work, which must survive
    widget.target_picker.set_layer(annotation)
    widget.label_value_box.setValue(3)
    widget.findings_table.setCurrentCell(1, 0)
    widget.add_to_labels_button.click()
    second = _finding_mask_in_volume(widget.findings[1], crop.data.shape)
    assert second.any()
    np.testing.assert_array_equal(annotation.data == 3, second)
    assert annotation.data[0, 0, 0] == 5
    assert "Ctrl+Z" in widget.status_label.text() and f"{second.sum()} voxel" in widget.status_label.text()
    annotation.undo()  # one step takes the whole finding back
    assert not (annotation.data == 3).any() and annotation.data[0, 0, 0] == 5


def test_add_to_labels_into_a_hidden_layer_after_a_row_click_is_one_undoable_edit(qtbot, viewer, detection):
    # napari does not re-slice a hidden layer: data_setitem updated the view of the slice last
    # shown and failed there, the voxels written and no undo step saved (found by an audit helper)
    widget, crop = detection
    annotation = viewer.add_labels(np.zeros(crop.data.shape, np.uint8), name="hidden annotation",
                                   scale=crop.scale, translate=crop.translate)
    annotation.visible = False  # the reader hides it to see the CT
    widget.target_picker.set_layer(annotation)
    widget.label_value_box.setValue(3)
    for row in (0, 1):  # each row click moves the view to that finding's slice
        widget.findings_table.setCurrentCell(row, 0)
        widget.go_to_finding(row)
    widget.add_to_labels_button.click()
    second = _finding_mask_in_volume(widget.findings[1], crop.data.shape)
    assert second.any() and "Ctrl+Z" in widget.status_label.text()
    np.testing.assert_array_equal(annotation.data == 3, second)
    annotation.undo()
    assert not annotation.data.any()


def test_a_failed_labels_edit_changes_nothing_and_leaves_no_half_step(viewer, monkeypatch):
    from napari.layers import Labels

    from napari_medai.widgets._layers import edit_labels

    layer = viewer.add_labels(np.zeros((4, 8, 8), np.uint8), name="annotation")
    layer.data_setitem((np.array([0]), np.array([0]), np.array([0])), 2)  # the user's own stroke
    real = Labels.data_setitem

    def fails_after_writing(self, indices, value, refresh=True):
        real(self, indices, value, refresh=refresh)
        raise IndexError("index 36 is out of bounds for axis 0 with size 1")

    monkeypatch.setattr(Labels, "data_setitem", fails_after_writing)
    mask = np.zeros((4, 8, 8), bool)
    mask[1:3, 2:5, 2:5] = True
    from napari.utils._proxies import PublicOnlyProxy

    with pytest.raises(InputError, match="could not be edited.*nothing was changed"):
        edit_labels(PublicOnlyProxy(layer), mask, 7)  # widgets get the viewer's public-only proxy
    assert not (layer.data == 7).any() and layer.data[0, 0, 0] == 2
    monkeypatch.undo()
    layer.undo()  # the user's stroke is still the last step, not mixed with a staged half-edit
    assert not layer.data.any()


def test_add_to_labels_refuses_a_multiscale_layer_with_a_message(viewer, detection):
    widget, crop = detection
    level0 = np.zeros(crop.data.shape, np.uint8)
    pyramid = viewer.add_labels([level0, level0[:, ::2, ::2]], name="pyramid labels", multiscale=True,
                                scale=crop.scale, translate=crop.translate)
    widget.target_picker.set_layer(pyramid)
    widget.findings_table.setCurrentCell(0, 0)
    widget.add_to_labels_button.click()
    assert "multiscale pyramid" in widget.status_label.text()
    assert not np.asarray(pyramid.data[0]).any()


def test_a_nodule_marked_while_the_masks_are_hidden_is_added_as_one_undoable_edit(qtbot, viewer, widget_and_crop):
    from napari_medai.phantoms import make_chest_ct

    widget, crop = widget_and_crop
    widget.threshold_box.setValue(0.5)
    assert run_and_wait(qtbot, widget) == "done" and widget.findings
    masks = widget.masks_layer
    before, count = masks.data.copy(), len(widget.findings)
    masks.visible = False
    nodule = make_chest_ct(0, shape=(20, 48, 48), spacing=(6.0, 4.0, 4.0), n_nodules=3).nodules[1]
    centre = np.asarray(nodule["center_voxel"]) - [s.start for s in CROP]
    widget.go_to_finding(0)  # the view elsewhere than the nodule's slice
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.measure_at(crop.data_to_world(centre))
    assert ended.args[0] == "done"
    assert len(widget.findings) == count + 1 == widget.findings_table.rowCount()
    assert (masks.data != before).any()
    masks.undo()
    np.testing.assert_array_equal(masks.data, before)


def test_add_to_labels_uses_the_segmentations_nodule_class(viewer, detection):
    widget, crop = detection
    from napari_medai.widgets.detection import nodule_label

    seg = viewer.add_labels(np.zeros(crop.data.shape, np.uint8), name="crop segmentation", scale=crop.scale,
                            translate=crop.translate,
                            features={"index": [1, 2], "class": ["lung", "nodule"]})
    widget.target_picker.set_layer(seg)
    assert widget.label_value_box.value() == nodule_label(seg) == 2
    plain = viewer.add_labels(np.zeros(crop.data.shape, np.uint8), name="plain", scale=crop.scale,
                              translate=crop.translate)
    plain.selected_label = 4
    assert nodule_label(plain) == 4
    # a value the user typed stays when an unrelated layer arrives, and goes with a new target
    widget.target_picker.set_layer(seg)
    widget.label_value_box.setValue(7)
    viewer.add_points(np.zeros((1, 3)), name="unrelated")
    assert widget.target_picker.current_layer() is seg and widget.label_value_box.value() == 7
    widget.target_picker.set_layer(plain)
    assert widget.label_value_box.value() == 4


def test_add_to_labels_refuses_a_layer_off_the_findings_grid_and_changes_nothing(viewer, detection, notifications):
    widget, crop = detection
    shifted = viewer.add_labels(np.zeros(crop.data.shape, np.uint8), name="shifted", scale=crop.scale,
                                translate=np.asarray(crop.translate) + 10.0)
    smaller = viewer.add_labels(np.zeros(crop.data.shape[:2] + (5,), np.uint8), name="smaller")
    widget.findings_table.setCurrentCell(0, 0)
    for layer in (shifted, smaller):
        widget.target_picker.set_layer(layer)
        widget.add_to_labels_button.click()
        assert not layer.data.any()
        assert "does not lie on the grid" in widget.status_label.text()
    assert any(severity == "error" and "does not lie on the grid" in text for severity, text in notifications())
    with pytest.raises(InputError, match="select a finding"):
        widget.add_finding_to_labels(-1, shifted, 2)


def test_after_a_run_the_finding_masks_do_not_become_the_layer_findings_go_into(viewer, detection):
    widget, _crop = detection
    assert viewer.layers.selection.active.name == "crop findings"  # napari activates the last new layer
    viewer.layers.selection.active = viewer.layers["crop finding masks"]  # even when chosen by hand
    assert widget.target_picker.current_layer() is None  # the only Labels layer is not offered
    assert widget.target_picker.count() == 0


def test_add_to_labels_is_off_until_a_run_and_asks_for_a_layer(viewer):
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Lesion detection")
    assert not widget.add_to_labels_button.isEnabled() and not widget.new_labels_button.isEnabled()
    widget.findings = [object()]
    with pytest.raises(InputError, match="no Labels layer.*'New labels'"):
        widget.add_finding_to_labels(0, None, 2)


def test_the_labels_target_follows_the_layer_the_user_makes_active(viewer, small_ct):
    # docked as a plugin: its viewer is napari's PublicOnlyProxy (a new proxy per active layer read)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Lesion detection")
    first = viewer.add_labels(np.zeros((4, 8, 8), np.int32), name="first")
    second = viewer.add_labels(np.zeros((4, 8, 8), np.int32), name="second")
    viewer.layers.selection.active = first
    assert widget.target_picker.current_layer() is first
    viewer.layers.selection.active = second
    assert widget.target_picker.current_layer() is second


def test_add_to_labels_refuses_a_label_the_layers_dtype_cannot_hold(viewer, detection, notifications):
    widget, crop = detection
    small = viewer.add_labels(np.zeros(crop.data.shape, np.uint8), name="small", scale=crop.scale,
                              translate=crop.translate)
    widget.target_picker.set_layer(small)
    assert widget.label_value_box.maximum() == 255  # the box offers only what the layer holds
    widget.label_value_box.setValue(256)
    assert widget.label_value_box.value() == 255
    assert widget.label_value_box.toolTip().endswith("at most 255 in 'small' (uint8 labels)")  # it says why
    with pytest.raises(InputError, match=r"label 256 does not fit 'small' \(uint8, at most 255\)"):
        widget.add_finding_to_labels(0, small, 256)
    assert not small.data.any()
    wide = viewer.add_labels(np.zeros(crop.data.shape, np.int32), name="wide", scale=crop.scale,
                             translate=crop.translate)
    widget.target_picker.set_layer(wide)
    assert widget.label_value_box.maximum() == 65535 and "at most 65535 in 'wide'" in widget.label_value_box.toolTip()


def test_new_labels_lie_on_the_images_grid_and_become_the_target(viewer, detection):
    widget, crop = detection
    assert widget.new_labels_button.isEnabled()
    taken = viewer.add_labels(np.zeros((2, 3, 4), np.uint8), name="crop labels")  # the name is taken
    viewer.layers.selection.active = widget.findings_layer  # what Layers > New Labels Layer would size to
    widget.new_labels_button.click()
    labels = widget.target_picker.current_layer()
    assert labels.name == "crop labels [1]" and labels.data.dtype == np.int32 and not labels.data.any()
    assert labels.data.shape == crop.data.shape
    for attribute in ("scale", "translate", "rotate", "shear"):
        np.testing.assert_allclose(getattr(labels, attribute), getattr(crop, attribute))
    np.testing.assert_allclose(labels.affine.affine_matrix, crop.affine.affine_matrix)
    assert taken.data.shape == (2, 3, 4) and viewer.layers["crop labels"] is taken
    assert widget.layer_picker.current_layer() is crop
    # it names the detector's classes (0 background, 1 lung, 2 nodule), so a finding goes in as
    # the nodule class, not as napari's first brush label (1: lung to a fine-tuned chest model)
    assert list(labels.features["class"]) == ["background", "lung", "nodule"]
    assert widget.label_value_box.value() == 2
    widget.findings_table.setCurrentCell(0, 0)
    widget.add_to_labels_button.click()  # the findings fit it
    assert (labels.data == 2).sum() == widget.findings[0].mask.sum() > 0 and set(np.unique(labels.data)) == {0, 2}


def test_new_labels_are_refused_once_the_image_changed_since_the_run(viewer, detection):
    """After new data, New labels failed with a traceback; after a move it made a layer that Add to
    labels then refused (found by an audit helper)."""
    widget, crop = detection
    before = len(viewer.layers)
    crop.translate = np.asarray(crop.translate) + (5.0, 0.0, 0.0)
    with pytest.raises(InputError, match="was moved, rescaled or given other data since the detection ran"):
        widget.new_labels_layer()
    crop.translate = np.asarray(crop.translate) - (5.0, 0.0, 0.0)  # back where it ran: fine again
    crop.data = np.concatenate([crop.data, crop.data[:2]])
    widget.new_labels_button.click()  # the button shows the message, adds nothing
    assert "given other data since the detection ran" in widget.status_label.text()
    assert len(viewer.layers) == before


def test_a_dot_in_the_csv_name_is_kept(detection, tmp_path):
    widget, _crop = detection
    assert widget.export_csv(tmp_path / "CHEST 1.25mm findings").name == "CHEST 1.25mm findings.csv"
    assert widget.export_csv(tmp_path / "exam.CSV").name == "exam.CSV"
    assert sorted(p.name for p in tmp_path.glob("*.*")) == ["CHEST 1.25mm findings.csv", "exam.CSV"]


def test_choosing_a_model_with_an_operating_point_sets_the_threshold_it_was_fitted_for(viewer, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.setattr("napari_medai.models.registry.WEIGHTS_DIR", tmp_path / "weights")
    plain = detection_card(name="rule-det")
    fitted = detection_card(name="rule-det-op")
    fitted.extra["operating_point"] = {"score_threshold": 0.87, "fp_per_scan": 1.0}
    install(plain, tmp_path / "weights")
    install(fitted, tmp_path / "weights")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Lesion detection")
    widget.model_box.setCurrentIndex(widget.model_box.findText("rule-det-op"))
    assert widget.threshold_box.value() == pytest.approx(0.87)
    assert "operating point" in widget.threshold_box.toolTip() and "1 false positive" in widget.threshold_box.toolTip()
    assert widget.params().score_threshold == pytest.approx(0.87)
    # a model without one keeps the reader's value and the plain tooltip
    widget.threshold_box.setValue(0.3)
    widget.model_box.setCurrentIndex(widget.model_box.findText("rule-det"))
    assert widget.threshold_box.value() == pytest.approx(0.3)
    assert "operating point" not in widget.threshold_box.toolTip()


@pytest.mark.parametrize("entry", ["Load model file…", "Load MONAI bundle folder…"])
@pytest.mark.parametrize("display_name", ["Lesion detection", "Screening report"])
def test_a_cancelled_load_dialog_leaves_the_model_and_every_setting_as_they_were(viewer, tmp_path, monkeypatch,
                                                                                  entry, display_name):
    monkeypatch.setattr("napari_medai.models.registry.WEIGHTS_DIR", tmp_path / "weights")
    fitted = detection_card(name="rule-det-op")
    fitted.extra["operating_point"] = {"score_threshold": 0.87, "fp_per_scan": 1.0}
    install(detection_card(name="rule-det"), tmp_path / "weights")
    install(fitted, tmp_path / "weights")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", display_name)
    box = widget.model_box
    # a model with an operating point, its threshold then set by the reader
    for name in ("rule-det", "rule-det-op"):  # whichever sits at index 0, the other is chosen once
        box.setCurrentIndex(box.findText(name))
        widget.threshold_box.setValue(0.3)
        widget.max_findings_box.setValue(3)
        before, tooltip = widget.params(), widget.threshold_box.toolTip()
        changes = []
        box.currentIndexChanged.connect(changes.append)
        assert pick_load_entry_and_cancel(widget, monkeypatch, entry) == ["file" if "file" in entry else "folder"]
        box.currentIndexChanged.disconnect(changes.append)
        assert box.currentText() == name and widget.params() == before
        assert widget.threshold_box.value() == pytest.approx(0.3) and widget.threshold_box.toolTip() == tooltip
        assert changes == [box.findData(entry)]  # the pick itself only: the cancel announces no change
    # a model file loaded earlier sits at index 0; the reader went back to a built-in model
    widget.add_model_path(str(tmp_path / "mine.pt"))
    assert box.currentIndex() == 0
    box.setCurrentIndex(box.findText("rule-det"))
    before = widget.params()
    pick_load_entry_and_cancel(widget, monkeypatch, entry)
    assert box.currentText() == "rule-det" and widget.params() == before


def test_the_finding_markers_lie_on_top_of_their_masks(viewer, detection):
    names = [layer.name for layer in viewer.layers]
    assert names.index("crop findings") > names.index("crop finding masks")
    widget, _crop = detection
    assert widget.findings_layer is viewer.layers["crop findings"]


def test_hiding_a_rejected_mask_keeps_the_users_own_labels_and_colours(qtbot, detection):
    from napari.utils.colormaps import DirectLabelColormap

    widget, _crop = detection
    masks = widget.masks_layer
    n = len(widget.findings)
    painted = n + 3  # a label the user painted on the masks layer
    masks.data[0, 0, 0] = painted
    widget.set_review(1, "rejected")
    alpha = masks.colormap.map(np.arange(painted + 1))[:, 3]
    assert alpha[2] == 0 and alpha[1] > 0 and alpha[painted] > 0  # only finding 2 is hidden
    # a colour scheme the user picks between decisions is the one kept
    mine = DirectLabelColormap(color_dict={None: [0.0, 1.0, 0.0, 1.0], 0: [0.0, 0.0, 0.0, 0.0]})
    masks.colormap = mine
    widget.set_review(0, "rejected")
    np.testing.assert_allclose(masks.colormap.map(np.array([2, painted])), [[0, 0, 0, 0], [0, 1, 0, 1]])
    widget.set_review(0, "")
    widget.set_review(1, "")
    np.testing.assert_allclose(masks.colormap.map(np.array([1, 2])), [[0, 1, 0, 1]] * 2)


def test_review_follows_each_point_after_the_reader_deletes_one(qtbot, detection):
    widget, _crop = detection
    points = widget.findings_layer
    assert len(widget.findings) >= 3
    points.selected_data = {0}
    points.remove_selected()  # the reader deletes the first finding's marker
    widget.set_review(1, "rejected")
    assert list(points.features["rank"][:2]) == [2, 3]
    assert not points.shown[0] and points.shown[1:].all()  # finding 2's ring, now the first point
    assert points.features["review"][0] == "rejected"


def test_a_held_review_key_decides_once(qtbot, detection):
    from qtpy.QtCore import QEvent
    from qtpy.QtGui import QKeyEvent
    from qtpy.QtWidgets import QApplication

    widget, _crop = detection
    table = widget.findings_table
    table.setFocus()
    table.selectRow(0)
    decisions = []
    table.review_key_pressed.connect(decisions.append)
    # the press, then one auto-repeat: were the repeat taken as a press, R would toggle the
    # decision back to "not reviewed"
    for repeat in (False, True):
        QApplication.sendEvent(table, QKeyEvent(QEvent.Type.KeyPress, Qt.Key_R, Qt.NoModifier, "r", repeat))
    assert decisions == ["rejected"]
    assert widget.review[0] == "rejected"
    for _ in range(3):  # the key still held: nothing changes
        QApplication.sendEvent(table, QKeyEvent(QEvent.Type.KeyPress, Qt.Key_R, Qt.NoModifier, "r", True))
    assert decisions == ["rejected"] and widget.review[0] == "rejected"


def test_a_marked_nodule_over_a_listed_one_keeps_the_listed_mask(qtbot, detection):
    from napari_medai.phantoms import make_chest_ct

    widget, crop = detection
    nodule = make_chest_ct(0, shape=(20, 48, 48), spacing=(6.0, 4.0, 4.0), n_nodules=3).nodules[1]
    centre = np.asarray(nodule["center_voxel"]) - [s.start for s in CROP]
    masks = widget.masks_layer
    before = masks.data.copy()
    listed = int(before[tuple(np.round(centre).astype(int))])
    assert listed > 0  # the detector listed this nodule
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.measure_at(crop.data_to_world(centre))
    assert ended.args[0] == "done"
    added = widget.findings[-1]
    assert added.added_by_reader and added.label == len(widget.findings)
    assert (masks.data[before > 0] == before[before > 0]).all()  # the detector's voxels stay theirs
    assert f"overlaps the mask of finding {listed}" in widget.status_label.text()
    masks.undo()  # one step takes the reader's voxels back out
    np.testing.assert_array_equal(masks.data, before)


def test_a_marked_nodule_after_the_masks_layer_was_removed_starts_a_new_one(qtbot, viewer, detection):
    from napari_medai.phantoms import make_chest_ct

    widget, crop = detection
    viewer.layers.remove(widget.masks_layer)  # the user's choice: the plugin does not bring it back
    assert "crop finding masks" not in viewer.layers
    nodule = make_chest_ct(0, shape=(20, 48, 48), spacing=(6.0, 4.0, 4.0), n_nodules=3).nodules[1]
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.measure_at(crop.data_to_world(np.asarray(nodule["center_voxel"]) - [s.start for s in CROP]))
    assert ended.args[0] == "done"
    added = widget.findings[-1]
    masks = viewer.layers["crop finding masks"]  # only the reader's outline, to be checked
    assert masks is widget.masks_layer and set(np.unique(masks.data)) == {0, added.label}
    assert (masks.data == added.label).sum() == added.mask.sum()


def test_a_mark_measured_on_an_image_that_changed_meanwhile_is_not_added(qtbot, viewer, detection, notifications):
    from napari_medai.phantoms import make_chest_ct

    widget, crop = detection
    before = list(widget.findings)
    nodule = make_chest_ct(0, shape=(20, 48, 48), spacing=(6.0, 4.0, 4.0), n_nodules=3).nodules[1]
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.measure_at(crop.data_to_world(np.asarray(nodule["center_voxel"]) - [s.start for s in CROP]))
        crop.data = crop.data[::-1].copy()  # another scan in the layer before the result arrives
    assert ended.args[0] == "error"
    assert widget.findings == before
    assert any("'crop' changed while the marked nodule was measured; nothing was added" in m for _, m in notifications())


@pytest.mark.parametrize("change", ["moved", "rescaled", "rotated", "affine", "new data", "reshaped"])
def test_a_mark_on_an_image_moved_or_given_other_data_since_the_run_is_refused(qtbot, viewer, detection,
                                                                                notifications, change):
    """The mark is measured in the image's frame now but would join markers and masks in the
    run's frame: refused, whatever changed, with nothing changed, until the detection runs again."""
    from napari_medai.phantoms import make_chest_ct

    widget, crop = detection
    nodule = make_chest_ct(0, shape=(20, 48, 48), spacing=(6.0, 4.0, 4.0), n_nodules=3).nodules[1]
    centre = np.asarray(nodule["center_voxel"]) - [s.start for s in CROP]
    findings, points, masks = list(widget.findings), widget.findings_layer, widget.masks_layer
    marker_data, mask_data = points.data.copy(), masks.data.copy()
    if change == "moved":
        crop.translate = np.asarray(crop.translate) + (0.0, 20.0, 0.0)
    elif change == "rescaled":
        crop.scale = np.asarray(crop.scale) * (1.0, 1.25, 1.25)
    elif change == "rotated":
        crop.rotate = 10.0
    elif change == "affine":
        crop.affine = np.diag([1.0, 1.0, -1.0, 1.0])
    elif change == "new data":
        crop.data = crop.data.copy()  # another array, same shape and geometry: perhaps another scan
    else:
        crop.data = np.pad(crop.data, ((0, 0), (0, 8), (0, 8)), constant_values=-1000.0)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.measure_at(crop.data_to_world(centre))  # the nodule, where the image now shows it
    assert ended.args[0] == "error"
    message = "'crop' was moved, rescaled or given other data since the detection ran: run the detection again"
    assert message in widget.status_label.text()
    assert any(message in m for severity, m in notifications() if severity == "error")
    assert widget.findings == findings and widget.review == [""] * len(findings)
    assert widget.findings_table.rowCount() == len(findings)
    np.testing.assert_array_equal(points.data, marker_data)
    np.testing.assert_array_equal(masks.data, mask_data)
    # a new run on the image as it is now: the mark is measured and lands where it was clicked
    assert run_and_wait(qtbot, widget) == "done"
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.measure_at(crop.data_to_world(centre))
    assert ended.args[0] == "done" and widget.findings[-1].added_by_reader
    marker = widget.findings_layer.data_to_world(widget.findings_layer.data[-1])
    np.testing.assert_allclose(marker, crop.data_to_world(centre), atol=2 * max(np.abs(crop.scale)))


def test_a_mark_after_the_image_was_moved_back_is_measured(qtbot, viewer, detection):
    """Only a difference from the run's geometry refuses a mark: moved and put back is the same frame."""
    from napari_medai.phantoms import make_chest_ct

    widget, crop = detection
    translate = np.asarray(crop.translate).copy()
    crop.translate = translate + 20.0
    crop.translate = translate
    nodule = make_chest_ct(0, shape=(20, 48, 48), spacing=(6.0, 4.0, 4.0), n_nodules=3).nodules[1]
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.measure_at(crop.data_to_world(np.asarray(nodule["center_voxel"]) - [s.start for s in CROP]))
    assert ended.args[0] == "done" and widget.findings[-1].added_by_reader


def test_the_table_slice_is_the_images_own_index_and_the_words_say_so(viewer, detection):
    """The table's (and the reports') Slice is the image's own axial index; the slider shows it
    only while this image alone sets the viewer's range.  The words must say that, not that it is
    "the index as napari's slider shows it" (false once a layer reaches further)."""
    from napari_medai.screening import SLICE_CONVENTION

    widget, crop = detection
    table = widget.findings_table
    widget.go_to_finding(0)
    listed = int(table.cell_text(0, 7))
    assert listed == axial_slice(widget.findings[0].center_voxel)
    assert viewer.dims.current_step[0] == listed  # the image alone sets the range
    # a prior scan reaching 5 slices further down: the slider counts from its first slice
    below = np.asarray(crop.translate) - (5 * crop.scale[0], 0.0, 0.0)
    viewer.add_image(np.zeros((4, 8, 8), np.float32), name="prior", scale=crop.scale, translate=below)
    widget.go_to_finding(0)
    assert int(table.cell_text(0, 7)) == listed  # the numbers do not change
    assert round(crop.world_to_data(viewer.dims.point)[0]) == listed  # the image's own slice
    assert viewer.dims.current_step[0] == listed + 5  # the slider's is not
    for words in (SLICE_CONVENTION, table.horizontalHeaderItem(7).toolTip()):
        assert "image's own" in words and "slice index" in words
        assert "when this image alone sets the viewer's range" in words
    assert "as napari's slider shows it" not in SLICE_CONVENTION
