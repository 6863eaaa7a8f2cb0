"""What a bundle's configs say, read without losing any of it: sections with a step that
cannot be built, intensity transforms (fixed z-score, min-max, several in a row, unknown
ones), DivisiblePad and SimpleInferer, networks from the bundle's scripts/ folder, networks
written as expressions, 2D bundles and Spacingd placed before Orientationd.

The networks are tiny modules of this file, named in the bundles by dotted path; a recording
one keeps what it was fed, to compare with MONAI's own transforms on the same array.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch
from scipy.special import expit
from fixed_rule_models import write_bundle
from torch import nn

from napari_medai.errors import ModelError
from napari_medai.inference import InferenceSettings, run_model
from napari_medai.inference.engine import target_spacing
from napari_medai.inference.layout import from_network_axes
from napari_medai.models.loading import load_model

pytestmark = pytest.mark.filterwarnings("ignore::napari_medai.models.bundle.BundleTrustWarning")
FP32 = InferenceSettings(precision="fp32")
TWO_CLASSES = {"0": "background", "1": "organ"}


class Fed(nn.Module):
    """Two channels (0 and the input) and a copy of every batch it is fed in ``inputs``."""

    inputs: list = []

    def __init__(self):
        super().__init__()
        self.register_buffer("unused", torch.zeros(1))

    def forward(self, x):
        type(self).inputs.append(x.detach().clone())
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, :1]], dim=1)


class NeedsMultipleOf8(Fed):
    """Fails, as a 3-level U-Net does, on sizes that are not multiples of 8."""

    def forward(self, x):
        if any(n % 8 for n in x.shape[2:]):
            raise RuntimeError(f"sizes {tuple(x.shape[2:])} are not multiples of 8")
        return super().forward(x)


FED = {"_target_": f"{__name__}.Fed"}


@pytest.fixture
def fed(monkeypatch):
    inputs = []
    monkeypatch.setattr(Fed, "inputs", inputs)
    return inputs


def preprocessing(*steps, orient=("Orientationd", "RAS"), pixdim=(1.0, 1.0, 1.0), loader=None):
    """A bundle's preprocessing: load, channel first, orientation, spacing, then ``steps``."""
    transforms = [loader or {"_target_": "LoadImaged", "keys": "image"},
                  {"_target_": "EnsureChannelFirstd", "keys": "image"},
                  {"_target_": orient[0], "keys": "image", "axcodes": orient[1]},
                  {"_target_": "Spacingd", "keys": "image", "pixdim": list(pixdim), "mode": "bilinear"},
                  *steps, {"_target_": "EnsureTyped", "keys": "image"}]
    return {"_target_": "Compose", "transforms": transforms}


WINDOW = {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -1000, "a_max": 400,
          "b_min": 0.0, "b_max": 1.0, "clip": True}
SIGMOID_POST = {"_target_": "Compose", "transforms": [
    {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
    # Invertd of a preprocessing that cannot be built, and an output folder that is not defined
    {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image"},
    {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
    {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@no_such_folder"},
]}


def bundle(tmp_path, network=FED, state=None, name="b", **config):
    return write_bundle(tmp_path / name, network, state if state is not None else Fed().state_dict(),
                        channel_def=TWO_CLASSES, extra_config=config)


def volume() -> np.ndarray:
    v = np.full((6, 12, 10), -850.0, np.float32)
    v[2:5, 3:9, 4:8] = 100.0
    v[1, 1, 1] = 0.0  # a zero, for nonzero z-scores
    return v


# ---- 1. a section with a step that cannot be built ----------------------------------------
def test_a_loader_that_cannot_be_built_loses_neither_the_preprocessing_nor_the_activation(tmp_path):
    loader = {"_target_": "LoadImaged", "keys": "image", "reader": "@no_such_reader"}
    folder = bundle(tmp_path, preprocessing=preprocessing(WINDOW, loader=loader, pixdim=(2.0, 2.0, 4.0)),
                    postprocessing=SIGMOID_POST)
    card = load_model(folder).card
    assert card.spacing == (4.0, 2.0, 2.0)
    assert card.intensity["kind"] == "ct_window" and card.intensity["a_min"] == -1000.0
    assert card.output == "sigmoid"


@pytest.mark.parametrize("by_reference", [False, True])
def test_a_step_that_cannot_be_built_and_may_change_the_image_stops_loading(tmp_path, by_reference):
    pre = preprocessing({"_target_": "scripts.custom.MyTransformd", "keys": "image"}, WINDOW)
    config = {"preprocessing": pre}
    if by_reference:  # the list written elsewhere in the config, as several zoo bundles do
        config = {"preprocessing": {"_target_": "Compose", "transforms": "$@pre_list"},
                  "pre_list": pre["transforms"]}
    folder = write_bundle(tmp_path / "b", FED, Fed().state_dict(), channel_def=TWO_CLASSES, extra_config=config)
    with pytest.raises(ModelError, match=r"preprocessing step 4 \(scripts\.custom\.MyTransformd; config id "):
        load_model(folder)


def test_a_postprocessing_step_that_cannot_be_built_stops_loading(tmp_path):
    post = copy.deepcopy(SIGMOID_POST)
    post["transforms"].insert(0, {"_target_": "scripts.post.MyActivationd", "keys": "pred"})
    folder = bundle(tmp_path, postprocessing=post)
    with pytest.raises(ModelError, match=r"postprocessing step 0 \(scripts\.post\.MyActivationd; .* network output"):
        load_model(folder)


# ---- 3. intensity transforms, as MONAI computes them ----------------------------------------
INTENSITY_CASES = {
    "fixed z-score": [{"_target_": "NormalizeIntensityd", "keys": "image", "subtrahend": 100.0, "divisor": 50.0}],
    "fixed z-score over non-zero voxels": [{"_target_": "NormalizeIntensityd", "keys": "image",
                                            "subtrahend": 100.0, "divisor": 50.0, "nonzero": True}],
    "min-max": [{"_target_": "ScaleIntensityd", "keys": "image", "minv": -1.0, "maxv": 2.0}],
    "factor": [{"_target_": "ScaleIntensityd", "keys": "image", "minv": None, "maxv": None, "factor": 0.5}],
    "window then z-score": [{**WINDOW, "a_min": -200, "a_max": 200},
                            {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True}],
}


@pytest.mark.parametrize("steps", INTENSITY_CASES.values(), ids=INTENSITY_CASES.keys())
def test_intensity_transforms_feed_the_network_what_monai_does(tmp_path, fed, steps):
    from monai.bundle import ConfigParser

    folder = bundle(tmp_path, preprocessing=preprocessing(*steps), inferer={"_target_": "SimpleInferer"})
    image = volume()
    run_model(load_model(folder), image, spacing=(1.0, 1.0, 1.0), settings=FP32)
    monai_steps = ConfigParser({"t": {"_target_": "Compose", "transforms": steps}}).get_parsed_content("t")
    expected = np.asarray(monai_steps({"image": torch.from_numpy(image[None])})["image"])
    got = from_network_axes(fed[0][0], "RAS").numpy()  # back to (C, z, y, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_an_intensity_transform_the_plugin_does_not_reproduce_stops_loading(tmp_path):
    threshold = {"_target_": "ThresholdIntensityd", "keys": "image", "threshold": 0.0}
    folder = bundle(tmp_path, preprocessing=preprocessing(threshold, WINDOW))
    with pytest.raises(ModelError, match="ThresholdIntensityd changes the image intensities"):
        load_model(folder)


@pytest.mark.parametrize("step, message", [
    ({"_target_": "Resized", "keys": "image", "spatial_size": [64, 64, 32]}, "Resized resizes, flips or turns"),
    ({"_target_": "Flipd", "keys": "image", "spatial_axis": 0}, "Flipd resizes, flips or turns"),
    ({"_target_": "Rotate90d", "keys": "image"}, "Rotate90d resizes, flips or turns"),
])
def test_a_spatial_step_the_plugin_does_not_reproduce_stops_loading(tmp_path, step, message):
    """They loaded without a word, and the network ran on another grid or orientation than MONAI's
    own inference gives it (found by an audit helper)."""
    folder = bundle(tmp_path, preprocessing=preprocessing(step, WINDOW))
    with pytest.raises(ModelError, match=message):
        load_model(folder)


# ---- 4. DivisiblePad and whole-image inferers ----------------------------------------------
def test_divisible_pad_rounds_whole_image_windows_up_to_its_k(tmp_path, fed):
    pad = {"_target_": "DivisiblePadd", "keys": "image", "k": 8}
    folder = bundle(tmp_path, {"_target_": f"{__name__}.NeedsMultipleOf8"}, preprocessing=preprocessing(pad),
                    inferer={"_target_": "SlidingWindowInferer", "roi_size": [-1, -1, -1]})
    model = load_model(folder)
    assert model.card.extra["divisible_k"] == [8, 8, 8]
    out = run_model(model, volume(), spacing=(1.0, 1.0, 1.0), settings=FP32)
    assert out.shape == (2, 6, 12, 10)
    assert tuple(fed[0].shape[2:]) == (16, 16, 8)  # (x, y, z) = (10, 12, 6) padded to multiples of 8


def test_a_divisible_pad_k_of_zero_on_an_axis_keeps_that_axis(tmp_path, fed):
    pad = {"_target_": "DivisiblePadd", "keys": "image", "k": [8, 8, 0]}  # MONAI: k <= 0 keeps the size
    folder = bundle(tmp_path, preprocessing=preprocessing(pad),
                    inferer={"_target_": "SlidingWindowInferer", "roi_size": [-1, -1, -1]})
    model = load_model(folder)
    assert model.card.extra["divisible_k"] == [1, 8, 8]  # (z, y, x)
    run_model(model, volume(), spacing=(1.0, 1.0, 1.0), settings=FP32)
    assert tuple(fed[0].shape[2:]) == (16, 16, 6)


def test_a_card_says_divisible_k_and_2d_axes_in_a_form_the_engine_can_follow():
    from napari_medai.models.card import ModelCard

    base = dict(name="c", task="segmentation", spatial_dims=2, in_channels=1, out_channels=2,
                roi_size=(8, 8), network={"name": "UNet", "kwargs": {}})
    assert ModelCard(**base, extra={"divisible_k": 16}).extra["divisible_k"] == [16, 16]
    assert ModelCard(**base, extra={"axes": "SRA"}).axes == "SRA"
    for extra in ({"divisible_k": 0}, {"divisible_k": [8, 8, 8]}, {"divisible_k": "8"}, {"axes": "RAS"}):
        with pytest.raises(ModelError):
            ModelCard(**base, extra=extra)


def test_a_simple_inferer_runs_the_whole_image_in_one_window(tmp_path, fed):
    folder = bundle(tmp_path, inferer={"_target_": "SimpleInferer"})
    model = load_model(folder)
    assert model.card.roi_size == (None, None, None)
    run_model(model, volume(), spacing=(1.0, 1.0, 1.0), settings=FP32)
    assert len(fed) == 1 and tuple(fed[0].shape[2:]) == (10, 12, 6)


# ---- 5. a network in the bundle's own scripts/ folder ----------------------------------------
def _scripts_bundle(tmp_path, name: str, value: float):
    """A bundle whose network is scripts.net.Net, returning ``value`` on channel 1."""
    folder = bundle(tmp_path, {"_target_": "scripts.net.Net"}, state={"unused": torch.zeros(1)}, name=name)
    (folder / "scripts").mkdir()
    (folder / "scripts" / "__init__.py").write_text("")
    (folder / "scripts" / "net.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.register_buffer('unused', torch.zeros(1))\n"
        "    def forward(self, x):\n"
        f"        return torch.cat([torch.zeros_like(x), torch.full_like(x, {value})], 1)\n")
    return folder


def test_networks_from_two_bundles_own_scripts_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the bundles' folders
    path_before = list(sys.path)
    first = load_model(_scripts_bundle(tmp_path, "first", 1.0))
    second = load_model(_scripts_bundle(tmp_path, "second", 2.0))
    x = torch.zeros(1, 1, 4, 4, 4)
    assert float(first.network(x)[0, 1].max()) == 1.0 and float(second.network(x)[0, 1].max()) == 2.0
    assert sys.path == path_before and "scripts" not in sys.modules


# ---- 6. a network_def written as an expression -------------------------------------------------
@pytest.mark.parametrize("expression", [
    # the network says (its `spatial_dims`)
    "$monai.networks.nets.SegResNet(spatial_dims=2, init_filters=8, out_channels=2, blocks_down=[1, 1], blocks_up=[1])",
    "$torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1))",  # only its convolution says
])
def test_a_2d_network_written_as_an_expression_is_2d(tmp_path, expression):
    from monai.bundle import ConfigParser

    network = ConfigParser({"imports": ["$import monai", "$import torch"], "n": expression}).get_parsed_content("n")
    folder = write_bundle(tmp_path / "b", expression, network.state_dict(), channel_def=TWO_CLASSES, roi_size=(8, 8),
                          extra_config={"imports": ["$import monai", "$import torch"],
                                        "preprocessing": preprocessing(orient=("Orientationd", "RA"), pixdim=(1, 1))})
    model = load_model(folder)
    assert model.card.spatial_dims == 2 and model.card.roi_size == (8, 8)
    assert run_model(model, volume(), spacing=(1.0, 1.0, 1.0), settings=FP32).shape == (2, 6, 12, 10)


# ---- 7. 2D bundles: in-plane spacing and window in (y, x) -------------------------------------
def test_a_2d_bundle_resamples_in_plane_and_gives_its_window_in_y_x(tmp_path):
    from monai.networks.nets import UNet

    kwargs = dict(spatial_dims=2, in_channels=1, out_channels=2, channels=[2, 4], strides=[2], num_res_units=0)
    folder = write_bundle(tmp_path / "b", {"_target_": "UNet", **kwargs}, UNet(**kwargs).state_dict(),
                          channel_def=TWO_CLASSES, roi_size=(8, 16),
                          extra_config={"preprocessing": preprocessing(orient=("Orientationd", "RA"), pixdim=(2.0, 3.0))})
    card = load_model(folder).card
    # pixdim and roi_size are (x, y) of the RA array: R/L is our x, A/P our y
    assert card.spacing == (3.0, 2.0) and card.roi_size == (16, 8)
    assert card.axes == "SRA"
    assert target_spacing(card, (5.0, 1.0, 1.0)) == (5.0, 3.0, 2.0)  # every slice kept, resampled in-plane


class Fed2D(Fed):
    spatial_dims = 2


def test_a_2d_bundle_sees_each_slice_in_its_own_orientation_and_answers_in_ours(tmp_path, fed):
    folder = write_bundle(tmp_path / "b", {"_target_": f"{__name__}.Fed2D"}, Fed2D().state_dict(),
                          channel_def=TWO_CLASSES, roi_size=(-1, -1),
                          extra_config={"preprocessing": preprocessing(orient=("Orientationd", "RA"), pixdim=(0, 0))})
    model = load_model(folder)
    v = volume()
    probabilities = run_model(model, v, spacing=(1.0, 1.0, 1.0), settings=FP32)
    seen = torch.cat(fed)[:, 0].numpy()  # (z, a, b): every slice, as the network saw it
    # MONAI's "RA" array: axis 0 runs to the patient's right (our x reversed), axis 1 anterior
    # (our y reversed); our slices run (posterior, left)
    assert seen.shape == (6, 10, 12)
    np.testing.assert_array_equal(seen, np.flip(v, (1, 2)).transpose(0, 2, 1))
    # the network's answer comes back on our grid: the organ channel is the input, in place
    expected = expit(v)  # two-channel softmax of (0, v)
    np.testing.assert_allclose(probabilities[1], expected, rtol=1e-5, atol=1e-6)


def test_a_2d_bundle_on_non_axial_slices_is_refused(tmp_path):
    from monai.networks.nets import UNet

    kwargs = dict(spatial_dims=2, in_channels=1, out_channels=2, channels=[2, 4], strides=[2], num_res_units=0)
    folder = write_bundle(tmp_path / "b", {"_target_": "UNet", **kwargs}, UNet(**kwargs).state_dict(),
                          channel_def=TWO_CLASSES, roi_size=(8, 16),
                          extra_config={"preprocessing": preprocessing(orient=("Orientationd", "RS"), pixdim=(1, 1))})
    with pytest.raises(ModelError, match="non-axial slices"):
        load_model(folder)


@pytest.mark.parametrize("spatial_dim", [0, 2])
def test_a_slice_inferer_across_another_axis_than_the_axial_is_refused(tmp_path, spatial_dim):
    """MONAI's SliceInferer slices across ``spatial_dim`` (default 0: sagittal in RAS); the engine
    ran such a network on axial slices without a word (found by an audit helper)."""
    from monai.networks.nets import UNet

    kwargs = dict(spatial_dims=2, in_channels=1, out_channels=2, channels=[2, 4], strides=[2], num_res_units=0)
    folder = write_bundle(tmp_path / "b", {"_target_": "UNet", **kwargs}, UNet(**kwargs).state_dict(),
                          channel_def=TWO_CLASSES, roi_size=(8, 16),
                          extra_config={"preprocessing": preprocessing(pixdim=(1, 1, 1)),
                                        "inferer": {"_target_": "SliceInferer", "roi_size": [8, 16],
                                                    "spatial_dim": spatial_dim}})
    if spatial_dim == 2:  # across S in RAS: the axial slices the engine runs
        assert load_model(folder).card.spatial_dims == 2
    else:
        with pytest.raises(ModelError, match="SliceInferer runs the network on slices across axis 0"):
            load_model(folder)


# ---- 9. Spacingd before Orientationd ---------------------------------------------------------------
@pytest.mark.parametrize("pixdim, spacing", [((2.0, 2.0, 4.0), None), ((1.5, 1.5, 1.5), (1.5, 1.5, 1.5))])
def test_spacing_before_orientation_is_refused_unless_isotropic(tmp_path, pixdim, spacing):
    pre = preprocessing(WINDOW, pixdim=pixdim)
    pre["transforms"][2], pre["transforms"][3] = pre["transforms"][3], pre["transforms"][2]
    folder = bundle(tmp_path, preprocessing=pre)
    if spacing is None:
        with pytest.raises(ModelError, match="Spacingd .* comes before Orientationd"):
            load_model(folder)
    else:
        assert load_model(folder).card.spacing == spacing
