"""Denoising dock widget: a denoised copy of an image (and optionally what was removed).

The built-in denoisers are 2D (slice-wise), so besides a volume it takes a single slice: an
Image layer (y, x) or (1, y, x).  Such a slice needs a 2D model; a 3D one (a user's bundle) gets
a message and nothing changes.  Every other task widget needs a 3D volume."""

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


def _denoise_core(volume, spacing, params, slice_of: str | None = None):
    """``infer(progress, cancel)`` running ``denoise()``; ``slice_of``: the name of a single-slice
    layer, for which a model given as a path is loaded here and must be 2D."""

    def infer(progress, cancel):
        from ..denoising import denoise

        model = params.model
        if slice_of is not None and getattr(model, "spatial_dims", None) is None:  # a file or bundle
            from ..models import load_model

            model = load_model(model)
            _check_slice_model(model.card, slice_of)
            cancel.raise_if_cancelled()
        # denoise() blends and rounds once, as `medai denoise --strength` does: blending its
        # already rounded output again would move an integer CT by a unit here and there
        return denoise(np.asarray(volume), spacing, model=model, strength=params.strength,
                       settings=params.inference_settings(), progress=progress, cancel=cancel)

    return infer


def is_single_slice(layer) -> bool:
    """Whether ``layer`` is a grey-level Image layer holding one 2D slice: (y, x) or (1, y, x)."""
    from ._layers import _is_image

    if layer is None or not _is_image(layer) or layer.rgb:
        return False
    data = layer.data[0] if layer.multiscale else layer.data
    return data.ndim == 2 or (data.ndim == 3 and data.shape[0] == 1)


def slice_source(layer) -> tuple:
    """(data, spacing) of a single-slice Image layer (:func:`is_single_slice`), after the cheap
    checks; ``spacing`` has a value per data axis (mm), as ``denoise()`` takes it."""
    from ..errors import InputError
    from ..io.validate import check_spacing
    from ._layers import layer_spacing

    data = layer.data[0] if layer.multiscale else layer.data  # level 0 = full resolution
    spacing = layer_spacing(layer)  # a units problem names the layer itself
    try:
        spacing = check_spacing(spacing, ndim=data.ndim)
    except InputError as exc:
        raise InputError(f"'{layer.name}': {exc}") from None
    return data, spacing


def _check_slice_content(volume, name: str) -> None:
    """The voxel checks of a slice (empty, constant, NaN, ...), in the worker, naming the layer."""
    from ..io.validate import check_volume

    data = np.asarray(volume)
    check_volume(data.reshape(data.shape[-2:]), need_3d=False, what=f"image '{name}'")


def _check_slice_model(card, name: str) -> None:
    from ..errors import InputError

    if card.spatial_dims != 2:
        raise InputError(f"'{name}' is a single 2D slice, and model '{card.name}' is {card.spatial_dims}D: "
                         "choose a 2D denoiser (ct-lowdose-denoising, mr-denoising) or open a 3D volume")


class DenoisingWidget(TaskWidget):
    task = "denoising"
    title = "Denoising"
    params_type = DenoisingParams
    offers_mirroring = False  # the denoisers run slice by slice outside run_model
    preload_modules = (*TaskWidget.preload_modules, "napari_medai.denoising")
    _slice_of: str | None = None  # the name of the single-slice layer a Run was started on

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
            metadata = getattr(layer, "metadata", {}) if layer is not None else {}
            modality = metadata.get("modality")
            params.model = get_card(default_model_name(modality))
            from ..denoising import guessed_mr_note

            guessed = guessed_mr_note(metadata, repr(getattr(layer, "name", "")), params.model.name)
            if guessed:  # e.g. a CT without its HU rescale, read as MR
                from napari.utils.notifications import show_warning

                show_warning(f"{self.title}: {guessed} (the model box)")
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

    def _image_source(self, layer) -> tuple:
        """A volume as in every task widget, or a single slice (y, x) or (1, y, x): the denoisers
        are 2D.  ``_slice_of`` keeps the slice's name for this Run's job (set on the Qt thread,
        before the job is made)."""
        self._slice_of = layer.name if is_single_slice(layer) else None
        return slice_source(layer) if self._slice_of else super()._image_source(layer)

    def _check_content(self, volume, spacing, name: str) -> None:
        if self._slice_of is not None:  # this Run's layer is a single slice: checked as a slice
            _check_slice_content(volume, name)
        else:
            super()._check_content(volume, spacing, name)

    def _make_job(self, volume, spacing, params):
        """A single slice (``_image_source`` named it) is denoised by a 2D model only: a card's
        dimensions are checked here, a file's or bundle's once loaded."""
        from ..errors import InputError

        slice_of = self._slice_of

        if params.strength == 0.0:  # the network would run for an identical copy of the input
            raise InputError("strength 0 keeps the image as it is: choose a strength above 0 to denoise")
        if slice_of is not None and getattr(params.model, "spatial_dims", None) is not None:
            _check_slice_model(params.model, slice_of)
        # Built-in denoisers (2D/2.5D, slice-wise) run through napari_medai.denoising.denoise, and so
        # does a slice; a volume with a card of another task (none is listed today) would go through
        # the generic engine.
        builtin = getattr(params.model, "task", None) == "denoising" or slice_of is not None
        infer = (_denoise_core(volume, spacing, params, slice_of) if builtin
                 else super()._make_job(volume, spacing, params))

        def job(progress, cancel):
            from ..denoising import as_input_dtype

            output = np.asarray(infer(progress, cancel))
            cancel.raise_if_cancelled()
            image = np.asarray(volume)
            if builtin:  # already blended, in the input's dtype
                denoised = output.reshape(image.shape)
            else:  # in the input's dtype, as denoise() and `medai denoise` give it (int16 CT stays int16)
                denoised = as_input_dtype(blend(image, output.reshape(image.shape), params.strength), image)
            # float32 whatever the input: float32 minus an int32 image was float64, twice the memory
            difference = np.subtract(image, denoised, dtype=np.float32) if params.show_difference else None
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
