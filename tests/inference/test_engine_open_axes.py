"""Cards that leave an axis of ``spacing`` or ``roi_size`` null: the engine takes the input's
spacing there and a window as long as the image there (MONAI bundles' pixdim / roi_size <= 0;
tests/models/test_bundle_end_to_end.py runs such bundles against MONAI's own transforms)."""

import numpy as np
import pytest

from napari_medai.errors import InputError, ModelError
from napari_medai.inference import run_model
from napari_medai.models.card import ModelCard
from tiny_nets import Counting, Pointwise, make_model


def test_a_2d_model_keeps_the_rows_it_leaves_null_and_windows_all_of_them(rng):
    network = Counting(Pointwise(dims=2))
    model = make_model(network, spatial_dims=2, spacing=(None, 2.0), roi_size=(None, 8))
    volume = rng.normal(size=(4, 20, 24)).astype(np.float32)
    out = run_model(model, volume, spacing=(2.5, 0.5, 1.0))
    assert out.shape == (2, 4, 20, 24)
    # x resampled to 2 mm (24 -> 12 voxels, windows of 8), y kept at 0.5 mm: windows of all 20 rows
    assert {shape[1:] for shape in network.shapes} == {(1, 20, 8)}
    assert network.windows == 4 * 2  # each of the 4 slices: x windows at 0 and 4, y one window


def test_a_2d_model_runs_on_one_slice_given_as_2d_or_as_a_one_slice_volume(rng):
    # the one-slice z axis was refused as "too small to process", so this path never ran
    model = make_model(Pointwise(dims=2), spatial_dims=2, spacing=None, roi_size=(8, 8))
    plane = rng.normal(size=(20, 24)).astype(np.float32)
    for volume, spacing in ((plane, (0.5, 1.0)), (plane[None], (2.5, 0.5, 1.0))):
        out = run_model(model, volume, spacing=spacing)
        assert out.shape == (2, 1, 20, 24)
    with pytest.raises(InputError, match=r"the slice is too small to process \(shape \(1, 24\)\)"):
        run_model(model, plane[:1], spacing=(0.5, 1.0))


def test_null_axes_in_a_card_file_and_what_stays_refused():
    text = '{"name": "native-z", "spacing": [null, 0.8, 0.8], "roi_size": [null, 64, 64]}'
    card = ModelCard.from_json(text)
    assert (card.spacing, card.roi_size) == ((None, 0.8, 0.8), (None, 64, 64))
    assert ModelCard.from_json(card.to_json()).spacing == (None, 0.8, 0.8)
    assert ModelCard(name="native", spacing=(None, None, None)).spacing is None  # no resampling
    with pytest.raises(ModelError, match=r"spacing values must be positive \(or null"):
        ModelCard(name="bad", spacing=(-1.0, 0.8, 0.8))
    # a classifier's patches have a fixed shape and step, taken before any volume is seen
    with pytest.raises(ModelError, match="roi_size must be a list of finite numbers"):
        ModelCard(name="cls", task="classification", spacing=(1.0, 1.0, 1.0), roi_size=(None, 8, 8))
    with pytest.raises(ModelError, match="spacing must be a list of finite numbers"):
        ModelCard(name="cls", task="classification", spacing=(None, 1.0, 1.0), roi_size=(4, 8, 8))
