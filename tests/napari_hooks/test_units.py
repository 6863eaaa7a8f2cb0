"""Layers the plugin reads or opens as samples say their world is in millimetres, so napari's
scale bar and status bar read mm; outputs inherit the input layer's units, whatever they are."""

from __future__ import annotations

import types

import numpy as np
import pytest
from napari.components import LayerList
from napari.layers import Image, Labels, Points

from napari_medai.io import Volume, write_volume
from napari_medai.napari_hooks import samples
from napari_medai.napari_hooks.reader import get_reader
from napari_medai.napari_hooks.writer import write_image
from napari_medai.widgets._layers import output_layer_data

MM = ["millimeter"] * 3
LAYER_TYPES = {"image": Image, "labels": Labels, "points": Points}


def _layers(layer_data) -> list:
    return [LAYER_TYPES[kind](data, **meta) for data, meta, kind in layer_data]


def _units(layer) -> list[str]:
    return [str(unit) for unit in layer.units]


def _read(path) -> list:
    return _layers(get_reader(str(path))(str(path)))


@pytest.fixture
def mr_file(tmp_path):
    data = (np.arange(4 * 5 * 6).reshape(4, 5, 6) * 7 % 251).astype(np.float32)
    vol = Volume.from_spacing(data, (3.0, 0.5, 0.75), origin=(10.0, -20.0, 5.5), modality="MR")
    return write_volume(vol, tmp_path / "mr.nii.gz")


@pytest.mark.filterwarnings("ignore:Non-orthogonal slicing")  # the oblique layer, as napari says
def test_read_images_and_label_maps_are_in_millimetres(tmp_path, mr_file):
    mask = np.zeros((4, 5, 6), np.uint8)
    mask[1:3, 1:4, 2:5] = 1
    labels_file = write_volume(Volume.from_spacing(mask, (3.0, 0.5, 0.75), is_labels=True), tmp_path / "m.nii.gz")
    oblique = np.array([[0.0, 0.6, 0.8, 1.0], [0.0, 0.8, -0.6, 2.0], [2.0, 0.0, 0.0, 3.0], [0, 0, 0, 1]])
    volume = Volume(np.arange(60, dtype=np.float32).reshape(3, 4, 5), oblique, modality="MR")
    oblique_file = write_volume(volume, tmp_path / "obl.nii.gz")  # placed by "affine", not "scale"
    [image], [labels], [tilted] = _read(mr_file), _read(labels_file), _read(oblique_file)
    assert (image.__class__, labels.__class__) == (Image, Labels)
    assert _units(image) == _units(labels) == _units(tilted) == MM


def test_every_sample_layer_is_in_millimetres_and_so_is_the_viewer(monkeypatch):
    import napari_medai.phantoms as phantoms

    fake = types.SimpleNamespace(
        hu=np.full((4, 5, 6), -1000, np.int16), labels=np.zeros((4, 5, 6), np.uint8), spacing=(2.0, 0.7, 0.7),
        nodules=[{"center_voxel": (2, 2, 2), "diameter_mm": 5.0, "type": "solid"}],
    )
    monkeypatch.setattr(phantoms, "make_chest_ct", lambda seed, **kw: fake, raising=False)
    for sample in (samples.lung1_ct, samples.colin27_mr, samples.synthetic_chest_ct):
        layers = _layers(sample())
        assert all(_units(layer) == MM for layer in layers), sample.__name__
        # one layer in pixels among them (the phantom's nodule points, say) and napari finds
        # no common unit: the scale bar would read dimensionless
        assert [str(unit) for unit in LayerList(layers).units] == MM, sample.__name__


def test_an_output_inherits_millimetres_and_other_units_are_left_alone(mr_file):
    [read] = _read(mr_file)
    micrometres = Image(read.data, scale=(3.0, 0.5, 0.75), units=("um", "um", "um"))
    no_units = Image(read.data, scale=(3.0, 0.5, 0.75))
    mask = np.zeros(read.data.shape, np.uint8)
    outputs = {name: _layers([output_layer_data(mask, layer, "mask", "labels")])[0]
               for name, layer in [("read", read), ("um", micrometres), ("none", no_units)]}
    assert _units(outputs["read"]) == MM
    assert _units(outputs["um"]) == ["micrometer"] * 3
    assert _units(outputs["none"]) == ["pixel"] * 3


def test_a_layer_in_millimetres_saves_and_reads_back_unchanged(tmp_path, mr_file):
    [layer] = _read(mr_file)
    data, meta, _ = layer.as_layer_data_tuple()  # what napari hands a writer: units included
    [again] = _read(write_image(str(tmp_path / "out.nii.gz"), data, meta)[0])
    np.testing.assert_array_equal(again.data, layer.data)
    np.testing.assert_allclose(again.scale, layer.scale)
    np.testing.assert_allclose(again.translate, layer.translate)
    assert _units(again) == MM
