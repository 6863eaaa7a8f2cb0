"""Denoising dock widget: a denoised copy of an image (and optionally what was removed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox

from ._base import TaskParams, TaskWidget
from ._layers import UNKNOWN_MODALITY, output_layer_data

AUTO_MODEL = "Automatic (from the image's modality)"


@dataclass
class DenoisingParams(TaskParams):
    strength: float = 1.0  # 0 = the input unchanged, 1 = the network's output
    show_difference: bool = False  # also add input - output (the removed noise)


def blend(volume, denoised, strength: float) -> np.ndarray:
    """``volume + strength * (denoised - volume)`` as float32."""
    volume = np.asarray(volume, dtype=np.float32)
    return volume + np.float32(strength) * (np.asarray(denoised, dtype=np.float32) - volume)


def _denoise_core(volume, spacing, params):
    def infer(progress, cancel):
        from ..denoising import denoise

        # denoise() blends and rounds once, as `medai denoise --strength` does: blending its
        # already rounded output again would move an integer CT by a unit here and there
        return denoise(np.asarray(volume), spacing, model=params.model, strength=params.strength,
                       settings=params.inference_settings(), progress=progress, cancel=cancel)

    return infer


class DenoisingWidget(TaskWidget):
    task = "denoising"
    title = "Denoising"
    params_type = DenoisingParams
    offers_mirroring = False  # the denoisers run slice by slice outside run_model

    def refresh_models(self) -> None:
        """Built-in models plus, first and selected, the automatic choice by modality."""
        super().refresh_models()
        if any(self.model_box.itemData(i) is not None for i in range(self.model_box.count())):
            self.model_box.insertItem(0, AUTO_MODEL, AUTO_MODEL)
            self.model_box.setCurrentIndex(0)

    def params(self):
        """Resolve the automatic choice from the layer's modality (metadata from the reader)."""
        params = super().params()
        if params.model == AUTO_MODEL:
            from ..denoising import default_model_name
            from ..models import get_card

            layer = self.layer_picker.current_layer()
            modality = getattr(layer, "metadata", {}).get("modality") if layer is not None else None
            params.model = get_card(default_model_name(modality))
        return params

    def _build_params(self, form):
        self.strength_box = QDoubleSpinBox()
        self.strength_box.setRange(0.0, 1.0)
        self.strength_box.setSingleStep(0.1)
        self.strength_box.setValue(DenoisingParams.strength)
        self.strength_box.setToolTip("0 keeps the input, 1 uses the network's output")
        self.difference_check = QCheckBox("Show difference layer")
        form.addRow("Strength", self.strength_box)
        form.addRow(self.difference_check)

    def _task_values(self):
        return {
            "strength": self.strength_box.value(),
            "show_difference": self.difference_check.isChecked(),
        }

    def _make_job(self, volume, spacing, params):
        from ..errors import InputError

        if params.strength == 0.0:  # the network would run for an identical copy of the input
            raise InputError("strength 0 keeps the image as it is: choose a strength above 0 to denoise")
        # Built-in denoisers (2D/2.5D, slice-wise) run through napari_medai.denoising.denoise;
        # a card of another task (none is listed today) would go through the generic engine.
        builtin = getattr(params.model, "task", None) == "denoising"
        infer = _denoise_core(volume, spacing, params) if builtin else super()._make_job(volume, spacing, params)

        def job(progress, cancel):
            from ..denoising import as_input_dtype

            output = np.asarray(infer(progress, cancel))
            cancel.raise_if_cancelled()
            image = np.asarray(volume)
            if builtin:  # already blended, in the input's dtype
                denoised = output.reshape(image.shape)
            else:  # in the input's dtype, as denoise() and `medai denoise` give it (int16 CT stays int16)
                denoised = as_input_dtype(blend(image, output.reshape(image.shape), params.strength), image)
            difference = image.astype(np.float32) - denoised if params.show_difference else None
            return {"denoised": denoised, "difference": difference}

        return job

    def _result_layers(self, result, source_layer, params):
        layers = [
            output_layer_data(
                result["denoised"], source_layer, "denoised", "image",
                colormap=source_layer.colormap.name,
                contrast_limits=tuple(source_layer.contrast_limits),
            )
        ]
        if result.get("difference") is not None:
            limit = float(np.abs(result["difference"]).max()) or 1.0
            layers.append(
                output_layer_data(
                    result["difference"], source_layer, "difference", "image",
                    modality=UNKNOWN_MODALITY,  # a change of intensity: saved, it must not reopen as a CT
                    colormap="gray", contrast_limits=(-limit, limit), visible=False,
                )
            )
        return layers
