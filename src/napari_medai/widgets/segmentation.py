"""Segmentation dock widget: a label map (and optionally a lesion probability map) of an image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox

from ._base import TaskParams, TaskWidget
from ._layers import output_layer_data


@dataclass
class SegmentationParams(TaskParams):
    min_lesion_mm3: float = 5.0  # connected components smaller than this are dropped
    probability_layer: bool = False  # also add the last class's probability as an image


def labels_from_probabilities(probs, spacing, min_lesion_mm3: float) -> np.ndarray:
    """(C, z, y, x) class probabilities -> (z, y, x) label map without specks: regions of
    any foreground class smaller than ``min_lesion_mm3`` become background."""
    from ..postprocess.components import clean_segmentation

    probs = np.asarray(probs)
    labels = probs.argmax(axis=0).astype(np.uint8)
    foreground = tuple(range(1, probs.shape[0]))
    return clean_segmentation(labels, spacing, lesions=foreground, min_lesion_mm3=min_lesion_mm3)


class SegmentationWidget(TaskWidget):
    task = "segmentation"
    title = "Segmentation"
    params_type = SegmentationParams
    accepts_model_files = True

    def _build_params(self, form):
        self.min_size_box = QDoubleSpinBox()
        self.min_size_box.setRange(0.0, 1e6)
        self.min_size_box.setDecimals(1)
        self.min_size_box.setValue(SegmentationParams.min_lesion_mm3)
        self.min_size_box.setSuffix(" mm³")
        self.min_size_box.setToolTip("Regions smaller than this volume are removed")
        self.probability_check = QCheckBox("Add lesion probability layer")
        form.addRow("Minimum lesion size", self.min_size_box)
        form.addRow(self.probability_check)

    def _task_values(self):
        return {
            "min_lesion_mm3": self.min_size_box.value(),
            "probability_layer": self.probability_check.isChecked(),
        }

    def _make_job(self, volume, spacing, params):
        infer = super()._make_job(volume, spacing, params)

        def job(progress, cancel):
            probs = np.asarray(infer(progress, cancel))
            cancel.raise_if_cancelled()
            labels = labels_from_probabilities(probs, spacing, params.min_lesion_mm3)
            lesion = probs[-1].astype(np.float32) if params.probability_layer else None
            return {"labels": labels, "lesion_probability": lesion}

        return job

    def _result_layers(self, result, source_layer, params):
        layers = [output_layer_data(result["labels"], source_layer, "segmentation", "labels")]
        if result.get("lesion_probability") is not None:
            layers.append(
                output_layer_data(
                    result["lesion_probability"], source_layer, "lesion probability", "image",
                    colormap="magma", contrast_limits=(0.0, 1.0), blending="additive",
                )
            )
        return layers
