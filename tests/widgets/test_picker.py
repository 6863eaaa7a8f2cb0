"""The layer pickers: a layer a widget adds moves no picker; a layer the user selects does."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medai.widgets._picker import ImageLayerPicker, LabelsLayerPicker

pytestmark = pytest.mark.gui


def test_no_picker_on_the_viewer_follows_a_layer_a_widget_adds(viewer, small_ct):
    ct = viewer.add_image(small_ct, name="ct")
    labels = viewer.add_labels(np.zeros(small_ct.shape, np.int32), name="ct labels")
    adding, other, targets = ImageLayerPicker(viewer), ImageLayerPicker(viewer), LabelsLayerPicker(viewer)
    viewer.layers.selection.active = ct
    with adding.keep_selection():  # napari makes each added layer active
        denoised = viewer.add_image(small_ct + 1, name="ct denoised")
        segmentation = viewer.add_labels(np.ones(small_ct.shape, np.int32), name="ct segmentation")
    assert viewer.layers.selection.active is segmentation  # napari did make them active
    # every picker lists the new layers but keeps its choice, not only the adding widget's
    assert adding.count() == other.count() == 2 and targets.count() == 2
    assert adding.current_layer() is ct and other.current_layer() is ct
    assert targets.current_layer() is labels
    # an output the user selects afterwards is followed like any other layer
    viewer.layers.selection.active = denoised
    assert adding.current_layer() is denoised and other.current_layer() is denoised
    viewer.layers.selection.active = segmentation
    assert targets.current_layer() is segmentation


def test_adding_to_one_viewer_does_not_hold_the_pickers_of_another(make_napari_viewer, small_ct):
    first, second = make_napari_viewer(), make_napari_viewer()
    first.add_image(small_ct, name="a")
    second.add_image(small_ct, name="b")
    adding, elsewhere = ImageLayerPicker(first), ImageLayerPicker(second)
    with adding.keep_selection():
        added = second.add_image(small_ct + 1, name="the user's own")  # e.g. opened by the user
    assert elsewhere.current_layer() is added


def test_add_layers_holds_every_picker_by_itself(viewer, small_ct):
    """The widgets' one way to add outputs holds the pickers without a guard at each caller."""
    from napari_medai.widgets._layers import add_layers

    ct = viewer.add_image(small_ct, name="ct")
    picker, targets = ImageLayerPicker(viewer), LabelsLayerPicker(viewer)
    viewer.layers.selection.active = ct
    added = add_layers(viewer, [(small_ct + 1, {"name": "ct denoised"}, "image"),
                                (np.ones(small_ct.shape, np.int32), {"name": "ct labels"}, "labels")])
    assert viewer.layers.selection.active is added[-1]  # napari made them active
    assert picker.count() == 2 and picker.current_layer() is ct
    assert targets.count() == 1 and targets.current_layer() is added[1]  # the only labels layer
    viewer.layers.selection.active = added[0]  # and the user's own choice is followed afterwards
    assert picker.current_layer() is added[0]
