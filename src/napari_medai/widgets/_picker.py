"""Comboboxes of the viewer's Image (or Labels) layers that stay in step with the layer list."""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

from qtpy.QtWidgets import QComboBox

from ._layers import _is_image, _is_labels

# Viewers (keyed by their unwrapped layer list) that a widget is adding its outputs to right
# now.  napari makes each new layer active, and EVERY picker on that viewer must ignore it:
# one widget's output silently became the next input of the others.  Adding is synchronous on
# the Qt thread, so nothing the user does can fall inside this window.
_ADDING: Counter = Counter()


@contextmanager
def plugin_adds_layers(viewer):
    """While inside, no picker on ``viewer`` follows the active layer (it still lists new layers)."""
    key = _viewer_key(viewer)
    _ADDING[key] += 1
    try:
        yield
    finally:
        _ADDING[key] -= 1
        if not _ADDING[key]:
            del _ADDING[key]


def _viewer_key(viewer) -> int:
    # the layer list, unwrapped: a plugin-docked widget's viewer is a proxy of the real one
    return id(unwrap(viewer.layers))


class ImageLayerPicker(QComboBox):
    """Lists the Image layers of ``viewer``; follows the layer the user selects.

    It follows the viewer's active layer when that is an Image, except while any widget adds
    its own outputs to the viewer (``_layers.add_layers``, or :meth:`keep_selection`): napari makes them active, and a
    denoised image must not silently become the next input of this or any other widget.  An
    output the user selects afterwards is followed like any other layer.
    """

    accepts = staticmethod(_is_image)  # which layers are listed
    tooltip = "Image layer to process (3D CT or MR volume)"

    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self._viewer = viewer
        self._layers: list = []
        self.setToolTip(self.tooltip)
        self._attached = False
        self.attach()

    def attach(self) -> None:
        """Follow the viewer's layer list (again); the widget calls :meth:`detach` when its dock closes."""
        if self._attached:
            return
        self._attached = True
        for emitter, slot in self._connections():
            emitter.connect(slot)
        self._rebuild()
        self._on_active()

    def detach(self) -> None:
        """Stop following the viewer: a closed dock must not keep reacting to its layers."""
        if self._attached:
            self._attached = False
            for emitter, slot in self._connections():
                emitter.disconnect(slot)

    def _connections(self) -> list:
        events = self._viewer.layers.events
        return [(events.inserted, self._on_inserted), (events.removed, self._on_removed),
                (events.moved, self._rebuild), (events.reordered, self._rebuild),
                (self._viewer.layers.selection.events.active, self._on_active),
                *((layer.events.name, self._rebuild) for layer in self._viewer.layers)]

    def current_layer(self):
        """The chosen Image layer, or None when the viewer has none."""
        index = self.currentIndex()
        return self._layers[index] if 0 <= index < len(self._layers) else None

    def set_layer(self, layer) -> None:
        index = _index_of(self._layers, layer)
        if index >= 0:
            self.setCurrentIndex(index)

    def keep_selection(self):
        """Context manager for adding outputs: holds every picker on the viewer, not only this one."""
        return plugin_adds_layers(self._viewer)

    # ---- viewer events -----------------------------------------------------------------
    def _on_inserted(self, event):
        event.value.events.name.connect(self._rebuild)
        self._rebuild()

    def _on_removed(self, event):
        event.value.events.name.disconnect(self._rebuild)
        self._rebuild()

    def _on_active(self, event=None):
        active = self._viewer.layers.selection.active
        if not _ADDING[_viewer_key(self._viewer)] and self.accepts(active):
            self.set_layer(active)

    def _rebuild(self, event=None):
        chosen = self.current_layer()
        self._layers = [layer for layer in self._viewer.layers if self.accepts(layer)]
        self.blockSignals(True)
        try:
            self.clear()
            self.addItems([layer.name for layer in self._layers])
            index = _index_of(self._layers, chosen)
            if index >= 0:
                self.setCurrentIndex(index)
        finally:
            self.blockSignals(False)
        self.currentIndexChanged.emit(self.currentIndex())


FINDING_MASKS = "finding_masks"  # metadata flag of the detection widget's own mask layers


def _is_editable_labels(layer) -> bool:
    # A detector's own "finding masks" layer is not a place to add findings to.
    return _is_labels(layer) and not layer.metadata.get(FINDING_MASKS, False)


class LabelsLayerPicker(ImageLayerPicker):
    """The same, for the Labels layers an edit may go into."""

    accepts = staticmethod(_is_editable_labels)
    tooltip = "Labels layer to add findings to (one Ctrl+Z on it undoes each addition)"


def unwrap(layer):
    """The layer itself: a widget docked through napari's plugin machinery gets a
    ``PublicOnlyProxy`` viewer, whose ``layers.selection.active`` is a new proxy each time."""
    return getattr(layer, "__wrapped__", layer)


def _index_of(layers: list, layer) -> int:
    """Position of ``layer`` by identity (two layers with equal data are still two layers)."""
    layer = unwrap(layer)
    return next((i for i, item in enumerate(layers) if unwrap(item) is layer), -1)
