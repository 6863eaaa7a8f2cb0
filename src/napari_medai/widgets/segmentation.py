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
* the class volumes (mL) in the dock's table, kept current while the user edits the labels
  (:class:`_LiveVolumes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox, QLabel

from ..napari_hooks.label_classes import class_colors, named_labels
from ..postprocess.measure import label_counts, volume_rows
from ._base import TaskParams, TaskWidget, card_of, is_load_entry
from ._layers import UNKNOWN_MODALITY, layer_spacing, output_layer_data
from ._picker import unwrap
from ._tables import VolumeTable

MODELS_OWN = "model's own"  # the minimum lesion size box, where the model's card decides
RECOUNT_DELAY_MS = 150  # after the last edit: a burst of edits is counted once


@dataclass
class SegmentationParams(TaskParams):
    # lesion components smaller than this are dropped; None: the card's own value
    min_lesion_mm3: float | None = None
    probability_layer: bool = False  # also add the lesion class's probability as an image


def card_min_lesion_mm3(model) -> float | None:
    """The minimum lesion size ``segment`` uses for ``model`` when the call gives none: the
    card's ``extra.min_lesion_mm3`` (0 without one).  ``model`` is a card from the list or a path
    added with "Load model file…": a card .json, or a .pt beside the card that names it (as
    ``models.load_model`` reads them).  None: no card (a bundle, a bare TorchScript file, an
    unreadable card: Run reports that one)."""
    card = card_of(model)
    value = (getattr(card, "extra", None) or {}).get("min_lesion_mm3", 0.0) if card is not None else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class SegmentationWidget(TaskWidget):
    task = "segmentation"
    title = "Segmentation"
    params_type = SegmentationParams
    accepts_model_files = True
    preload_modules = (*TaskWidget.preload_modules, "napari_medai.postprocess.airway", "napari_medai.postprocess.body")

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self.volume_caption = QLabel("Class volumes appear here after a run.")
        self.volume_caption.setWordWrap(True)
        self.volume_table = VolumeTable()
        self._add_result_widgets(self.volume_caption, self.volume_table)
        self.live_volumes = _LiveVolumes(self)

    def _build_params(self, form):
        self._card_min_size = None  # the chosen model's card value as the box shows it; None: unknown
        self.min_size_box = QDoubleSpinBox()
        # its minimum reads "model's own": the value is left to the model's card (a bundle, a
        # TorchScript file, whose card the widget does not read before the run)
        self.min_size_box.setRange(-0.1, 1e6)  # one decimal: -0.1, "model's own", is the only value below 0
        self.min_size_box.setSpecialValueText(MODELS_OWN)
        self.min_size_box.setDecimals(1)
        self.min_size_box.setSuffix(" mm³")
        self.min_size_box.setToolTip(
            "Lesion regions (the classes the model card calls lesions) smaller than this volume are removed; "
            f"choosing a model sets its card's value ('{MODELS_OWN}' where the widget cannot read it)"
        )
        self.probability_check = QCheckBox("Add lesion probability layer")
        self.probability_check.setToolTip("The lesion class's probability: bright where sure, dim where unsure")
        form.addRow("Minimum lesion size", self.min_size_box)
        form.addRow(self.probability_check)
        self.model_box.currentIndexChanged.connect(self._use_card_min_size)

    def _task_values(self):
        value = self.min_size_box.value()
        # Left as the card's (shown rounded to 0.1 mm³), the card's own value is used, so the
        # widget and `medai segment --model` keep the same lesions; a changed value overrides it.
        if value == self.min_size_box.minimum() or value == self._card_min_size:
            value = None
        return {"min_lesion_mm3": value, "probability_layer": self.probability_check.isChecked()}

    def _use_card_min_size(self, index: int) -> None:
        if is_load_entry(self.model_box.itemData(index)):  # only a dialog so far: a cancelled one changes nothing
            return
        value = card_min_lesion_mm3(self.model_box.itemData(index))
        self.min_size_box.setValue(self.min_size_box.minimum() if value is None else value)
        self._card_min_size = None if value is None else self.min_size_box.value()

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
            **named_labels(classes),
            # lesion_outlines: which outline each nodule got, for volumes compared across visits
            metadata={"classes": classes, "class_volumes": result.volumes, "model": _model_name(params.model),
                      "lesion_outlines": result.lesion_outlines},
        )
        layers = [labels]
        if result.lesion_probability is not None:
            layers.append(
                output_layer_data(
                    result.lesion_probability, source_layer, "lesion probability", "image",
                    modality=UNKNOWN_MODALITY,  # a probability, not HU: saved, it must not reopen as CT
                    colormap="magma", contrast_limits=(0.0, 1.0), blending="additive",
                )
            )
        return layers

    def _add_results(self, result, source_layer, params):
        layers = super()._add_results(result, source_layer, params)
        self.live_volumes.watch(layers[0], result.classes, result.volumes)
        if params.probability_layer and result.lesion_probability is None:
            from napari.utils.notifications import show_info

            show_info(f"{self.title}: this model names no lesion class, so there is no lesion probability layer.")
        return layers

    def _on_closed(self) -> None:
        super()._on_closed()
        self.live_volumes.detach()

    def _on_docked(self) -> None:
        super()._on_docked()
        self.live_volumes.attach()


class _LiveVolumes:
    """Keeps the dock's volume table and the layer's ``metadata["class_volumes"]`` in step with
    the segmentation layer of the last run while the user edits it, and clears the table when
    that layer is removed.

    napari emits ``paint`` after each brush stroke, fill or ``data_setitem`` block, ``data``
    when the array is replaced; undo and redo emit neither, only the ``set_data`` that every
    slice change emits too, so a recount follows ``set_data`` only when the undo history moved.
    Recounts wait RECOUNT_DELAY_MS after the last edit and use :func:`label_counts`.
    """

    def __init__(self, widget: SegmentationWidget):
        self.widget = widget
        self.layer = None
        self.classes: dict = {}
        self._attached = False
        self._history = (0, 0)
        self.timer = QTimer(widget)
        self.timer.setSingleShot(True)
        self.timer.setInterval(RECOUNT_DELAY_MS)
        self.timer.timeout.connect(self.recount)

    def watch(self, layer, classes: dict, volumes: list[dict]) -> None:
        """Show ``volumes`` of ``layer`` (a new run's) and follow its edits from now on."""
        self.detach()  # the previous run's layer is no longer followed
        self.layer, self.classes = layer, classes
        self._show(volumes)  # the run's own figures: nothing to recount yet
        self._connect()

    def attach(self) -> None:
        """Follow the layer again after the dock was closed, counting the edits made meanwhile."""
        if self._connect():
            self.recount()

    def _connect(self) -> bool:
        if self._attached or self.layer is None:
            return False
        if not any(unwrap(x) is unwrap(self.layer) for x in self.widget.viewer.layers):
            self._forget()  # removed while the dock was closed
            return False
        self._attached = True
        for emitter, slot in self._connections():
            emitter.connect(slot)
        self._history = _history_key(self.layer)
        return True

    def detach(self) -> None:
        self.timer.stop()
        if self._attached:
            self._attached = False
            for emitter, slot in self._connections():
                emitter.disconnect(slot)

    def _connections(self) -> list:
        events = self.layer.events
        return [(events.paint, self._schedule), (events.data, self._schedule), (events.set_data, self._on_set_data),
                (events.name, self._caption), (self.widget.viewer.layers.events.removed, self._on_removed)]

    def _schedule(self, event=None) -> None:
        self.timer.start()  # restarted by each edit of a burst

    def _on_set_data(self, event=None) -> None:
        history = _history_key(self.layer)
        if history != self._history:
            self._history = history
            self._schedule()

    def _on_removed(self, event) -> None:
        if unwrap(event.value) is unwrap(self.layer):
            self.detach()
            self._forget()

    def recount(self) -> None:
        from ..errors import MedaiError

        if self.layer is None:
            return
        try:
            voxel_ml = float(np.prod(layer_spacing(self.layer))) / 1000.0
        except MedaiError as exc:  # e.g. its units made a non-length meanwhile: a timer slot must not raise
            self.widget.volume_caption.setText(f"Class volumes of '{self.layer.name}' cannot be counted: {exc}")
            return
        rows = volume_rows(label_counts(self.layer.data), voxel_ml, self.classes)
        self.layer.metadata["class_volumes"] = rows
        self._show(rows)

    def _show(self, rows: list[dict]) -> None:
        colors = class_colors(self.classes)
        for row in rows:  # a value the user painted: the colour it is drawn in
            if row["index"] not in colors:
                r, g, b, _ = np.asarray(self.layer.colormap.map(row["index"])) * 255
                colors[row["index"]] = f"#{round(r):02x}{round(g):02x}{round(b):02x}"
        self.widget.volume_table.show_volumes(rows, colors)
        self._caption()

    def _caption(self, event=None) -> None:
        self.widget.volume_caption.setText(f"Class volumes of '{self.layer.name}':")

    def _forget(self) -> None:
        name, self.layer = self.layer.name, None
        self.widget.volume_table.setRowCount(0)
        self.widget.volume_caption.setText(f"'{name}' was removed; class volumes appear here after the next run.")


def _history_key(layer) -> tuple[int, int]:
    # Private napari state (0.9): lengths of the undo and redo stacks, which undo and redo change.
    return len(getattr(layer, "_undo_history", ())), len(getattr(layer, "_redo_history", ()))


def _model_name(model) -> str:
    return str(getattr(model, "name", model))
