"""The NIfTI writer saves a layer in mm whatever length unit the layer is in (io.units)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_medai.napari_hooks.reader import get_reader
from napari_medai.napari_hooks.writer import SaveError, write_image, write_labels

SPACING_MM = (2.0, 0.5, 0.75)  # (z, y, x)
TRANSLATE_MM = (10.0, -20.0, 5.5)


def _save(tmp_path, layer, writer=write_image):
    data, meta, _ = layer.as_layer_data_tuple()  # what napari hands a writer: units included
    return writer(str(tmp_path / "out.nii.gz"), data, meta)[0]


def _read_back(path):
    [(data, meta, _)] = get_reader(path)(path)
    return data, meta


def _zooms_zyx(path) -> tuple[float, ...]:
    # the writer stores (x, y, z) voxel sizes; the plugin's (z, y, x) is the reverse
    return tuple(float(z) for z in nib.load(path).header.get_zooms()[:3])[::-1]


@pytest.fixture
def volume():
    return (np.arange(4 * 5 * 6).reshape(4, 5, 6) * 7 % 251).astype(np.float32)


@pytest.mark.parametrize(
    "scale, translate, units",
    [
        ((2000.0, 500.0, 750.0), (10000.0, -20000.0, 5500.0), "um"),
        ((0.2, 0.05, 0.075), (1.0, -2.0, 0.55), "cm"),
        ((2.0, 500.0, 0.075), (10.0, -20000.0, 0.55), ("mm", "um", "cm")),
    ],
    ids=["um", "cm", "mixed"],
)
def test_a_layer_in_other_length_units_is_saved_in_mm(tmp_path, volume, scale, translate, units):
    path = _save(tmp_path, Image(volume, scale=scale, translate=translate, units=units, name="cells"))
    assert _zooms_zyx(path) == pytest.approx(SPACING_MM)
    data, meta = _read_back(path)
    np.testing.assert_array_equal(data, volume)
    assert meta["scale"] == pytest.approx(SPACING_MM)
    assert meta["translate"] == pytest.approx(TRANSLATE_MM)


def test_a_labels_layer_in_um_is_saved_in_mm_too(tmp_path):
    mask = np.zeros((4, 5, 6), np.uint8)
    mask[1:3, 1:4, 2:5] = 1
    path = _save(tmp_path, Labels(mask, scale=(2000.0, 500.0, 750.0), units="um"), write_labels)
    assert _zooms_zyx(path) == pytest.approx(SPACING_MM)


@pytest.mark.parametrize("units", ["mm", "pixel", None], ids=["mm", "pixel", "default"])
def test_a_layer_in_mm_or_pixels_is_saved_with_its_scale_as_mm(tmp_path, volume, units):
    layer = Image(volume, scale=SPACING_MM, translate=TRANSLATE_MM, units=units)
    path = _save(tmp_path, layer)
    assert _zooms_zyx(path) == pytest.approx(SPACING_MM)
    data, meta = _read_back(path)
    np.testing.assert_array_equal(data, volume)
    assert meta["scale"] == pytest.approx(SPACING_MM) and meta["translate"] == pytest.approx(TRANSLATE_MM)


def test_a_layer_with_a_time_axis_is_not_saved(tmp_path, volume):
    layer = Image(volume, units=("s", "mm", "mm"), name="cine")
    with pytest.raises(SaveError, match="^layer 'cine' has axis 0 in second, which is not a length"):
        _save(tmp_path, layer)
    assert not (tmp_path / "out.nii.gz").exists()
