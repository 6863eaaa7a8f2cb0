"""The layout and Run logic the three dock widgets share.

A task widget subclasses :class:`TaskWidget` and provides

* ``task`` / ``title`` / ``params_type`` (a dataclass deriving from :class:`TaskParams`),
* ``_build_params(form)`` and ``params()`` for its own controls,
* ``_result_layers(result, source_layer, params)``: layer-data tuples for the outputs
  (Qt thread; see ``_layers.output_layer_data``),
* optionally ``_make_job(volume, spacing, params)``: the Qt-free core call.  It is called on
  the Qt thread and returns ``job(progress, cancel) -> result``, which runs in a worker
  thread; the default loads ``params.model`` and calls ``inference.run_model``.

Run: the image layer's geometry is checked on the Qt thread (fast); the voxel checks
(constant, NaN), the model choice and the modality the layer's file stated (as ``medai
segment``/``detect``/``screen`` check the file's header) are checked first thing in the worker; any
InputError/ModelError becomes a notification and no layer changes; so does a result whose
input layer was removed or given other data meanwhile.  A lazy (dask, zarr) layer is read from
its store once per Run (:class:`ReadOnce`).  ``job_finished(str)`` says how each Run ended:
"done", "cancelled" or "error".
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, QPersistentModelIndex, QSignalBlocker, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import InputError, MedaiError, ModelError
from ._job import ERROR, JobRunner
from ._layers import add_layers, check_content, image_source, layer_world_mm
from ._picker import ImageLayerPicker
from ._threads import default_job_threads, torch_threads

# The modules a Run's job imports first: torch and MONAI, through the plugin's inference and model
# modules.  Their C extensions hold the GIL while they initialise, so imported by the first Run's
# worker they froze the viewer 0.6-2.6 s about a second after the click (the Qt thread cannot run
# without the GIL); imported on the Qt thread when the dock opens they froze it for the whole import
# (3.6 s on 2 shared cores).  A background thread started once the dock is shown imports them
# instead (:func:`preload`): its longest hold of the GIL (loading libtorch) was 0.46-0.51 s, right
# after the dock opened, and a Run's job waits for it (:func:`wait_for_preload`) rather than import
# beside it (docs/widgets.md).
# models.networks imports MONAI's networks only when a card names one: named here, or the first
# Run imported all of MONAI (1,400 modules) in its job, where Cancel waited for it (an audit helper)
PRELOAD = ("napari_medai.inference.engine", "napari_medai.models.loading", "napari_medai.models.networks",
           "napari_medai.models.bundle", "napari_medai.models.torchscript", "napari_medai.api",
           "monai.networks.nets")

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
MIRRORING = ("auto", "off", "mirror-lesions", "mirror")  # inference.engine.TTA_MODES
LOAD_FILE = "Load model file…"
LOAD_BUNDLE = "Load MONAI bundle folder…"


@dataclass
class TaskParams:
    """What every task needs besides the image: which model, where and how precisely."""

    model: Any = None  # a ModelCard from list_models(), or a path to a file / bundle folder
    device: str = "auto"
    precision: str = "auto"
    tta: str = "auto"  # test-time mirroring (inference.engine.TTA_MODES)

    def inference_settings(self):
        from ..inference.engine import InferenceSettings

        return InferenceSettings(device=self.device, precision=self.precision, tta=self.tta)


def task_models(task: str) -> list[tuple[Any, bool]]:
    """(card, weights present?) for each built-in model of ``task``: installed ones first, and a
    model before its variants (cards with ``extra.variant_of``), so that a picker's default
    selection is the model the docs call the default."""
    try:
        from ..models import list_models
    except ImportError:  # registry not there (partial install): no built-in models
        return []
    models = [(card, _weights_present(card)) for card in list_models(task)]
    return sorted(models, key=lambda item: (not item[1], bool(getattr(item[0], "extra", {}).get("variant_of"))))


def _weights_present(card) -> bool:
    path = card.weights_path() if hasattr(card, "weights_path") else None
    return path is not None and path.is_file()


def current_card(model):
    """A built-in card as its file says now: the list holds the card read when it was filled, and
    a model re-installed under that name since (``medai train ... --install-as NAME --replace``)
    has new weights, which the old card's sha256 called corrupted.  Anything else as it is."""
    from pathlib import Path

    from ..models.card import ModelCard, load_card

    if not isinstance(model, ModelCard) or model.source_dir is None:
        return model
    path = Path(model.source_dir) / f"{model.name}.json"
    try:
        return load_card(path) if path.is_file() else model
    except MedaiError:  # a card broken meanwhile: the old one, whose weights check says what is wrong
        return model


_preloads: list[threading.Thread] = []  # started by preload(), in order
_preload_requested: set[str] = set()
# Held while a thread imports what the docks preload.  A Run clicked before the dock's preload
# started (it starts from a timer once the dock is shown) imported MONAI in its job while the
# preload thread then imported it too: each met the other's modules half made ("cannot import
# name 'Compose' from partially initialized module 'monai.transforms'"), and the Run failed.
_IMPORTING = threading.Lock()


def preload(modules) -> None:
    """Import ``modules`` in a background thread (once per process); call it on the Qt thread.

    One thread at a time imports (a later one waits for the earlier ones): two threads importing
    the same package tree at once can deadlock on its import locks.  A module that fails to
    import is left to the job, whose own import reports the error."""
    todo = [name for name in modules if name not in _preload_requested and name not in sys.modules]
    if not todo:
        return
    _preload_requested.update(todo)
    earlier = list(_preloads)

    def load():
        import importlib

        for thread in earlier:
            thread.join()
        with _IMPORTING:
            for name in todo:
                try:
                    importlib.import_module(name)
                except Exception:  # noqa: BLE001 - reported by the job that needs it
                    pass

    thread = threading.Thread(target=load, name="napari-medai preload", daemon=True)
    _preloads.append(thread)
    thread.start()


def wait_for_preload(progress=None, modules=()) -> None:
    """In a job: wait until the background imports are done (saying so when it must wait), then
    import ``modules`` (the dock's ``preload_modules``) under the same lock, in case the dock's
    preload has not started yet: one thread at a time imports them."""
    import importlib

    running = [thread for thread in list(_preloads) if thread.is_alive()]
    if (running or any(name not in sys.modules for name in modules)) and progress is not None:
        progress(0, 1, "loading PyTorch and MONAI")
    for thread in running:
        thread.join()
    with _IMPORTING:
        for name in modules:
            if name not in sys.modules:
                importlib.import_module(name)


class TaskWidget(QWidget):
    task = ""  # "segmentation": used for list_models() and in messages
    title = ""  # "Segmentation": names the job in the status line and notifications
    params_type = TaskParams
    accepts_model_files = False  # offer "Load model file…" / "Load MONAI bundle folder…"
    offers_mirroring = True  # the test-time mirroring choice (its models run through run_model)
    job_threads: int | None = None  # torch CPU threads for a job; None: all cores but one
    preload_modules: tuple[str, ...] = PRELOAD  # imported in the background when the dock is built

    job_finished = Signal(str)

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.layer_picker = ImageLayerPicker(napari_viewer)
        self.model_box = QComboBox()
        # the model chosen before a pick of "Load model file…" / "…bundle folder…": a cancelled
        # dialog returns to it (a persistent index follows it when add_model_path inserts rows)
        self._chosen_model = QPersistentModelIndex()
        self.model_box.currentIndexChanged.connect(self._remember_model)
        self.model_box.activated.connect(self._on_model_activated)
        self.device_box = _combo(DEVICES, "Where the model runs; auto = CUDA when present, else CPU")
        self.precision_box = _combo(
            PRECISIONS, "auto = mixed precision on CUDA, bf16 on CPUs that support it, else fp32"
        )
        self.tta_box = _combo(
            MIRRORING, "Average the model's output over the image and its mirror images along each axis: "
            "steadier results, 4 times the time (3 for 2D models); mirror-lesions mirrors only where the "
            "plain run sees a possible lesion (lesion models; about twice the time on a chest CT); "
            "auto = as the model card says"
        )
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.progress_bar = QProgressBar()
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.layer_picker)
        form.addRow("Model", self.model_box)
        form.addRow("Device", self.device_box)
        form.addRow("Precision", self.precision_box)
        if self.offers_mirroring:
            form.addRow("Test-time mirroring", self.tta_box)
        else:
            self.tta_box.hide()
        self._build_params(form)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

        self.runner = JobRunner(
            self.run_button, self.cancel_button, self.progress_bar, self.status_label, parent=self
        )
        self.runner.finished.connect(self.job_finished)
        self.run_button.clicked.connect(self.run)
        self.refresh_models()
        # once napari has shown the dock: a thread importing beside the dock's own set-up slowed it
        QTimer.singleShot(0, lambda modules=self.preload_modules: preload(modules))

    # ---- closing the dock --------------------------------------------------------------------
    def event(self, event) -> bool:
        # napari 0.9 closes a dock (its close button, Window.remove_dock_widget) with
        # widget().setParent(None) and never deletes the widget, so `destroyed` does not come:
        # losing the parent is the moment the widget is closed.
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is None:
                self._on_closed()
            else:  # docked (again)
                self._on_docked()
        return super().event(event)

    def _on_closed(self) -> None:
        """Stop what the widget does in the viewer: the running job and the viewer events."""
        self.runner.cancel()  # its result would be added by a widget nobody sees
        self.layer_picker.detach()

    def _on_docked(self) -> None:
        self.layer_picker.attach()

    # ---- for subclasses --------------------------------------------------------------------
    def _add_result_widgets(self, *widgets) -> None:
        """Place task-specific result widgets (tables, notes) above the dock's final stretch."""
        layout = self.layout()
        stretch = layout.count() - 1
        for offset, widget in enumerate(widgets):
            layout.insertWidget(stretch + offset, widget)

    def _save_with_dialog(self, caption: str, default_name: str, file_filter: str, write, failure: str,
                          written=None) -> None:
        """Ask for a file name, then ``write(path)``; a refusal or a disk error becomes an
        error notification ("<title>: <failure>: <reason>") instead of a traceback.  ``written(path)``:
        the files ``write`` will write for the name given (an extension added or swapped); one that
        is not the name typed and exists is replaced only when the reader says so, since the dialog
        asked only about the name typed ("exam" replaced an existing exam.md without a question)."""
        from napari.utils.notifications import show_error

        path, _ = QFileDialog.getSaveFileName(self, caption, default_name, file_filter)
        if not path:
            return
        for other in (written(path) if written is not None else ()):
            if Path(other) != Path(path) and Path(other).exists():
                answer = QMessageBox.question(self, caption, f"{Path(other).name} already exists. Do you want to "
                                              "replace it?", QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
                if answer != QMessageBox.Yes:
                    return
        try:
            write(path)
        except (InputError, OSError) as exc:
            show_error(f"{self.title}: {failure}: {exc}")

    def _build_params(self, form: QFormLayout) -> None:
        """Add the task's own controls to ``form``."""

    def _task_values(self) -> dict:
        """The task's own parameter values, read from its controls."""
        return {}

    def _make_job(self, volume, spacing, params):
        """The core call, as ``job(progress, cancel) -> result`` (runs in a worker thread).

        ``volume`` is the layer's numpy array, or for a lazy layer a :class:`ReadOnce` of it
        (convert it with ``np.asarray`` inside the job, never here on the Qt thread).
        """

        def job(progress, cancel):
            from ..inference.engine import run_model
            from ..models import load_model

            model = load_model(params.model)
            cancel.raise_if_cancelled()
            return run_model(model, np.asarray(volume), spacing, params.inference_settings(), progress=progress,
                             cancel=cancel)

        return job

    def _result_layers(self, result, source_layer, params) -> list[tuple]:
        raise NotImplementedError

    # ---- public ------------------------------------------------------------------------
    def params(self):
        """Current settings as ``params_type`` (a plain dataclass: no Qt in it)."""
        return self.params_type(
            model=current_card(self.model_box.currentData()),
            device=self.device_box.currentText(),
            precision=self.precision_box.currentText(),
            tta=self.tta_box.currentText(),
            **self._task_values(),
        )

    def refresh_models(self) -> None:
        """Fill the model list from the registry; say so plainly when none is installed.

        Cards whose weights are missing stay listed as "(not installed)" so users see what
        will come; with none installed a placeholder comes first and Run explains.
        """
        self.model_box.clear()
        models = task_models(self.task)  # installed first, a model before its variants
        if not any(installed for _, installed in models):
            self.model_box.addItem(f"(no {self.task} model installed)", None)
            self.status_label.setText(self._no_model_message())
        else:
            self.status_label.setText("Ready")
        for card, installed in models:
            label = card.name if installed else f"{card.name} (not installed)"
            self.model_box.addItem(label, card)
            self.model_box.setItemData(self.model_box.count() - 1, card.description, Qt.ToolTipRole)
        if self.accepts_model_files:
            self.model_box.addItem(LOAD_FILE, LOAD_FILE)
            self.model_box.addItem(LOAD_BUNDLE, LOAD_BUNDLE)

    def add_model_path(self, path: str) -> None:
        """Offer a TorchScript file or MONAI bundle folder in the model list and select it.

        A bundle folder gets the trust warning as a napari notification: its configs are
        Python expressions that run when the model is loaded.
        """
        from pathlib import Path

        if Path(path).is_dir():
            from napari.utils.notifications import show_warning

            show_warning(
                f"{self.title}: a MONAI bundle's configs can run Python code: load bundles only "
                f"from sources you trust ({Path(path).name})."
            )
        self.model_box.insertItem(0, str(path), str(path))
        self.model_box.setCurrentIndex(0)
        self.status_label.setText(f"Model: {path}")

    def run(self) -> None:
        """Run button: check the layer, then check the voxels, the model and run, in a worker."""
        if self.runner.is_running:
            return
        layer = self.layer_picker.current_layer()
        try:
            if layer is None:
                layer = self._explain_missing_image()
            data, spacing = self._image_source(layer)  # geometry only: fast
            started_on = input_state(layer)
            stated = (getattr(layer, "metadata", None) or {}).get("modality")  # the reader's, from the file
            volume = data if isinstance(data, np.ndarray) else ReadOnce(data)
            params = self.params()
            core = self._make_job(volume, spacing, params)
            threads = self.job_threads or default_job_threads()
        except MedaiError as exc:
            self._report(exc)
            return

        def job(progress, cancel):
            # In the worker: the voxel scan is slow on a big CT, and an image problem is
            # reported before a model problem whichever the order they were found in.
            try:
                # first: every import the job makes (the model check loads MONAI's networks) waits for
                # the background one, since two threads importing MONAI at once can meet its modules
                # half made ("cannot import name 'Compose' from partially initialized module")
                wait_for_preload(progress, self.preload_modules)
                self._check_content(volume, spacing, layer.name)
                self._check_model(params.model)
                check_stated_modality(stated, volume, self._stated_models(params), layer.name)
                with torch_threads(threads):
                    return core(progress, cancel)
            finally:
                if isinstance(volume, ReadOnce):
                    volume.release()  # the finished job must not keep a copy of the scan alive

        def on_success(result):
            self._check_unchanged(layer, started_on, f"{self.title.lower()} ran")
            return self._add_results(result, layer, params)

        self.runner.start(job, on_success, name=self.title)

    def _image_source(self, layer) -> tuple:
        """(data, spacing) of the chosen layer after the cheap checks, on the Qt thread: a 3D
        grayscale Image layer here (a widget that takes other input overrides it)."""
        return image_source(layer)

    def _stated_models(self, params) -> list:
        """The chosen models, each checked against the modality the layer's file states."""
        return [params.model]

    def _check_content(self, volume, spacing, name: str) -> None:
        """The voxel checks (empty, constant, NaN, ...), in the worker."""
        check_content(volume, spacing, name)

    def _add_results(self, result, source_layer, params) -> list:
        """Add the outputs as NEW layers on the input's grid (Qt thread); ``run`` has checked
        that the input is still there, unchanged."""
        layer_data = self._result_layers(result, source_layer, params)
        return add_layers(self.viewer, layer_data)  # every picker on the viewer keeps its layer

    # ---- helpers ------------------------------------------------------------------------
    def _check_still_there(self, layer, during: str) -> None:
        """Outputs named after, and placed on, a layer the user removed meanwhile would be
        orphans: refuse them (the runner reports the InputError; no widget state changes)."""
        if layer not in self.viewer.layers:
            raise InputError(f"'{layer.name}' was removed while {during}; nothing was added")

    def _check_unchanged(self, layer, started_on: tuple, during: str) -> None:
        """Refuse a result computed from data the layer no longer shows (``started_on``:
        :func:`input_state` when the job started): labels of the old scan on the new one would
        be wrong, and on another grid they would not fit."""
        self._check_still_there(layer, during)
        if not same_state(input_state(layer), started_on):
            raise InputError(f"'{layer.name}' changed while {during}; nothing was added")

    def _no_model_message(self) -> str:
        text = f"No {self.task} model is installed yet."
        if self.accepts_model_files:
            text += f" Choose '{LOAD_FILE}' or '{LOAD_BUNDLE}' to use your own."
        return text

    def _check_model(self, model) -> None:
        if model is None:
            raise ModelError(self._no_model_message())
        if model in (LOAD_FILE, LOAD_BUNDLE):
            raise ModelError(f"choose a model first ('{model}' opens a file dialog)")

    def _explain_missing_image(self):
        """No Image layer to pick: the active layer (if any) makes the clearest message."""
        active = self.viewer.layers.selection.active
        if active is None:
            raise InputError("open a CT or MR volume first: the viewer has no image layer")
        return active  # image_source() says "select an image layer: 'x' is a Labels layer"

    def _report(self, exc: MedaiError) -> None:
        """A problem found before the job started: reported like the runner's errors."""
        from napari.utils.notifications import show_error

        self.status_label.setText(str(exc))
        show_error(f"{self.title}: {exc}")
        self.runner.last_status, self.runner.last_error = ERROR, exc
        self.job_finished.emit(ERROR)

    def _on_model_activated(self, index: int) -> None:
        choice = self.model_box.itemData(index)
        if choice == LOAD_FILE:
            path, _ = QFileDialog.getOpenFileName(
                self, "Model file", "",
                "TorchScript or model card (*.pt *.pth *.ts *.json);;All files (*)",
            )
        elif choice == LOAD_BUNDLE:  # add_model_path warns that bundles run code
            path = QFileDialog.getExistingDirectory(self, "MONAI bundle folder")
        else:
            return
        if path:
            self.add_model_path(path)
        else:
            self._restore_chosen_model()

    def _remember_model(self, index: int) -> None:
        if not is_load_entry(self.model_box.itemData(index)):
            self._chosen_model = QPersistentModelIndex(self.model_box.model().index(index, 0))

    def _restore_chosen_model(self) -> None:
        """Back to the model chosen before the cancelled dialog, with the box's signals blocked:
        its handlers (the detection threshold, the segmentation minimum size) ignored the pick of
        the load entry, so the selection and every parameter stay exactly as they were.  Returning
        to index 0 instead picked another model when a loaded file sat there, and re-applying a
        model's defaults undid the values the user had set."""
        row = self._chosen_model.row() if self._chosen_model.isValid() else 0
        with QSignalBlocker(self.model_box):
            self.model_box.setCurrentIndex(max(row, 0))


def check_stated_modality(stated, volume, models, name: str) -> None:
    """Refuse a CT model on a layer whose file said MR, or the reverse (``stated``: the
    ``modality`` the plugin's reader put in the layer's metadata, from the DICOM Modality or the
    NIfTI description), with the CLI's message (``inference.modality.check_file_modality``: the
    values speak first).  A model whose card cannot be read here (a bundle, a bare TorchScript
    file) is left to the run's own checks."""
    from ..inference.modality import check_stated_modality as check

    # a generator: each card is read only once the models before it have passed, as before
    check(stated, (card_of(model) for model in models), volume, f"'{name}'", said_by="the file it was opened from")


def card_of(model):
    """The card of a model choice without loading it: a card from the list, a card .json, or a
    .pt beside its card; None for anything else or a card that cannot be read (Run reports it)."""
    from ..models.card import card_for_path  # no torch import

    if hasattr(model, "extra"):  # a card
        return model
    if isinstance(model, str):
        try:
            return card_for_path(model)
        except MedaiError:
            return None
    return None


def is_load_entry(choice) -> bool:
    """Whether a model list entry is "Load model file…" / "Load MONAI bundle folder…", which opens
    a dialog rather than choosing a model (``==`` on a str only: a card compares unequal)."""
    return isinstance(choice, str) and choice in (LOAD_FILE, LOAD_BUNDLE)


def input_state(layer) -> tuple:
    """What a job's result depends on besides the voxel values: the layer's array (by identity,
    as ``layer.data = other`` replaces it), its shape and its data-to-world transform in mm.
    An edit in place of the same array is not seen."""
    data = layer.data[0] if layer.multiscale else layer.data
    try:
        world = layer_world_mm(layer)
    except InputError:  # units made unreadable meanwhile: not the grid the job ran on
        world = None
    return data, tuple(data.shape), world


def same_state(now: tuple, before: tuple) -> bool:
    """Whether two :func:`input_state` tuples describe the same array on the same grid."""
    (data, shape, world), (data0, shape0, world0) = now, before
    return (data is data0 and shape == shape0 and world is not None and world0 is not None
            and np.allclose(world, world0))


class ReadOnce:
    """Stands in for a lazy (dask, zarr) volume in a job, so that it is read from its store once.

    Each ``np.asarray`` of a dask or zarr array reads every chunk again: the voxel check and the
    task's job each convert the volume, and a Denoising run with its difference layer read it
    four times.  The first conversion (in the worker) reads; the others get that array.  Jobs
    must treat it as read-only, as they do the layer's own numpy array.
    """

    def __init__(self, source):
        self._source = source
        self._array = None
        self.shape, self.ndim, self.dtype = tuple(source.shape), len(source.shape), np.dtype(source.dtype)

    def __array__(self, dtype=None, copy=None):
        if self._array is None:
            self._array = np.asarray(self._source)
        array = self._array if dtype is None else self._array.astype(dtype, copy=False)
        return array.copy() if copy else array

    def release(self) -> None:
        self._array = None


def with_extension(path, extension: str):
    """``path`` ending in ``extension`` (".md"): appended unless the name already ends with it
    (any case).  Not ``Path.with_suffix``, which turns "CHEST 1.25mm report" into "CHEST 1.md"."""
    from pathlib import Path

    path = Path(path)
    return path if path.name.lower().endswith(extension.lower()) else path.with_name(path.name + extension)


def _combo(items, tooltip: str) -> QComboBox:
    box = QComboBox()
    box.addItems(list(items))
    box.setToolTip(tooltip)
    return box
