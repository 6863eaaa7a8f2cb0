"""Lesion detection dock widget: a thin Qt front end to :func:`napari_medai.api.detect`.

The job (worker thread) calls ``api.detect`` (segmentation-based models and RetinaNet-style
box detectors alike) and builds the per-finding mask.  On the Qt thread the findings become

* ``"<image> findings"``: a Points layer of rings at the finding centres (voxel coordinates
  with the image's geometry), sized by the long-axis diameter, coloured by score, with every
  finding field as a feature (hover shows score, size, volume, Lung-RADS);
* ``"<image> finding masks"``: a Labels layer where finding ``k`` (rank ``k``) is label ``k``;
* the findings table in the dock: clicking a row (or moving to it with the arrow keys) centres
  the view on that finding and moves to its slice; "Export CSV…" writes the table with every field;
* "Add to labels" copies the chosen finding's mask into a Labels layer on the same grid (a
  segmentation to correct, or an annotation in progress) as one undoable edit;
* the reader's review: *Accept* / *Reject* (keys A and R in the table) mark the chosen finding
  (``napari_medai.review``); a rejected finding's ring and mask are hidden, the table's *Reader* column,
  the Points feature ``review`` and the exported CSV carry the state;
* *Add missed nodule*, then a click on a nodule the detector did not report: it is measured
  from that point on the image alone (``postprocess.seeded.nodule_at``, in a job) and added
  after the detector's findings, accepted, marked as the reader's.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QDoubleSpinBox, QHBoxLayout, QLabel, QPushButton, QSpinBox, QWidget

from ..errors import InputError
from ..postprocess.findings import LUNG_RADS_NOTE, axial_slice
from ..review import ACCEPTED, NOT_REVIEWED, REJECTED, checked_review, is_reviewed, review_counts
from ._base import TaskParams, TaskWidget, input_state, is_load_entry, same_state, with_extension
from ._layers import edit_labels, image_source, layer_spacing, layer_world_mm, output_layer_data
from ._picker import FINDING_MASKS, LabelsLayerPicker
from ._tables import FindingsTable

SCORE_COLORMAP = "plasma"  # low scores dark purple, high scores yellow
MIN_POINT_SIZE = 3.0  # data pixels: tiny findings stay visible
RING_WIDTH = 0.15  # marker ring thickness, as a fraction of its diameter
THRESHOLD_TIP = "Confidence score a finding must reach to be listed"
LABEL_MAX = 65535  # the label value box's upper limit
CLICK_PX = 4.0  # a press and release this close together (canvas pixels) is a click, not a drag


@dataclass
class DetectionParams(TaskParams):
    score_threshold: float = 0.5  # confidence a finding must reach
    max_findings: int = 10  # the highest-scoring findings kept


def world_affine(layer) -> np.ndarray:
    """4x4 voxel -> world matrix of a 3D layer, from its public ``data_to_world``."""
    origin = np.asarray(layer.data_to_world([0.0, 0.0, 0.0]), dtype=float)
    affine = np.eye(4)
    affine[:3, 3] = origin
    for axis in range(3):
        unit = np.zeros(3)
        unit[axis] = 1.0
        affine[:3, axis] = np.asarray(layer.data_to_world(unit), dtype=float) - origin
    return affine


def view_of_voxel(matrix, voxel, dims, units=None,
                  on_steps: bool = False) -> tuple[dict[int, float], tuple[float, ...]]:
    """Where the viewer must stand for napari to show data point ``voxel`` of a 3D layer whose
    voxel -> world matrix (4x4, in the layer's own units) is ``matrix``: {world axis: dims
    point} for the axes napari slices (to draw the slice ``voxel`` rounds to, halves up), and the
    camera centre (the displayed axes).

    napari slices a layer through the not-displayed block of its world -> data transform alone
    (``world_to_data.set_slice(not_displayed)``) and draws the slice through the displayed block
    of its data -> world transform.  On a tilted layer, whose transform mixes sliced and
    displayed axes, the world position of ``voxel`` lies on another slice (10 degrees of tilt
    moved a finding 7 slices away) and elsewhere on the screen: both are solved here from those
    same blocks.  ``on_steps``: only the slider's steps (``dims.range``), where napari's slider
    may move the point (on a tilted layer they are not the image's slices): of the steps next to
    the solution, the one where napari draws that slice (the data point rounded), with ``voxel``
    itself within the half slice a Points layer shows its markers in when it can.  ``units``: the
    layer's (napari converts between them and the viewer's so).
    """
    voxel = np.asarray(voxel, dtype=float)
    first, factor, linear, shift, inverse, sliced, shown = _view_blocks(matrix, len(voxel), dims, units)
    point = {}
    if sliced:
        block, offset = inverse[np.ix_(sliced, sliced)], (inverse @ shift)[sliced]
        wanted = np.floor(voxel[sliced] + 0.5)  # the slices to draw

        def drawn(world):  # napari's data point on the sliced axes for viewer coordinates ``world``
            return block @ (np.asarray(world) / factor[sliced]) - offset

        if np.linalg.cond(block) < 1e8:
            world = np.linalg.solve(block, wanted + offset) * factor[sliced]
            for i, axis in enumerate(sliced if on_steps else ()):
                world[i] = _best_step(world, i, dims.range[axis + first], drawn, wanted[i], voxel[sliced][i])
        else:  # these axes do not slice the volume (a layer turned on its side): its world position
            world = (linear @ voxel + shift)[sliced] * factor[sliced]
        point = {axis + first: float(w) for axis, w in zip(sliced, world)}
    centre = linear[np.ix_(shown, shown)] @ voxel[shown] + shift[shown]
    return point, tuple(float(c * factor[axis]) for axis, c in zip(shown, centre))


def _best_step(world, i: int, steps, drawn, wanted: float, exact: float) -> float:
    """Of the slider's steps next to ``world[i]``, the one where napari draws slice ``wanted`` on
    axis ``i``, with ``exact`` (a marker there) drawn too if it can be, else the nearest."""
    start, stop, step = (float(v) for v in steps)
    if not step > 0 or stop <= start:
        return float(world[i])
    last = int(round((stop - start) / step))
    near = min(max(int(round((world[i] - start) / step)), 0), last)  # napari keeps the point in range
    best, best_key = float(world[i]), None
    for k in range(max(near - 1, 0), min(near + 1, last) + 1):
        candidate = np.array(world, dtype=float)
        candidate[i] = start + k * step
        data = float(drawn(candidate)[i])
        key = (np.round(data) != wanted, abs(data - exact) > 0.5, abs(data - wanted))
        if best_key is None or key < best_key:
            best, best_key = float(candidate[i]), key
    return best


def _view_blocks(matrix, ndim: int, dims, units):
    """What ``view_of_voxel`` and ``voxel_of_view`` read of a layer's voxel -> world ``matrix``:
    the viewer axis of its first axis (its axes are the viewer's last ones), the layer's world
    units in the viewer's, the linear part, its shift and inverse, and which of its axes napari
    slices and which it displays."""
    matrix = np.asarray(matrix, dtype=float)
    first = dims.ndim - ndim
    linear, shift = matrix[:ndim, :ndim], matrix[:ndim, ndim]
    sliced = [axis - first for axis in dims.not_displayed if axis >= first]
    shown = [axis - first for axis in dims.displayed if axis >= first]
    return first, _units_factor(units, dims, ndim), linear, shift, np.linalg.inv(linear), sliced, shown


def voxel_of_view(matrix, world, dims, units=None) -> np.ndarray:
    """The data point (z, y, x) of a 3D layer that napari shows at the viewer's world point
    ``world`` (a click on the canvas): ``view_of_voxel`` the other way.  On the sliced axes, the
    slice napari draws at the viewer's point (the not-displayed block of the world -> data
    transform); on the displayed axes, the pixel of that slice drawn under ``world`` (the
    displayed block of the data -> world transform).  The full world -> data transform put a
    click on a tilted layer several slices away from the nodule drawn under it."""
    ndim = np.shape(matrix)[0] - 1
    world = np.asarray(world, dtype=float)[-ndim:]
    _, factor, linear, shift, inverse, sliced, shown = _view_blocks(matrix, ndim, dims, units)
    voxel = inverse @ (world / factor - shift)  # where no block applies: the plain transform
    if sliced and np.linalg.cond(inverse[np.ix_(sliced, sliced)]) < 1e8:
        voxel[sliced] = inverse[np.ix_(sliced, sliced)] @ (world[sliced] / factor[sliced]) - (inverse @ shift)[sliced]
    if shown:
        voxel[shown] = np.linalg.solve(linear[np.ix_(shown, shown)], world[shown] / factor[shown] - shift[shown])
    return voxel


def _units_factor(units, dims, ndim: int) -> np.ndarray:
    """Per axis, one unit of the layer's world in the viewer's (1 where either has no units)."""
    world = getattr(dims, "units", None)
    if units is None or world is None or len(world) < ndim or len(units) != ndim:
        return np.ones(ndim)
    try:
        import pint

        registry = pint.get_application_registry()
        return np.array([registry.get_base_units(own)[0] / registry.get_base_units(viewer)[0]
                         for own, viewer in zip(units, tuple(world)[-ndim:])], dtype=float)
    except Exception:  # noqa: BLE001 - units napari itself could not convert: it does not scale either
        return np.ones(ndim)


def finding_features(findings: list) -> dict[str, list]:
    """Every field of each finding, as Points-layer features (one row per point)."""
    return {
        "rank": [f.label for f in findings],
        "score": [f.score for f in findings],
        "diameter_mm": [f.diameter_mm for f in findings],
        "short_axis_mm": [f.short_axis_mm for f in findings],
        "mean_diameter_mm": [f.mean_diameter_mm for f in findings],
        "volume_ml": [f.volume_ml for f in findings],
        "outline": [f.outline for f in findings],  # what the sizes were measured on (findings.OUTLINES)
        "lung_rads": [f.lung_rads for f in findings],
        "attenuation": [f.attenuation for f in findings],
        "solid_diameter_mm": [f.solid_diameter_mm for f in findings],
        "lung_rads_by_attenuation": [f.lung_rads_by_attenuation for f in findings],
        "slice": [axial_slice(f.center_voxel) for f in findings],
        # pandas columns hold scalars: one column per world axis, the box as "z0:z1, y0:y1, x0:x1"
        **{f"center_{axis}_mm": [f.center_mm[i] for f in findings] for i, axis in enumerate("zyx")},
        "bbox_voxel": [", ".join(f"{a}:{b}" for a, b in zip(*f.bbox_voxel)) for f in findings],
        "review": [NOT_REVIEWED] * len(findings),  # the reader's state (napari_medai.review)
        "added_by_reader": [f.added_by_reader for f in findings],
    }


class DetectionWidget(TaskWidget):
    task = "detection"
    title = "Lesion detection"
    params_type = DetectionParams
    accepts_model_files = True
    preload_modules = (*TaskWidget.preload_modules, "napari_medai.postprocess.attenuation",
                       "napari_medai.postprocess.body", "napari_medai.postprocess.refine")

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self.findings: list = []
        self.review: list[str] = []  # the reader's state per finding, in rank order
        self.findings_layer = None
        self.masks_layer = None  # the run's "finding masks" layer (none when nothing was found)
        self._masks_colormap = None  # its colours before any finding was hidden
        self._review_colormap = None  # the colours this widget last gave it (to notice the user's own)
        self._source_layer = None  # the image the findings came from: a reader's mark is measured on it
        self._classes = {}  # the last run's detector classes (index -> name, colour): New labels names them
        self._source_state = None  # its data and geometry when the findings were added (_RunState)
        self._findings_affine = np.eye(4)
        self._findings_units = None  # the findings layer's units at run time
        self._findings_shape: tuple = ()
        self._target_layer = None  # the Labels layer the value box was last set for
        self.note_label = QLabel(LUNG_RADS_NOTE + ".")
        self.note_label.setWordWrap(True)
        self.findings_table = FindingsTable()
        self.findings_table.setToolTip("Click a finding, or step through them with the arrow keys, to go to it")
        self.findings_table.cellClicked.connect(lambda row, _column: self.go_to_finding(row))
        # Arrow keys move the current row without a click: follow them too.
        self.findings_table.currentCellChanged.connect(self._on_current_cell_changed)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self._choose_csv_file)
        self._add_result_widgets(self.findings_table, self._build_review_row(), self._build_add_to_labels(),
                                 self.note_label)
        # a model with a fitted operating point sets the score threshold it was fitted for
        self.model_box.currentIndexChanged.connect(lambda _index: self._apply_operating_point())
        self._apply_operating_point()

    def _build_review_row(self) -> QWidget:
        """*Accept*, *Reject* (keys A and R while the table has the focus) and *Export CSV…*."""
        self.accept_button = QPushButton("Accept")
        self.accept_button.setToolTip("Mark the chosen finding as a nodule to report (key A in the table; "
                                      "again to undo)")
        self.reject_button = QPushButton("Reject")
        self.reject_button.setToolTip("Mark the chosen finding as not a nodule: its ring and mask are hidden and it no "
                                      "longer sets the report's category (key R in the table; again to undo)")
        row = QWidget()
        self.mark_button = QPushButton("Add missed nodule")
        self.mark_button.setCheckable(True)
        self.mark_button.setEnabled(False)
        self.mark_button.setToolTip("Then click, on the image, a nodule the detector did not list: it is measured "
                                    "from that point (no model) and added to the findings as the reader's")
        self.mark_button.toggled.connect(self._on_mark_toggled)
        # a deleted dock must not leave its click handler on the viewer (a closed one: _on_closed)
        callbacks, handler = self.viewer.mouse_drag_callbacks, self._mark_on_click
        self.destroyed.connect(lambda *_: handler in callbacks and callbacks.remove(handler))
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        for button, state in ((self.accept_button, ACCEPTED), (self.reject_button, REJECTED)):
            button.setEnabled(False)
            button.clicked.connect(lambda _checked=False, state=state: self._toggle_current_review(state))
            layout.addWidget(button)
        self.findings_table.review_key_pressed.connect(self._toggle_current_review)
        layout.addWidget(self.mark_button)
        layout.addWidget(self.export_button, 1)
        return row

    def _build_add_to_labels(self) -> QWidget:
        """Labels layer, label value and "Add to labels": the chosen finding's mask into a
        Labels layer, e.g. a nodule the segmentation missed, while correcting it for training."""
        self.target_picker = LabelsLayerPicker(self.viewer)
        self.label_value_box = QSpinBox()
        self.label_value_box.setRange(1, LABEL_MAX)
        self.label_value_box.setToolTip(LABEL_VALUE_TIP)
        self.add_to_labels_button = QPushButton("Add to labels")
        self.add_to_labels_button.setToolTip("Write the finding selected in the table into the Labels layer; "
                                             "Ctrl+Z on that layer undoes it")
        self.add_to_labels_button.setEnabled(False)
        self.add_to_labels_button.clicked.connect(self._add_current_finding_to_labels)
        # Layers > New Labels Layer sizes its layer to the active layer (after a run, the findings
        # Points): this one lies on the image's grid, so the findings fit it.
        self.new_labels_button = QPushButton("New labels")
        self.new_labels_button.setToolTip("Add an empty Labels layer on the grid of the image the findings came "
                                          "from, and add findings to it")
        self.new_labels_button.setEnabled(False)
        self.new_labels_button.clicked.connect(self._new_labels_clicked)
        self.target_picker.currentIndexChanged.connect(self._on_target_changed)
        self._on_target_changed()
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.target_picker, 1)
        layout.addWidget(self.new_labels_button)
        layout.addWidget(self.label_value_box)
        layout.addWidget(self.add_to_labels_button)
        return row

    def _on_closed(self) -> None:
        super()._on_closed()
        self.mark_button.setChecked(False)  # takes the click handler off the viewer
        self.target_picker.detach()

    def _on_docked(self) -> None:
        super()._on_docked()
        self.target_picker.attach()

    def _build_params(self, form):
        self.threshold_box = QDoubleSpinBox()
        self.threshold_box.setRange(0.0, 1.0)
        self.threshold_box.setDecimals(2)
        self.threshold_box.setSingleStep(0.05)
        self.threshold_box.setValue(DetectionParams.score_threshold)
        self.threshold_box.setToolTip(THRESHOLD_TIP)
        self.max_findings_box = QSpinBox()
        self.max_findings_box.setRange(1, 1000)
        self.max_findings_box.setValue(DetectionParams.max_findings)
        self.max_findings_box.setToolTip("Only the highest-scoring findings are kept")
        form.addRow("Score threshold", self.threshold_box)
        form.addRow("Max findings", self.max_findings_box)

    def _apply_operating_point(self) -> None:
        """Set the score threshold to the chosen model's operating point (``medai train
        operating-point``), and say in its tooltip where the value comes from."""
        from ..models.card import operating_threshold

        card = self.model_box.currentData()
        if is_load_entry(card):  # only a dialog so far: a cancelled one must leave the threshold and tooltip as set
            return
        threshold = operating_threshold(card)
        if threshold is None:
            self.threshold_box.setToolTip(THRESHOLD_TIP)
            return
        budget = card.extra["operating_point"].get("fp_per_scan", 1.0)
        self.threshold_box.setValue(threshold)
        self.threshold_box.setToolTip(
            f"{THRESHOLD_TIP}. {card.name} starts at {threshold:.2f}: its operating point, fitted on validation "
            f"phantoms for at most {budget:g} false positive(s) per scan. Lower it to see more candidates.")

    def _task_values(self):
        return {
            "score_threshold": self.threshold_box.value(),
            "max_findings": self.max_findings_box.value(),
        }

    def _make_job(self, volume, spacing, params):
        # Qt thread: run() has checked the picked layer; its transform in mm (not in the layer's
        # own units, e.g. µm) gives the findings' positions in mm.
        affine = layer_world_mm(self.layer_picker.current_layer())

        def job(progress, cancel):
            from ..api import _label_classes, _model, cut_to, detect, one_more_than
            from ..postprocess.findings import findings_mask

            data = np.asarray(volume)
            loaded = _model(params.model, "detection")
            # a segmentation-based detector's classes (e.g. 1 lung, 2 nodule): New labels names
            # them, so Add to labels writes a finding as the model's nodule class, not as label 1
            classes = {} if loaded.card.draws_boxes else _label_classes(loaded.card)
            findings = detect(
                data, spacing, model=loaded, affine=affine,
                score_threshold=params.score_threshold, max_findings=one_more_than(params.max_findings),
                settings=params.inference_settings(),
                progress=progress, cancel=cancel,
            )
            findings, capped = cut_to(findings, params.max_findings)
            mask = findings_mask(findings, data.shape) if findings else None
            return {"findings": findings, "mask": mask, "capped": capped, "classes": classes}

        return job

    def _result_layers(self, result, source_layer, params):
        findings = result["findings"]
        centres = np.array([f.center_voxel for f in findings], dtype=float).reshape(-1, 3)
        in_plane_mm = float(np.mean(layer_spacing(source_layer)[1:]))
        # Rings, not discs: a filled marker hid the nodule it marks.  The ring's colour is the score.
        style = {"border_color": "score", "border_colormap": SCORE_COLORMAP, "border_contrast_limits": (0.0, 1.0)}
        if not findings:  # no feature values to colour by
            style = {"border_color": "yellow"}
        points = output_layer_data(
            centres, source_layer, "findings", "points",
            features=finding_features(findings),
            # Points sizes are in data pixels: the long axis in in-plane pixels.
            size=[max(f.diameter_mm / in_plane_mm, MIN_POINT_SIZE) for f in findings] or MIN_POINT_SIZE,
            face_color="transparent", border_width=RING_WIDTH, opacity=1.0,
            metadata={"findings": [f.to_dict() for f in findings], "model": _model_name(params.model),
                      "note": LUNG_RADS_NOTE},
            **style,
        )
        layers = []
        if result["mask"] is not None:
            layers.append(output_layer_data(
                result["mask"], source_layer, "finding masks", "labels",
                features={"index": [0] + [f.label for f in findings],
                          "score": [np.nan] + [f.score for f in findings],
                          "lung_rads": [""] + [f.lung_rads for f in findings]},
                opacity=0.5, metadata={FINDING_MASKS: True},
            ))
        # added last, so the markers lie on top of every mask and are not dimmed by them
        return [*layers, points]

    def _add_results(self, result, source_layer, params):
        from napari.layers import Points

        # napari makes each new layer active; the base class holds every picker meanwhile, so
        # the finding masks do not become the layer findings are added to (the screening widget
        # points it at its segmentation instead).
        layers = super()._add_results(result, source_layer, params)
        self.findings = list(result["findings"])
        self.review = [NOT_REVIEWED] * len(self.findings)  # a new run is not reviewed yet
        self.findings_layer = next(layer for layer in layers if isinstance(layer, Points))
        self.masks_layer = next((layer for layer in layers if layer.metadata.get(FINDING_MASKS)), None)
        self._masks_colormap = self._review_colormap = None
        self._source_layer = source_layer
        self._source_state = _RunState(source_layer)
        self._classes = dict(result.get("classes") or {})
        self.mark_button.setEnabled(True)
        self.new_labels_button.setEnabled(True)
        self._findings_affine = world_affine(self.findings_layer)
        self._findings_units = getattr(self.findings_layer, "units", None)
        self.findings_table.show_findings(self.findings)
        self.export_button.setEnabled(True)
        self._enable_finding_actions()
        self._findings_shape = tuple(source_layer.data.shape)
        if not self.findings:
            from napari.utils.notifications import show_info

            show_info(f"{self.title}: no findings reached the score threshold {params.score_threshold:.2f}.")
        elif result.get("capped"):  # the unlisted ones could be larger than every listed one
            from napari.utils.notifications import show_info

            show_info(f"{self.title}: more findings reached the score threshold {params.score_threshold:.2f} than "
                      f"the {len(self.findings)} listed (Max findings); raise it to list them.")
        return layers

    # ---- table actions -------------------------------------------------------------------
    def go_to_finding(self, row: int) -> None:
        """Centre the view on finding ``row`` (0-based rank) and move to its slice."""
        if not 0 <= row < len(self.findings):
            return
        finding = self.findings[row]
        # On the table's slice (the centre's z rounded, halves up: a centre can fall between two
        # slices) as napari slices and draws the image the findings came from (the table's slice
        # is that image's); then the markers, which lie on its grid; once both are gone, their
        # transform at run time.
        layer = next((layer for layer in (self._source_layer, self.findings_layer)
                      if layer is not None and layer in self.viewer.layers), None)
        if layer is not None:  # follows any later move of the layer
            matrix, units = world_affine(layer), getattr(layer, "units", None)
        else:
            matrix, units = self._findings_affine, self._findings_units
        dims = self.viewer.dims
        point, centre = view_of_voxel(matrix, finding.center_voxel, dims, units)
        if point:
            dims.set_point(list(point), list(point.values()))
        if point and not np.allclose([dims.point[axis] for axis in point], list(point.values())):
            # napari's slider moved the point to its nearest step, which on a tilted image can draw
            # the next slice: the step that draws the finding's
            point, _ = view_of_voxel(matrix, finding.center_voxel, dims, units, on_steps=True)
            dims.set_point(list(point), list(point.values()))
        # napari 0.9 moved the camera to viewer.scene (viewer.camera is deprecated there)
        camera = self.viewer.scene.camera if hasattr(self.viewer, "scene") else self.viewer.camera
        camera.center = centre
        self.findings_table.selectRow(row)
        item = self.findings_table.item(row, 0)
        if item is not None:  # e.g. the reader's finding, added below the visible rows
            self.findings_table.scrollToItem(item)

    def _on_current_cell_changed(self, row: int, _column: int, previous_row: int, _previous_column: int) -> None:
        if row != previous_row:  # a move within the row is not a new finding
            self.go_to_finding(row)

    def _live_findings_layer(self):
        if self.findings_layer is None:
            return None
        return self.findings_layer if self.findings_layer in self.viewer.layers else None

    def _enable_finding_actions(self) -> None:
        for button in (self.add_to_labels_button, self.accept_button, self.reject_button):
            button.setEnabled(bool(self.findings))

    # ---- the reader's review ---------------------------------------------------------------
    def set_review(self, row: int, state: str) -> None:
        """Mark finding ``row`` (0-based rank) "accepted", "rejected" or "" (not reviewed): the
        table, the Points layer's ``review`` feature and ring (hidden when rejected) follow."""
        if not 0 <= row < len(self.findings):
            raise InputError("select a finding in the table first")
        review = list(self.review)
        review[row] = state
        self.review = checked_review(review, len(self.findings))
        self.findings_table.show_review(self.review)
        self._update_points_review(self._live_findings_layer())
        self._update_masks_review()
        self.status_label.setText(f"Finding {row + 1}: {state or 'not reviewed'}" + self._review_summary())
        self._review_changed()

    def point_rows(self, layer) -> list[int] | None:
        """Each point's finding (0-based table row), read from its ``rank`` feature, so that a
        point the reader deleted from the layer leaves the others matched; None when the
        points no longer name findings of this run."""
        if layer is None or "rank" not in layer.features or len(layer.features) != len(layer.data):
            return None
        try:
            rows = [int(rank) - 1 for rank in layer.features["rank"]]
        except (TypeError, ValueError):  # a point added by hand: no rank
            return None
        return rows if all(0 <= r < len(self.review) for r in rows) else None

    def _update_points_review(self, layer) -> None:
        rows = self.point_rows(layer)
        if rows is None:
            return
        features = layer.features.copy()
        features["review"] = [self.review[r] for r in rows]
        layer.features = features
        layer.shown = np.array([self.review[r] != REJECTED for r in rows], dtype=bool)

    def _update_masks_review(self) -> None:
        """A rejected finding's mask is hidden too: the masks layer's colours, not its data, change
        (the layer keeps every finding, and taking the decision back shows it again)."""
        from napari.utils.colormaps import DirectLabelColormap

        masks = self.masks_layer
        if masks is None or masks not in self.viewer.layers:
            return
        if self._masks_colormap is None or masks.colormap is not self._review_colormap:
            self._masks_colormap = masks.colormap  # napari's colours, or those the user chose since
        if REJECTED not in self.review:
            masks.colormap = self._masks_colormap
        else:
            # every label in the layer keeps its colour (a label the user painted too); only
            # the rejected findings' labels turn transparent
            top = max(len(self.review), int(np.max(masks.data)))
            colours = self._masks_colormap.map(np.arange(top + 2))
            clear = np.zeros(4, np.float32)
            hidden = {k + 1 for k, state in enumerate(self.review) if state == REJECTED}
            masks.colormap = DirectLabelColormap(color_dict={
                None: colours[top + 1], 0: clear,  # None: a label painted after this
                **{k: clear if k in hidden else colours[k] for k in range(1, top + 1)}})
        self._review_colormap = masks.colormap  # as the layer holds it

    def _review_summary(self) -> str:
        done = len(self.review) - review_counts(self.review)["not_reviewed"]
        return f" ({done} of {len(self.review)} reviewed)"

    def _review_changed(self) -> None:
        """Hook for what depends on the review (the screening widget's report)."""

    def _toggle_current_review(self, state: str) -> None:
        row = self.findings_table.currentRow()
        if not 0 <= row < len(self.findings):
            self.status_label.setText("Select a finding in the table first")
            return
        self.set_review(row, NOT_REVIEWED if self.review[row] == state else state)

    # ---- a nodule the detector missed, marked by the reader --------------------------------
    def _on_mark_toggled(self, checked: bool) -> None:
        callbacks = self.viewer.mouse_drag_callbacks
        if checked:
            if self._mark_on_click not in callbacks:
                callbacks.append(self._mark_on_click)
            note = ""
            # napari also hands the click to the active layer: in a drawing mode it would paint a
            # label or add a point where the reader marks the nodule
            active = self.viewer.layers.selection.active
            if active is not None and getattr(active, "mode", "pan_zoom") not in ("pan_zoom", "transform"):
                active.mode = "pan_zoom"
                note = f"; '{active.name}' was put in pan/zoom mode so the click draws nothing"
            self.status_label.setText(f"Click the missed nodule on the image (the button again: stop){note}")
        elif self._mark_on_click in callbacks:
            callbacks.remove(self._mark_on_click)

    def _mark_on_click(self, _viewer, event):
        """A click (press and release without dragging) on the canvas marks the nodule there;
        a drag pans or rotates the view as usual."""
        if event.button != 1:
            return
        position = np.asarray(event.position, dtype=float)
        start = np.asarray(getattr(event, "pos", (0.0, 0.0)), dtype=float)  # canvas pixels
        yield
        dragged = False
        while event.type == "mouse_move":
            # a hand's jitter during a click is not a drag
            dragged |= float(np.hypot(*(np.asarray(getattr(event, "pos", start), dtype=float) - start))) > CLICK_PX
            yield
        if not dragged:
            self.mark_button.setChecked(False)  # one nodule a click on the button
            if self.viewer.dims.ndisplay != 2:
                self._report(InputError("switch to the 2D view to mark a nodule: in 3D a click has no depth"))
                return
            self.measure_at(position)

    def _run_source(self, first: str, again: str):
        """The image the findings came from, still in the viewer and where the run found it, or an
        InputError saying what to do (``first``: why a run is needed; ``again``: what to do then)."""
        layer = self._source_layer
        if layer is None:
            raise InputError(f"run the detection first: {first}")
        if layer not in self.viewer.layers:
            raise InputError(f"'{layer.name}', the image the findings came from, was removed: run the detection on "
                             f"an image to {again}")
        if not self._source_state.matches(layer):
            raise InputError(f"'{layer.name}' was moved, rescaled or given other data since the detection ran: run "
                             f"the detection again to {again}")
        return layer

    def measure_at(self, world) -> None:
        """Measure the nodule at ``world`` (the viewer's world coordinates) on the image the
        findings came from, in a job, and add it as the reader's finding."""
        layer = self._source_layer
        try:
            if self.runner.is_running:
                raise InputError("wait for the running job to finish (or cancel it), then mark the nodule again")
            # The mark is measured in the image's frame now, but joins markers and masks laid out
            # in the frame of the run: after a move or new data it would land away from the click.
            layer = self._run_source("the nodule is measured on the image it ran on", "mark a nodule on it")
            data, spacing = image_source(layer)
            # the voxel napari draws under the click (not world_to_data's: tilted layers differ)
            point = voxel_of_view(world_affine(layer), world, self.viewer.dims, getattr(layer, "units", None))
            affine = layer_world_mm(layer)  # the finding's position in mm
            started_on = input_state(layer)
        except InputError as exc:
            self._report(exc)
            return
        job = self._make_mark_job(data, spacing, point, affine)

        def on_success(result):  # checked before any state changes (the screening widget's too)
            self._check_unchanged(layer, started_on, "the marked nodule was measured")
            return self._add_reader_finding(result)

        self.runner.start(job, on_success, name="Measure the marked nodule")

    def _make_mark_job(self, volume, spacing, point, affine):
        def job(progress, cancel):
            from ..postprocess.seeded import nodule_at

            progress(0, 1, "growing the nodule from the marked point")
            return {"finding": nodule_at(np.asarray(volume), spacing, point, affine)}

        return job

    def _add_reader_finding(self, result) -> str:
        """Append the reader's finding (Qt thread): mask, table, marker, review "accepted";
        returns the status line the job runner shows.  The mask goes first: an edit that fails
        (an InputError from edit_labels) leaves the findings, table and markers as they were."""
        finding = result["finding"]
        finding.label = len(self.findings) + 1
        overlaps = self._add_reader_mask(finding)
        self.findings.append(finding)
        self.review.append(ACCEPTED)
        self.findings_table.show_findings(self.findings)
        self.findings_table.show_review(self.review)
        layer = self._live_findings_layer()
        if layer is not None and self.point_rows(layer) is not None:
            import pandas as pd

            before, count = layer.features.copy(), len(layer.data)
            sizes = np.atleast_1d(layer.size)[:count]
            in_plane_mm = float(np.mean(layer_spacing(layer)[1:]))
            layer.add(np.asarray([finding.center_voxel], dtype=float))
            layer.size = [*sizes, max(finding.diameter_mm / in_plane_mm, MIN_POINT_SIZE)]
            layer.features = pd.concat([before, pd.DataFrame(finding_features([finding]))], ignore_index=True)
            self._update_points_review(layer)
            layer.metadata["findings"] = [f.to_dict() for f in self.findings]
        self._update_masks_review()
        self._enable_finding_actions()
        row = len(self.findings) - 1
        self.go_to_finding(row)
        self._review_changed()
        return (f"Finding {row + 1} added by the reader: {finding.mean_diameter_mm:.1f} mm mean diameter, "
                f"Lung-RADS {finding.lung_rads}{overlaps}" + self._review_summary())

    def _add_reader_mask(self, finding) -> str:
        """The reader's finding's mask into the masks layer (one undoable edit), or a new masks
        layer; returns the note on masks it overlaps ("" for none)."""
        masks = self.masks_layer
        if masks is not None and masks in self.viewer.layers and finding.mask is not None:
            box = tuple(slice(o, o + m) for o, m in zip(finding.bbox_voxel[0], finding.mask.shape))
            under = np.asarray(masks.data[box])
            # like the detector's masks, it fills only empty voxels: another finding's stay its own
            others = sorted({int(v) for v in np.unique(under[finding.mask])} - {0})
            edit_labels(masks, finding.mask & (under == 0), finding.label, origin=finding.bbox_voxel[0])
            return f"; it overlaps the mask of finding {', '.join(map(str, others))}" if others else ""
        if finding.mask is not None and self._source_layer in self.viewer.layers:
            # the run found nothing, or the user removed the masks layer: the reader's finding
            # starts a new one, so its outline can be checked
            self._add_masks_layer(finding)
        return ""

    def _add_masks_layer(self, finding) -> None:
        from ..postprocess.findings import findings_mask
        from ._layers import add_layers

        data = output_layer_data(findings_mask([finding], self._findings_shape), self._source_layer, "finding masks",
                                 "labels", opacity=0.5, metadata={FINDING_MASKS: True})
        self.masks_layer = add_layers(self.viewer, [data])[0]  # holds the target picker too
        layer = self._live_findings_layer()
        if layer is not None:  # the markers stay on top of the masks
            self.viewer.layers.move(self.viewer.layers.index(layer), len(self.viewer.layers))

    # ---- add a finding to a Labels layer ---------------------------------------------------
    def add_finding_to_labels(self, row: int, layer, value: int) -> int:
        """Write finding ``row``'s mask into Labels ``layer`` as ``value``: one undoable edit.
        Returns the voxels changed.  The layer must lie on the findings' grid (same shape and
        world transform); nothing is changed otherwise."""
        if not 0 <= row < len(self.findings):
            raise InputError("select a finding in the table first")
        if layer is None:
            raise InputError("there is no Labels layer to add the finding to: run Segmentation, "
                             "or add one on the image's grid with 'New labels'")
        finding = self.findings[row]
        top = _max_label(layer)
        if int(value) > top:  # numpy would raise OverflowError in the middle of the edit
            raise InputError(f"label {int(value)} does not fit '{layer.name}' ({layer.data.dtype}, at most {top})")
        if finding.mask is None:
            raise InputError(f"finding {row + 1} has no mask to add (its model gives boxes only)")
        shape = tuple(layer.data.shape)
        if shape != self._findings_shape or not np.allclose(world_affine(layer), self._findings_affine, atol=1e-3):
            raise InputError(f"'{layer.name}' does not lie on the grid of the image the findings came from "
                             f"(shape {shape} vs {self._findings_shape}, or another position or voxel size)")
        changed = edit_labels(layer, finding.mask, int(value), origin=finding.bbox_voxel[0])
        self.status_label.setText(f"Finding {row + 1} added to '{layer.name}' as label {int(value)}: "
                                  f"{changed} voxel(s) changed (Ctrl+Z on that layer undoes it)")
        return changed

    def _add_current_finding_to_labels(self) -> None:
        try:
            self.add_finding_to_labels(self.findings_table.currentRow(), self.target_picker.current_layer(),
                                       self.label_value_box.value())
        except InputError as exc:
            self._show_input_error(exc)

    def _show_input_error(self, exc: InputError) -> None:
        # not a job: the runner's state stays as the last run left it
        from napari.utils.notifications import show_error

        self.status_label.setText(str(exc))
        show_error(f"{self.title}: {exc}")

    def _on_target_changed(self, _index=None) -> None:
        # The picker re-announces its choice whenever the layer list changes; only a new
        # layer resets the value, so a value the user typed survives an unrelated new layer.
        layer = self.target_picker.current_layer()
        if layer is not None and layer is not self._target_layer:
            top = _max_label(layer)  # a uint8 layer holds labels up to 255: the box stops there, and says so
            self.label_value_box.setMaximum(top)
            self.label_value_box.setToolTip(f"{LABEL_VALUE_TIP}; at most {top} in '{layer.name}' "
                                            f"({layer.data.dtype} labels)")
            self.label_value_box.setValue(nodule_label(layer))
        self._target_layer = layer

    def new_labels_layer(self):
        """Add an empty int32 Labels layer ``"<image> labels"`` on the grid of the image the
        findings came from (a NEW layer: napari suffixes a taken name), and make it the target."""
        from ._layers import add_layers

        # made on the image's grid now, but sized to the run's: after new data it did not fit (a
        # traceback), and after a move Add to labels refused the layer it had just made
        layer = self._run_source("the new labels go on the grid of the image it ran on", "make labels on its grid")
        named = {}
        if self._classes:  # the detector's classes, named and coloured as the segmentation widget's
            from ..napari_hooks.label_classes import named_labels

            named = {**named_labels(self._classes), "metadata": {"classes": self._classes}}
        data = output_layer_data(np.zeros(self._findings_shape, np.int32), layer, "labels", "labels", **named)
        labels = add_layers(self.viewer, [data])[0]
        self.target_picker.set_layer(labels)
        self.status_label.setText(f"'{labels.name}' added on the grid of '{layer.name}'")
        return labels

    def _new_labels_clicked(self) -> None:
        try:
            self.new_labels_layer()
        except InputError as exc:
            self._show_input_error(exc)

    def export_csv(self, path) -> Path:
        """Write the findings of the last run (every field, ranked) as CSV."""
        from ..io.atomic import write_text_atomic
        from ..postprocess.report import file_grid, findings_to_csv

        if self.findings_layer is None:
            raise InputError("run the detection first: there are no findings to export")
        path = with_extension(path, ".csv")
        review = self.review if is_reviewed(self.review) else None  # a reader column once there is a review
        grid = file_grid(self._findings_shape, self.findings_layer.metadata)  # the image's file, where it says
        write_text_atomic(path, findings_to_csv(self.findings, review=review, grid=grid))  # a failed write keeps the old file
        self.status_label.setText(f"{len(self.findings)} finding(s) written to {path}")
        return path

    def _choose_csv_file(self) -> None:
        default = f"{self.findings_layer.name}.csv" if self.findings_layer is not None else "findings.csv"
        self._save_with_dialog("Export findings", default, "CSV (*.csv)", self.export_csv,
                               "cannot export the findings", written=lambda p: [with_extension(p, ".csv")])


class _RunState:
    """An image layer's :func:`input_state` (array identity, shape, data-to-world transform in mm)
    when the findings were added, holding the array only weakly so that a volume the user
    replaced is not kept alive in memory by the widget."""

    def __init__(self, layer):
        data, self.shape, self.world = input_state(layer)
        try:
            self._data = weakref.ref(data)
        except TypeError:  # an array type without weak references: hold it
            self._data = lambda data=data: data

    def matches(self, layer) -> bool:
        data = self._data()
        return data is not None and same_state(input_state(layer), (data, self.shape, self.world))


def nodule_label(layer) -> int:
    """The label value a finding goes in with: the layer's class named "nodule" (the
    segmentation widget's layers name their classes in ``features``), else its brush label."""
    features = getattr(layer, "features", None)
    if features is not None and {"index", "class"} <= set(features.columns):
        named = features[features["class"].astype(str).str.lower() == "nodule"]
        if len(named):
            return int(named["index"].iloc[0])
    return max(int(layer.selected_label), 1)


LABEL_VALUE_TIP = ("Label value the finding is written with (the layer's nodule class when it names one, else its "
                   "current brush label)")


def _max_label(layer) -> int:
    """The largest label the layer's dtype holds (the spin box's own limit at most)."""
    dtype = layer.data.dtype
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else LABEL_MAX
    return int(min(top, LABEL_MAX))


def _model_name(model) -> str:
    return str(getattr(model, "name", model))
