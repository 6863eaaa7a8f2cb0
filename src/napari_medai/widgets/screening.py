"""Screening report dock widget: a thin Qt front end to :func:`napari_medai.screening.screen`.

It is the detection widget (same pickers, findings layers, table, row click and CSV export)
whose job runs the whole screening workflow instead of the detector alone.  On top it adds

* ``"<image> segmentation"``: the lungs and nodules as a Labels layer (class colours);
* ``"<image> denoised"``: when *Denoise first* is ticked, the volume the models read;
* each finding's lung, zone and segmented volume as Points features and table columns;
* the report (exam-level Lung-RADS category by attenuation and by size, lung volumes, findings) in the dock, and
  *Save report…*, which writes ``<name>.md`` and ``<name>.json`` and a key image of each finding
  (``postprocess.key_images``) in ``<name>_key_images/``;
* the reader's review (*Accept* / *Reject*, from the detection widget) goes into the report at
  once: the findings the reader rejected no longer set the exam's category.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QCheckBox, QComboBox, QPlainTextEdit, QPushButton

from ..errors import InputError
from ..io.atomic import all_or_nothing, write_text_atomic
from ..napari_hooks.label_classes import named_labels
from ._base import current_card, task_models, with_extension
from ._layers import layer_world_mm, output_layer_data
from .detection import DetectionParams, DetectionWidget

SEGMENTATION = "medai_screening_segmentation"  # metadata key marking the run's segmentation layer


@dataclass
class ScreeningParams(DetectionParams):
    segmenter: object = None  # segmentation model card (None: the built-in default)
    denoise: bool = False  # run the CT denoiser first; the models read its output


class ScreeningWidget(DetectionWidget):
    title = "Screening report"
    params_type = ScreeningParams
    preload_modules = (*DetectionWidget.preload_modules, "napari_medai.postprocess.airway", "napari_medai.screening",
                       "napari_medai.postprocess.key_images")

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self.screening = None
        self.source_name = ""
        self._saved = None  # _report_state() when the report was last saved
        self._key_images = []  # the last run's key images, PNG bytes in rank order
        self.report_view = QPlainTextEdit()
        self.report_view.setReadOnly(True)
        self.report_view.setPlaceholderText("The report appears here after Run.")
        self.save_button = QPushButton("Save report…")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self._choose_report_file)
        self._add_result_widgets(self.report_view, self.save_button)

    def _build_params(self, form):
        super()._build_params(form)
        self.segmenter_box = QComboBox()
        self.segmenter_box.setToolTip("The segmentation that outlines the lungs and nodules for the report")
        for card, installed in task_models("segmentation"):  # the default model first
            if installed:
                self.segmenter_box.addItem(card.name, card)
        form.addRow("Segmentation model", self.segmenter_box)
        self.denoise_check = QCheckBox("Denoise first (low-dose CT)")
        self.denoise_check.setToolTip("Run the CT denoiser first; the detector and the segmentation read its output")
        form.addRow("", self.denoise_check)

    def _task_values(self):
        return {**super()._task_values(), "segmenter": current_card(self.segmenter_box.currentData()),
                "denoise": self.denoise_check.isChecked()}

    def _stated_models(self, params) -> list:
        return [params.model, params.segmenter]  # a segmenter left None (the built-in default) is skipped

    def _make_job(self, volume, spacing, params):
        affine = layer_world_mm(self.layer_picker.current_layer())  # positions in mm

        def job(progress, cancel):
            from ..api import DEFAULT_SEGMENTATION_MODEL
            from ..postprocess.findings import findings_mask
            from ..postprocess.key_images import key_image_pngs
            from ..screening import KEY_IMAGE_FOV_MM, screen

            data = np.asarray(volume)
            segmenter = params.segmenter if params.segmenter is not None else DEFAULT_SEGMENTATION_MODEL
            result = screen(data, spacing, affine, denoise=params.denoise, detector=params.model,
                            segmenter=segmenter, score_threshold=params.score_threshold, max_findings=params.max_findings,
                            settings=params.inference_settings(), progress=progress, cancel=cancel)
            findings = [s.finding for s in result.findings]
            mask = findings_mask(findings, data.shape) if findings else None
            # Drawn here, off the Qt thread, so that Save report only writes files; they show
            # the volume as it was screened (not the denoised one), as medai screen's do.
            progress(1, 1, "drawing the key images")
            pngs = key_image_pngs(findings, data, spacing, fov_mm=KEY_IMAGE_FOV_MM, cancel=cancel)
            # the segmentation's classes: New labels names them, so Add to labels writes the nodule class
            return {"findings": findings, "mask": mask, "screening": result, "key_images": pngs,
                    "classes": result.classes}

        return job

    def _result_layers(self, result, source_layer, params):
        screening = result["screening"]
        found = super()._result_layers(result, source_layer, params)  # finding masks, then the points
        points = next(layer for layer in found if layer[2] == "points")
        features = points[1]["features"]
        features["side"] = [s.side for s in screening.findings]
        features["zone"] = [s.zone for s in screening.findings]
        features["segmented_volume_ml"] = [s.segmented_volume_ml for s in screening.findings]
        features["segmented_outline"] = [s.segmented_outline for s in screening.findings]
        points[1]["metadata"]["screening"] = _record(screening, source_layer.name,
                                                     _grid(source_layer.data.shape, source_layer.metadata))
        # bottom to top: the volume the models read, the segmentation, the findings' masks and markers
        layers = []
        if screening.denoised is not None:
            layers.append(output_layer_data(
                screening.denoised, source_layer, "denoised", "image",
                contrast_limits=list(source_layer.contrast_limits), colormap="gray",
            ))
        layers.append(output_layer_data(
            screening.labels, source_layer, "segmentation", "labels",
            **named_labels(screening.classes),
            metadata={"classes": screening.classes, "lung_volumes_ml": screening.lung_volumes_ml,
                      SEGMENTATION: True},
        ))
        return [*layers, *found]

    def _add_results(self, result, source_layer, params):
        from ..screening import screening_markdown

        layers = super()._add_results(result, source_layer, params)
        segmentation = next(layer for layer in layers if layer.metadata.get(SEGMENTATION))
        self.target_picker.set_layer(segmentation)  # the layer a missed nodule is added to
        self.screening, self.source_name = result["screening"], source_layer.name
        self._key_images = result["key_images"]
        self.report_view.setPlainText(screening_markdown(self.screening, self.source_name))
        self.save_button.setEnabled(True)
        return layers

    def _make_mark_job(self, volume, spacing, point, affine):
        measure = super()._make_mark_job(volume, spacing, point, affine)
        screening = self.screening

        def job(progress, cancel):
            from ..postprocess.key_images import key_image_pngs
            from ..screening import KEY_IMAGE_FOV_MM, with_added_finding

            result = measure(progress, cancel)
            finding = result["finding"]
            # its lung, zone and segmented volume, like the detector's findings, and its key image
            result["screening"] = with_added_finding(screening, finding, spacing, affine)
            result["key_image"] = key_image_pngs([finding], np.asarray(volume), spacing, fov_mm=KEY_IMAGE_FOV_MM)[0]
            return result

        return job

    def _add_reader_finding(self, result) -> str:
        previous = self.screening, self._key_images
        self.screening = result["screening"]
        self._key_images = [*self._key_images, result["key_image"]]
        # the report's copy of the finding (with_added_finding copies it) gets the label its mask gets
        # below, before the report is redrawn: the saved JSON said 0, and a consumer matching findings to
        # mask labels got background
        self.screening.findings[-1].finding.label = len(self.findings) + 1
        count = len(self.findings)
        try:
            said = super()._add_reader_finding(result)
        except Exception:
            if len(self.findings) == count:  # the mask could not be added: nor is the finding, in the report
                self.screening, self._key_images = previous
            raise
        layer = self._live_findings_layer()
        rows = self.point_rows(layer)
        if rows is not None:
            screened = [self.screening.findings[r] for r in rows]
            features = layer.features.copy()
            features["side"] = [s.side for s in screened]
            features["zone"] = [s.zone for s in screened]
            features["segmented_volume_ml"] = [s.segmented_volume_ml for s in screened]
            features["segmented_outline"] = [s.segmented_outline for s in screened]
            layer.features = features
        return said

    def reviewed_screening(self):
        """The last run's result with the reader's review so far (``screening.with_review``)."""
        from ..screening import with_review

        return with_review(self.screening, self.review)

    def _review_changed(self) -> None:
        from ..screening import screening_markdown

        reviewed = self.reviewed_screening()
        bar = self.report_view.verticalScrollBar()
        position = bar.value()  # the reader keeps their place in the report
        self.report_view.setPlainText(screening_markdown(reviewed, self.source_name))
        bar.setValue(position)
        layer = self._live_findings_layer()
        if layer is not None:
            layer.metadata["screening"] = _record(reviewed, self.source_name,
                                                  _grid(self._findings_shape, layer.metadata))

    def save_report(self, path) -> Path:
        """Write the last run's report as ``<path>.md`` and ``<path>.json``, with a key image of
        each finding in ``<path stem>_key_images/`` beside them; returns the .md path."""
        from ..postprocess.key_images import save_key_images
        from ..screening import check_key_image_folder, check_report_json, screening_markdown, screening_record

        if self.screening is None:
            raise InputError("run the screening first: there is no report to save")
        md, js = report_files(path)
        check_report_json(js)  # before anything is written
        folder = "_".join(md.stem.split()) + "_key_images"  # no spaces: Markdown links stay plain
        check_key_image_folder(js, folder)  # "exam report" and "exam_report" share it
        reviewed = self.reviewed_screening()
        grid = _grid(self._findings_shape, self.findings_layer.metadata if self.findings_layer else None)
        # all or none, as medai screen writes its report: a full disk at the .json left the new .md
        # and key images beside the earlier .json, the earlier key images beyond these removed
        with all_or_nothing():
            images = save_key_images(self._key_images, md.parent, folder=folder)
            write_text_atomic(md, screening_markdown(reviewed, self.source_name, images))
            write_text_atomic(js, json.dumps(screening_record(reviewed, self.source_name, images, grid), indent=2))
        extra = f" (key images in {folder}/)" if images else ""
        self.status_label.setText(f"report written to {md} and {js.name}{extra}")
        self._saved = self._report_state()
        return md

    def _report_state(self):
        return (id(self.screening), tuple(self.review))

    def _on_closed(self) -> None:
        """A closed dock is not docked again (napari makes a new one): a report or review not saved
        would be gone without a word, so the reader is told where the findings and review stay."""
        super()._on_closed()
        if self.screening is None or self._report_state() == self._saved:
            return
        from napari.utils.notifications import show_warning

        layer = self.findings_layer
        where = (f"; the findings and the review stay on the layer '{layer.name}' (its 'review' feature and "
                 "metadata['screening'])" if layer is not None and layer in self.viewer.layers else "")
        show_warning(f"{self.title}: closed with its report not saved{where}. Run it again to save a report")

    def _choose_report_file(self) -> None:
        self._save_with_dialog("Save screening report", f"{self.source_name} report.md", "Markdown (*.md)",
                               self.save_report, "cannot save the report", written=lambda p: report_files(p)[:1])


def report_files(path) -> tuple[Path, Path]:
    """The (.md, .json) pair ``save_report`` writes for the name ``path`` (the .json is refused
    unless it is a report's own, ``check_report_json``)."""
    if Path(path).suffix.lower() == ".json":  # the pair's other name: the same report
        path = Path(path).with_suffix("")
    md = with_extension(path, ".md")  # "CHEST 1.25mm report" keeps its "1.25"
    return md, md.with_suffix(".json")


def _grid(shape, metadata):
    from ..postprocess.report import file_grid  # here: the dock opens without the report module

    return file_grid(shape, metadata)


def _record(screening, source: str, grid=None) -> dict:
    from ..screening import screening_record

    return screening_record(screening, source, grid=grid)
