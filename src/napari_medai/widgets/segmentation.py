"""Segmentation dock widget: a thin Qt front end to :func:`napari_medai.api.segment`.

The job (worker thread) calls ``api.segment`` with the chosen model, device, precision and
minimum lesion size; everything the model card says about post-processing (organs keep
their largest components, lesion classes lose small ones) happens there, so the widget,
the CLI and Python users get the same labels.  On the Qt thread the result becomes

* ``"<image> segmentation"``: a Labels layer on the image's grid and in its physical space,
  coloured with the model's class colours, with the class names as features (napari shows
  the name under the cursor);
* optionally ``"<image> lesion probability"``: an Image layer of the lesion class's
  probability (where the model is unsure), for models whose card names a lesion class;
* the class volumes (mL) in the dock's table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox, QLabel

from ._base import TaskParams, TaskWidget
from ._layers import output_layer_data
from ._tables import VolumeTable

# Colours for classes whose card gives none (as for bundles without colours).
FALLBACK_COLORS = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0",
                   "#f032e6", "#bcf60c", "#fabebe", "#008080"]


@dataclass
class SegmentationParams(TaskParams):
    min_lesion_mm3: float = 5.0  # lesion components smaller than this are dropped (overrides the card)
    probability_layer: bool = False  # also add the lesion class's probability as an image


def class_colors(classes: dict[int, dict]) -> dict[int, str]:
    """Hex colour of each class; a foreground class without one gets a palette colour that
    no other class uses (the background is drawn transparent whatever its colour)."""
    colors = {index: info.get("color") for index, info in classes.items()}
    taken = {c.lower() for c in colors.values() if c}
    spare = [c for c in FALLBACK_COLORS if c not in taken] or FALLBACK_COLORS
    for k, index in enumerate(i for i in sorted(colors) if i != 0 and not colors[i]):
        colors[index] = spare[k % len(spare)]
    return colors


def class_colormap(classes: dict[int, dict]):
    """napari label colormap: each class in its card colour, background transparent."""
    from napari.utils.colormaps import DirectLabelColormap
    from napari.utils.colormaps.standardize_color import transform_color

    transparent = np.zeros(4, np.float32)
    color_dict = {None: transparent, 0: transparent}
    for index, color in class_colors(classes).items():
        if index != 0:
            color_dict[index] = transform_color(color)[0]
    return DirectLabelColormap(color_dict=color_dict)


def class_features(classes: dict[int, dict]) -> dict[str, list]:
    """Labels-layer features: one row per label value ("index"), with the class name."""
    indices = sorted(classes)
    return {"index": indices, "class": [str(classes[i]["name"]) for i in indices]}


class SegmentationWidget(TaskWidget):
    task = "segmentation"
    title = "Segmentation"
    params_type = SegmentationParams
    accepts_model_files = True

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self.volume_caption = QLabel("Class volumes appear here after a run.")
        self.volume_caption.setWordWrap(True)
        self.volume_table = VolumeTable()
        self._add_result_widgets(self.volume_caption, self.volume_table)

    def _build_params(self, form):
        self.min_size_box = QDoubleSpinBox()
        self.min_size_box.setRange(0.0, 1e6)
        self.min_size_box.setDecimals(1)
        self.min_size_box.setValue(SegmentationParams.min_lesion_mm3)
        self.min_size_box.setSuffix(" mm³")
        self.min_size_box.setToolTip(
            "Lesion regions (the classes the model card calls lesions) smaller than this "
            "volume are removed; set when a built-in model is chosen to its card's value"
        )
        self.probability_check = QCheckBox("Add lesion probability layer")
        self.probability_check.setToolTip("The lesion class's probability: bright where sure, dim where unsure")
        form.addRow("Minimum lesion size", self.min_size_box)
        form.addRow(self.probability_check)
        self.model_box.currentIndexChanged.connect(self._use_card_min_size)

    def _task_values(self):
        return {
            "min_lesion_mm3": self.min_size_box.value(),
            "probability_layer": self.probability_check.isChecked(),
        }

    def _use_card_min_size(self, index: int) -> None:
        card = self.model_box.itemData(index)
        value = getattr(card, "extra", {}).get("min_lesion_mm3") if card is not None else None
        if isinstance(value, (int, float)):
            self.min_size_box.setValue(float(value))

    def _make_job(self, volume, spacing, params):
        def job(progress, cancel):
            from ..api import segment

            result = segment(
                np.asarray(volume), spacing, model=params.model,
                settings=params.inference_settings(),
                progress=progress, cancel=cancel, min_lesion_mm3=params.min_lesion_mm3,
            )
            if not params.probability_layer:
                result.lesion_probability = None
            return result

        return job

    def _result_layers(self, result, source_layer, params):
        classes = result.classes
        labels = output_layer_data(
            result.labels, source_layer, "segmentation", "labels",
            colormap=class_colormap(classes), features=class_features(classes),
            metadata={"classes": classes, "class_volumes": result.volumes, "model": _model_name(params.model)},
        )
        layers = [labels]
        if result.lesion_probability is not None:
            layers.append(
                output_layer_data(
                    result.lesion_probability, source_layer, "lesion probability", "image",
                    colormap="magma", contrast_limits=(0.0, 1.0), blending="additive",
                )
            )
        return layers

    def _add_results(self, result, source_layer, params):
        layers = super()._add_results(result, source_layer, params)
        self.volume_table.show_volumes(result.volumes, class_colors(result.classes))
        self.volume_caption.setText(f"Class volumes of '{layers[0].name}':")
        if params.probability_layer and result.lesion_probability is None:
            from napari.utils.notifications import show_info

            show_info(f"{self.title}: this model names no lesion class, so there is no lesion probability layer.")
        return layers


def _model_name(model) -> str:
    return str(getattr(model, "name", model))
