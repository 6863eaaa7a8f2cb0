"""Screening report widget on a two-lung toy chest with fixed-rule models sharing one weights file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixed_rule_models import detection_card, install, segmentation_card, two_lung_chest
from qtpy.QtWidgets import QMessageBox
from skimage.io import imread

from napari_medai.errors import InputError
from napari_medai.models.card import save_card
from napari_medai.postprocess.key_images import key_image
from napari_medai.screening import KEY_IMAGE_FOV_MM

pytestmark = pytest.mark.gui
TIMEOUT_MS = 20_000
SCALE, TRANSLATE = (2.0, 1.0, 1.0), (-30.0, 5.0, 7.0)


def _install_models(folder, **network_kwargs):
    seg_path = install(segmentation_card(name="rule-seg", **network_kwargs), folder)
    seg = json.loads(seg_path.read_text())
    det = detection_card(name="rule-det", **network_kwargs)
    det.weights, det.sha256 = seg["weights"], seg["sha256"]
    save_card(det, folder / "rule-det.json")


def _docked(viewer):
    """(dock, widget) of a new Screening dock with the test's models chosen."""
    dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Screening report")
    widget.model_box.setCurrentIndex(widget.model_box.findText("rule-det"))
    widget.segmenter_box.setCurrentIndex(widget.segmenter_box.findText("rule-seg"))
    return dock, widget


def _open(viewer):
    return _docked(viewer)[1]


@pytest.fixture
def chest(viewer, tmp_path, monkeypatch):
    monkeypatch.setattr("napari_medai.models.registry.WEIGHTS_DIR", tmp_path / "weights")
    _install_models(tmp_path / "weights")
    return viewer.add_image(two_lung_chest(), name="chest", scale=SCALE, translate=TRANSLATE)


def test_the_report_adds_findings_segmentation_and_text_in_the_images_space(qtbot, viewer, chest, tmp_path):
    widget = _open(viewer)
    before = chest.data.copy()
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.run_button.click()
    assert ended.args[0] == "done"
    names = [layer.name for layer in viewer.layers]
    # bottom to top: the segmentation, then the findings' masks, their markers on top of both
    assert names == ["chest", "chest segmentation", "chest finding masks", "chest findings"]
    np.testing.assert_array_equal(chest.data, before)  # the input is untouched
    points, seg = viewer.layers["chest findings"], viewer.layers["chest segmentation"]
    assert list(points.features["side"]) == ["left", "right"]
    assert list(points.features["zone"]) == ["upper", "lower"]
    assert points.features["segmented_volume_ml"][0] == pytest.approx(11 ** 3 * 2.0 / 1000)
    assert list(points.features["segmented_outline"]) == ["network", "network"]  # the toy card does not refine
    for layer in (points, seg):
        np.testing.assert_allclose(layer.scale, SCALE)
        np.testing.assert_allclose(layer.translate, TRANSLATE)
    assert seg.data.shape == chest.data.shape and set(np.unique(seg.data)) == {0, 1, 2}
    text = widget.report_view.toPlainText()
    assert "Highest Lung-RADS category (v2022, baseline screen, by each nodule's attenuation) among the reported findings: 4A" in text and "not a diagnosis" in text
    assert widget.findings_table.rowCount() == 2
    # a finding goes into the new segmentation as its nodule class, not into the finding masks
    assert widget.target_picker.current_layer() is seg and widget.label_value_box.value() == 2
    # and into a New labels layer as the nodule class too: it names the segmentation's classes
    fresh = widget.new_labels_layer()
    assert list(fresh.features["class"]) == ["background", "lung", "nodule"] and widget.label_value_box.value() == 2
    widget.target_picker.set_layer(seg)
    md = widget.save_report(tmp_path / "chest report")
    saved = md.read_text()
    assert saved.startswith(text.rstrip("\n")) and "## Key images" not in text  # the dock shows no images
    record = json.loads(md.with_suffix(".json").read_text())
    assert record["source"] == "chest" and record["highest_size_category"] == "4A"
    # a key image per finding beside the report, linked from it, from the volume the run read
    images = [f["key_image"] for f in record["findings"]]
    assert images == ["chest_report_key_images/finding_01.png", "chest_report_key_images/finding_02.png"]
    for image in images:
        assert f"]({image})" in saved and imread(tmp_path / image).shape[2] == 3
    # drawn in the job from the layer's data, so saving needed neither the volume nor a redraw
    first = widget.screening.findings[0].finding
    np.testing.assert_array_equal(imread(tmp_path / images[0]),
                                  key_image(np.asarray(chest.data), SCALE, first, fov_mm=KEY_IMAGE_FOV_MM))


def test_the_readers_review_updates_the_report_and_goes_into_the_saved_files(qtbot, viewer, chest, tmp_path):
    widget = _open(viewer)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.run_button.click()
    assert ended.args[0] == "done"
    assert [s.finding.lung_rads for s in widget.screening.findings] == ["4A", "2"]
    widget.set_review(0, "rejected")  # the 4A finding is not a nodule, says the reader
    text = widget.report_view.toPlainText()
    assert "**Highest Lung-RADS category (v2022, baseline screen, by each nodule's attenuation) after the reader's review: 2**" in text and "Before the review: 4A." in text
    record = widget.findings_layer.metadata["screening"]
    assert record["highest_size_category_after_review"] == "2" and record["findings"][0]["review"] == "rejected"
    md = widget.save_report(tmp_path / "exam")
    saved = json.loads(md.with_suffix(".json").read_text())
    assert saved["highest_size_category"] == "4A" and saved["highest_size_category_after_review"] == "2"
    assert saved["reader_review"] == {"accepted": 0, "rejected": 1, "not_reviewed": 1, "added": 0}
    assert "solid, Lung-RADS 4A, rejected by the reader)" in md.read_text()
    assert widget.screening.review == []  # the run's result itself is kept as the models gave it
    widget.set_review(0, "")
    assert "**Highest Lung-RADS category (v2022, baseline screen, by each nodule's attenuation) among the reported findings: 4A**" in widget.report_view.toPlainText()


def test_the_report_gives_the_index_in_the_image_files_own_voxel_order(qtbot, viewer, chest, tmp_path):
    # an image the reader opened from a RAS-stored NIfTI keeps that order and its grid in its metadata
    from napari_medai.io.orientation import file_voxel

    chest.metadata.update({"nifti_orientation": "RAS", "shape": tuple(chest.data.shape)})
    widget = _open(viewer)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.run_button.click()
    assert ended.args[0] == "done"
    expected = [file_voxel(s.finding.center_voxel, chest.data.shape, "RAS") for s in widget.screening.findings]
    # in the findings layer's record, kept current through the review, and in the saved report
    assert [f["center_file_voxel"] for f in widget.findings_layer.metadata["screening"]["findings"]] == expected
    widget.set_review(0, "accepted")
    assert [f["center_file_voxel"] for f in widget.findings_layer.metadata["screening"]["findings"]] == expected
    saved = json.loads(widget.save_report(tmp_path / "exam").with_suffix(".json").read_text())
    assert [f["center_file_voxel"] for f in saved["findings"]] == expected
    assert expected[0] != list(widget.screening.findings[0].finding.center_voxel[::-1])


def test_a_dot_in_the_report_name_is_kept(qtbot, viewer, chest, tmp_path):
    widget = _open(viewer)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.run_button.click()
    assert ended.args[0] == "done"
    md = widget.save_report(tmp_path / "CHEST 1.25mm report")
    assert md.name == "CHEST 1.25mm report.md"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["CHEST 1.25mm report.json",
                                                                          "CHEST 1.25mm report.md"]
    assert (tmp_path / "CHEST_1.25mm_report_key_images").is_dir()
    assert widget.save_report(tmp_path / "exam.MD").name == "exam.MD"
    assert widget.save_report(tmp_path / "chest.json").name == "chest.md"  # the pair's other name
    assert (tmp_path / "chest.json").is_file() and not (tmp_path / "chest.json.md").exists()


def test_a_readers_own_json_beside_the_chosen_name_is_not_replaced(qtbot, viewer, chest, tmp_path):
    widget = _open(viewer)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.run_button.click()
    assert ended.args[0] == "done"
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "notes"}')
    with pytest.raises(InputError, match="notes.json exists and is not a screening report"):
        widget.save_report(tmp_path / "notes.md")
    assert notes.read_text() == '{"my": "notes"}' and not list(tmp_path.glob("notes*_key_images"))
    assert not (tmp_path / "notes.md").exists()
    md = widget.save_report(tmp_path / "exam")  # a report's own .json is replaced on a second save
    assert widget.save_report(tmp_path / "exam") == md and "lung_rads_note" in md.with_suffix(".json").read_text()


def test_saving_before_a_run_says_so(viewer, chest):
    widget = _open(viewer)
    assert not widget.save_button.isEnabled()
    with pytest.raises(InputError, match="run the screening first"):
        widget.save_report("report.md")


def test_cancel_adds_nothing(qtbot, viewer, tmp_path, monkeypatch):
    from fixed_rule_models import ThresholdSegmenter
    from widget_helpers import count_forward_calls, record_cancel, run_and_cancel

    monkeypatch.setattr("napari_medai.models.registry.WEIGHTS_DIR", tmp_path / "weights")
    _install_models(tmp_path / "weights", delay_s=0.2)  # every window takes 0.2 s
    forwards = count_forward_calls(monkeypatch, ThresholdSegmenter)
    tokens = record_cancel(monkeypatch, "napari_medai.screening.screen")
    viewer.add_image(np.tile(two_lung_chest(), (1, 2, 2)), name="chest", scale=SCALE)
    widget = _open(viewer)
    status, at_cancel, _seconds = run_and_cancel(
        qtbot, widget, lambda: widget.progress_bar.value() > 0, count=lambda: len(forwards), timeout_ms=TIMEOUT_MS)
    assert status == "cancelled"
    # the models stopped within a window or two of Cancel; screen() got the widget's own token
    assert len(forwards) <= at_cancel + 2, (at_cancel, len(forwards))
    assert len(tokens) == 1 and tokens[0] is not None and tokens[0].cancelled
    assert [layer.name for layer in viewer.layers] == ["chest"] and widget.report_view.toPlainText() == ""


def test_cancel_while_the_key_images_are_drawn_stops_drawing_them(qtbot, viewer, tmp_path, monkeypatch):
    """The key images are drawn after the last progress report: only the cancel token the
    widget hands to key_image_pngs can stop them (8 findings here, 0.3 s an image)."""
    import time

    from widget_helpers import run_and_cancel

    from napari_medai.postprocess import key_images

    monkeypatch.setattr("napari_medai.models.registry.WEIGHTS_DIR", tmp_path / "weights")
    _install_models(tmp_path / "weights")
    drawn = []
    draw = key_images.key_image

    def slow_key_image(*args, **kwargs):
        time.sleep(0.3)
        drawn.append(1)
        return draw(*args, **kwargs)

    monkeypatch.setattr(key_images, "key_image", slow_key_image)
    viewer.add_image(np.tile(two_lung_chest(), (1, 2, 2)), name="chest", scale=SCALE)  # 8 blobs
    widget = _open(viewer)
    status, at_cancel, _seconds = run_and_cancel(qtbot, widget, lambda: len(drawn) > 0, count=lambda: len(drawn),
                                                 timeout_ms=TIMEOUT_MS)
    assert status == "cancelled"
    assert len(drawn) <= at_cancel + 1 and len(drawn) < 8, (at_cancel, len(drawn))
    assert [layer.name for layer in viewer.layers] == ["chest"] and widget.report_view.toPlainText() == ""


@pytest.fixture
def chest_with_denoiser(viewer, tmp_path, monkeypatch):
    import shutil

    from napari_medai.models import registry

    for name in ("ct-lowdose-denoising.json", "ct-lowdose-denoising.pt"):
        shutil.copy(registry.WEIGHTS_DIR / name, tmp_path / name)
    monkeypatch.setattr("napari_medai.models.registry.WEIGHTS_DIR", tmp_path)
    _install_models(tmp_path)
    rng = np.random.default_rng(0)
    noisy = two_lung_chest() + rng.normal(0.0, 40.0, (30, 40, 60)).astype(np.float32)
    return viewer.add_image(noisy, name="chest", scale=SCALE, translate=TRANSLATE)


def test_denoise_first_adds_the_denoised_volume_in_the_images_space(qtbot, viewer, chest_with_denoiser):
    widget = _open(viewer)
    widget.denoise_check.setChecked(True)
    before = chest_with_denoiser.data.copy()
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.run_button.click()
    assert ended.args[0] == "done"
    denoised = viewer.layers["chest denoised"]
    names = [layer.name for layer in viewer.layers]
    assert names == ["chest", "chest denoised", "chest segmentation", "chest finding masks", "chest findings"]
    np.testing.assert_array_equal(chest_with_denoiser.data, before)
    np.testing.assert_allclose(denoised.scale, SCALE)
    np.testing.assert_allclose(denoised.translate, TRANSLATE)
    assert tuple(denoised.contrast_limits) == tuple(chest_with_denoiser.contrast_limits)
    assert np.std(denoised.data - two_lung_chest()) < np.std(before - two_lung_chest())
    assert "The models read the denoised volume." in widget.report_view.toPlainText()


def test_the_save_buttons_ask_for_a_file_and_report_a_failure(qtbot, viewer, chest, tmp_path, monkeypatch,
                                                              notifications):
    widget = _open(viewer)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS):
        widget.run_button.click()
    asked = []

    def answer(path):
        def dialog(parent, caption, default, file_filter):
            asked.append((caption, default, file_filter))
            return str(path), file_filter
        monkeypatch.setattr("napari_medai.widgets._base.QFileDialog.getSaveFileName", dialog)

    answer(tmp_path / "exam.md")
    widget.save_button.click()  # the report
    assert (tmp_path / "exam.md").read_text().startswith(widget.report_view.toPlainText().rstrip("\n"))
    assert sorted(p.name for p in (tmp_path / "exam_key_images").iterdir()) == ["finding_01.png", "finding_02.png"]
    assert asked[-1] == ("Save screening report", "chest report.md", "Markdown (*.md)")
    answer(tmp_path / "exam-findings")
    widget.export_button.click()  # the findings table, inherited from the detection widget
    assert len((tmp_path / "exam-findings.csv").read_text().splitlines()) == 3  # header + 2 findings
    answer(tmp_path / "no-such-folder" / "exam.md")
    widget.save_button.click()
    severity, text = notifications()[-1]
    assert severity == "error" and text.startswith("Screening report: cannot save the report:"), text
    assert not (tmp_path / "no-such-folder").exists()
    answer("")  # the dialog cancelled: nothing happens
    widget.save_button.click()
    assert notifications()[-1] == (severity, text)
    # a name typed without its extension: the dialog asked about "mine", not the mine.md it replaced
    questions = []

    def reply(button):
        def question(parent, caption, text, *args):
            questions.append(text)
            return button
        monkeypatch.setattr("napari_medai.widgets._base.QMessageBox.question", question)

    (tmp_path / "mine.md").write_text("the reader's own notes")
    (tmp_path / "mine.csv").write_text("the reader's own table")
    reply(QMessageBox.No)
    answer(tmp_path / "mine")
    widget.save_button.click()
    widget.export_button.click()
    assert questions == ["mine.md already exists. Do you want to replace it?",
                         "mine.csv already exists. Do you want to replace it?"]
    assert (tmp_path / "mine.md").read_text() == "the reader's own notes"
    assert (tmp_path / "mine.csv").read_text() == "the reader's own table"
    reply(QMessageBox.Yes)
    widget.save_button.click()
    assert (tmp_path / "mine.md").read_text().startswith("# Lung-nodule screening")
    answer(tmp_path / "exam.md")  # the same name again: the dialog itself asked, no second question
    widget.save_button.click()
    assert len(questions) == 3


def test_two_report_names_that_share_a_key_image_folder_do_not_take_each_others_images(qtbot, viewer, chest,
                                                                                     tmp_path):
    """"exam report" and "exam_report" both put their images in exam_report_key_images/: saving the
    second replaced and deleted the first report's images (found by an audit helper)."""
    widget = _open(viewer)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS):
        widget.run_button.click()
    first = widget.save_report(tmp_path / "exam report")
    folder = tmp_path / "exam_report_key_images"
    images = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert len(images) == 2 and "exam_report_key_images/finding_01.png" in first.read_text()
    with pytest.raises(InputError, match="holds images this report did not write"):
        widget.save_report(tmp_path / "exam_report")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == images and not (tmp_path / "exam_report.md").exists()
    widget.save_report(tmp_path / "exam report")  # saving the same report again replaces its own images


def _click(widget, viewer, world, moves=0):
    """Drive the widget's mouse callback as napari does: press, ``moves`` drags, release."""
    from types import SimpleNamespace

    event = SimpleNamespace(button=1, position=tuple(world), type="mouse_press", pos=(100.0, 100.0))
    clicked = widget._mark_on_click(viewer, event)
    next(clicked)
    for step in range(moves):
        event.type, event.pos = "mouse_move", (100.0 + 3 * (step + 1), 100.0)
        next(clicked)
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(clicked)


def test_a_nodule_the_detector_did_not_list_is_added_from_a_click(qtbot, viewer, chest, tmp_path):
    widget = _open(viewer)
    widget.max_findings_box.setValue(1)  # only the 4A blob is listed; the small one is "missed"
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS):
        widget.run_button.click()
    assert [f.lung_rads for f in widget.findings] == ["4A"] and widget.mark_button.isEnabled()
    small = chest.data_to_world((5, 20, 15))  # the 3-voxel blob low in the right lung
    viewer.layers.selection.active = widget.findings_layer
    widget.findings_layer.mode = "add"  # left in a drawing mode, the click would add a point too
    widget.mark_button.setChecked(True)
    assert widget._mark_on_click in viewer.mouse_drag_callbacks
    assert widget.findings_layer.mode == "pan_zoom" and "pan/zoom mode" in widget.status_label.text()
    _click(widget, viewer, small, moves=3)  # a drag (9 pixels) pans the view: nothing is marked
    assert len(widget.findings) == 1 and widget.mark_button.isChecked()
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        viewer.dims.ndisplay = 3
        _click(widget, viewer, small)  # in 3D a click has no depth: refused
    viewer.dims.ndisplay = 2
    assert ended.args[0] == "error" and "2D view" in widget.status_label.text() and len(widget.findings) == 1
    widget.mark_button.setChecked(True)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        _click(widget, viewer, small, moves=1)  # a 3-pixel jitter is still a click
    assert ended.args[0] == "done"
    assert not widget.mark_button.isChecked() and widget._mark_on_click not in viewer.mouse_drag_callbacks
    added = widget.findings[-1]
    assert added.added_by_reader and widget.review == ["", "accepted"]
    np.testing.assert_allclose(added.center_voxel, (5, 20, 15), atol=0.5)
    assert added.mean_diameter_mm == pytest.approx(3.0, abs=0.7) and added.lung_rads == "2"
    assert widget.findings_table.cell_text(1, 1) == "reader"
    points = widget.findings_layer
    assert len(points.data) == 2 and list(points.features["review"]) == ["", "accepted"]
    assert list(points.features["side"]) == ["left", "right"] and points.features["zone"][1] == "lower"
    masks = viewer.layers["chest finding masks"]
    assert (masks.data == 2).sum() == added.mask.sum()  # its mask went in as label 2, one undo step
    text = widget.report_view.toPlainText()
    assert "the reader added 1 nodule" in text and "| reader |" in text and "| added |" in text
    md = widget.save_report(tmp_path / "exam")
    record = json.loads(md.with_suffix(".json").read_text())
    assert [f["added_by_reader"] for f in record["findings"]] == [False, True]
    assert [f["label"] for f in record["findings"]] == [1, 2]  # the mask's label (it said 0: a copy's)
    assert [f["label"] for f in widget.findings_layer.metadata["screening"]["findings"]] == [1, 2]
    assert record["reader_review"]["added"] == 1 and record["highest_size_category_after_review"] == "4A"
    assert record["findings"][1]["key_image"] == "exam_key_images/finding_02.png"
    assert (tmp_path / "exam_key_images" / "finding_02.png").exists()
    # a mark on plain lung is refused with a message, and nothing changes
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.measure_at(chest.data_to_world((14, 10, 10)))
    assert ended.args[0] == "error" and "no nodule at the point" in widget.status_label.text()
    assert len(widget.findings) == 2 and len(points.data) == 2


def test_closing_the_dock_with_an_unsaved_report_says_where_the_review_stays(qtbot, viewer, chest, tmp_path,
                                                                              notifications):
    """napari makes a new dock after a close: the report and the reader's review were gone without
    a word (found by an audit helper).  A saved one closes quietly."""
    dock, widget = _docked(viewer)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS):
        widget.run_button.click()
    widget.save_report(tmp_path / "exam")
    widget.set_review(0, "rejected")  # after the save: the saved report no longer says what the reader did
    viewer.window.remove_dock_widget(dock)
    said = [text for sev, text in notifications() if "closed with its report not saved" in text]
    assert said == ["Screening report: closed with its report not saved; the findings and the review stay on the "
                    "layer 'chest findings' (its 'review' feature and metadata['screening']). Run it again to save a "
                    "report"]
    dock, again = _docked(viewer)
    with qtbot.waitSignal(again.job_finished, timeout=TIMEOUT_MS):
        again.run_button.click()
    again.save_report(tmp_path / "exam2")
    viewer.window.remove_dock_widget(dock)
    assert len([text for sev, text in notifications() if "closed with its report not saved" in text]) == 1


def test_a_failure_after_the_readers_finding_went_in_keeps_the_report_with_the_widget(qtbot, viewer, chest,
                                                                                      monkeypatch):
    # the report rolls back only when the finding did not go in: rolled back after it had, every
    # review click failed ("the review has 2 state(s) for 1 finding(s)"; found by a review helper)
    widget = _open(viewer)
    widget.max_findings_box.setValue(1)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS):
        widget.run_button.click()

    def fails(row):
        raise RuntimeError("a failure after the mask went in")

    monkeypatch.setattr(widget, "go_to_finding", fails)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS):
        widget.measure_at(chest.data_to_world((5, 20, 15)))
    monkeypatch.undo()
    assert len(widget.screening.findings) == len(widget.findings) == 2
    widget.set_review(0, "rejected")  # the review still works
    assert widget.review[0] == "rejected"


def test_save_report_writes_all_its_files_or_none(qtbot, viewer, chest, tmp_path, full_disk):
    """A full disk at the .json left the new .md and key images beside the earlier .json (a
    reviewer's finding): now the earlier report stays whole."""
    widget = _open(viewer)
    with qtbot.waitSignal(widget.job_finished, timeout=TIMEOUT_MS) as ended:
        widget.run_button.click()
    assert ended.args[0] == "done", widget.status_label.text()
    md = widget.save_report(tmp_path / "exam")
    before = _report_files(tmp_path)
    assert {p.suffix for p in before} == {".md", ".json", ".png"}  # the report and its key images
    widget.set_review(0, "rejected")  # a changed report, saved again onto a full disk
    full_disk("exam.json")
    with pytest.raises(InputError, match="cannot write .*exam.json"):
        widget.save_report(tmp_path / "exam")
    after = _report_files(tmp_path)
    assert after == before and md.exists()


def _report_files(folder):
    """exam.md, exam.json and exam_key_images/*, with their bytes."""
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.relative_to(folder).parts[0].startswith("exam")}
