"""Lesion detection dock widget: findings (points with a score) from a lesion probability map."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qtpy.QtWidgets import QDoubleSpinBox, QSpinBox

from ._base import TaskParams, TaskWidget
from ._layers import output_layer_data


@dataclass
class DetectionParams(TaskParams):
    score_threshold: float = 0.5  # lesion probability a finding must reach
    max_findings: int = 10  # the most probable findings kept


class DetectionWidget(TaskWidget):
    task = "detection"
    title = "Lesion detection"
    params_type = DetectionParams
    accepts_model_files = True

    def _build_params(self, form):
        self.threshold_box = QDoubleSpinBox()
        self.threshold_box.setRange(0.0, 1.0)
        self.threshold_box.setSingleStep(0.05)
        self.threshold_box.setValue(DetectionParams.score_threshold)
        self.threshold_box.setToolTip("Lesion probability a finding must reach")
        self.max_findings_box = QSpinBox()
        self.max_findings_box.setRange(1, 1000)
        self.max_findings_box.setValue(DetectionParams.max_findings)
        form.addRow("Score threshold", self.threshold_box)
        form.addRow("Max findings", self.max_findings_box)

    def _task_values(self):
        return {
            "score_threshold": self.threshold_box.value(),
            "max_findings": self.max_findings_box.value(),
        }

    def _make_job(self, volume, spacing, params):
        infer = super()._make_job(volume, spacing, params)

        def job(progress, cancel):
            from ..postprocess.findings import findings_from_probability

            probability = np.asarray(infer(progress, cancel))[-1]  # last class: lesion
            cancel.raise_if_cancelled()
            return findings_from_probability(
                probability, spacing,
                score_threshold=params.score_threshold, max_findings=params.max_findings,
            )

        return job

    def _result_layers(self, findings, source_layer, params):
        """One ring per finding at its centre (voxel coordinates: the layer's geometry
        places it in mm), with score, size and Lung-RADS category as features."""
        centres = np.array([f.center_voxel for f in findings], dtype=float).reshape(-1, 3)
        features = {
            "score": [f.score for f in findings],
            "diameter_mm": [f.diameter_mm for f in findings],
            "lung_rads": [f.lung_rads for f in findings],
        }
        points = output_layer_data(
            centres, source_layer, "findings", "points",
            features=features, size=10, face_color="transparent", border_color="red",
            border_width=0.15, metadata={"findings": findings},
        )
        return [points]
