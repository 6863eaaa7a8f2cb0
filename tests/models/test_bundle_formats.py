"""MONAI bundles as they come in the wild: sigmoid (multi-label) outputs, MR z-scores over
non-zero voxels, pixdim/roi_size values <= 0, wrapped checkpoints, TorchScript weights and
TorchScript files exported with ``ckpt_export`` (their bundle config inside).

The networks are fixed rules on the windowed CT (tests/fixed_rule_models.py's ``unit``), named
in the bundles by this module's own dotted path, so results can be computed by hand.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixed_rule_models import ThresholdSegmenter, unit, write_bundle
from torch import nn

import napari_medai
from napari_medai.inference import InferenceSettings, run_model
from napari_medai.models.loading import load_model

pytestmark = pytest.mark.filterwarnings("ignore::napari_medai.models.bundle.BundleTrustWarning")
FP32 = InferenceSettings(precision="fp32")
SIGMOID_POST = {"_target_": "Compose", "transforms": [
    {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
    {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
]}
RULE = {"_target_": "fixed_rule_models.ThresholdSegmenter"}
TRAINED = dict(lung_below=unit(-600.0), nodule_above=unit(-100.0))  # differ from the defaults
BRATS_CHANNELS = {"0": "tumour core", "1": "whole tumour", "2": "enhancing tumour"}


class NestedRegions(nn.Module):
    """Three independent (sigmoid) channels in BraTS order: tumour core (above 0 HU), whole
    tumour (above -300 HU), enhancing tumour (above 200 HU); nested regions."""

    def __init__(self):
        super().__init__()
        self.register_buffer("thresholds", torch.tensor([unit(0.0), unit(-300.0), unit(200.0)]))

    def forward(self, x):
        return torch.cat([100.0 * (x[:, :1] - t) for t in self.thresholds], dim=1)


class OneChannel(nn.Module):
    """One sigmoid channel: on above ``hu`` HU (the threshold travels with the weights)."""

    def __init__(self, hu: float = 0.0):
        super().__init__()
        self.register_buffer("threshold", torch.tensor(unit(hu)))

    def forward(self, x):
        return 100.0 * (x[:, :1] - self.threshold)


def _target(cls) -> dict:
    return {"_target_": f"{__name__}.{cls.__name__}"}


def nested_volume() -> np.ndarray:
    volume = np.full((16, 32, 32), -850.0, np.float32)  # no channel
    volume[2:14, 4:28, 4:28] = -200.0  # whole tumour only
    volume[4:12, 8:24, 8:24] = 100.0  # + tumour core
    volume[6:10, 12:20, 12:20] = 300.0  # + enhancing tumour
    return volume


def _edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# ---- 1. the activation of Activationsd, and multi-label maps ---------------------------------
@pytest.mark.parametrize("activation", [
    {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
    {"_target_": "Activationsd", "keys": ["pred", "label"], "sigmoid": [True, False]},  # one flag per key
    {"_target_": "Activations", "sigmoid": True},  # the array transform
])
def test_a_sigmoid_bundle_gets_a_sigmoid_card_with_label_classes(tmp_path, activation):
    post = {"_target_": "Compose", "transforms": [activation]}
    folder = write_bundle(tmp_path / "brats", _target(NestedRegions), NestedRegions().state_dict(),
                          channel_def=BRATS_CHANNELS, extra_config={"postprocessing": post})
    card = load_model(folder).card
    assert card.output == "sigmoid" and card.out_channels == 3
    # channel k is label k + 1, 0 is background (where no channel reaches 0.5)
    assert card.class_names == {0: "background", 1: "tumour core", 2: "whole tumour", 3: "enhancing tumour"}


def test_nested_sigmoid_regions_each_keep_their_label(tmp_path):
    folder = write_bundle(tmp_path / "brats", _target(NestedRegions), NestedRegions().state_dict(),
                          channel_def=BRATS_CHANNELS, extra_config={"postprocessing": SIGMOID_POST})
    volume = nested_volume()
    result = napari_medai.segment(volume, (1.0, 1.0, 1.0), model=load_model(folder), settings=FP32)
    expected = np.select([volume > 200, volume > 0, volume > -300], [3, 1, 2], 0)
    np.testing.assert_array_equal(result.labels, expected)
    assert {v["name"] for v in result.volumes} == {"tumour core", "whole tumour", "enhancing tumour"}


# ---- 2. one sigmoid channel: label 1 -------------------------------------------------------
@pytest.mark.parametrize("channel_def", [{"0": "spleen"}, {"1": "spleen"}])
def test_a_one_channel_bundle_names_label_one(tmp_path, channel_def):
    outputs = {"pred": {"type": "image", "format": "segmentation", "num_channels": 1, "channel_def": channel_def}}
    folder = write_bundle(tmp_path / "spleen", _target(OneChannel), OneChannel(50.0).state_dict(),
                          outputs=outputs, extra_config={"postprocessing": SIGMOID_POST})
    model = load_model(folder)
    assert model.card.class_names == {0: "background", 1: "spleen"}
    volume = np.full((16, 32, 32), -850.0, np.float32)
    volume[4:12, 8:24, 8:20] = 100.0
    result = napari_medai.segment(volume, (1.0, 1.0, 1.0), model=model, settings=FP32)
    np.testing.assert_array_equal(result.labels, volume > 50)
    assert [(v["index"], v["name"], v["voxels"]) for v in result.volumes] == [(1, "spleen", 8 * 16 * 12)]


# ---- 3. NormalizeIntensityd(nonzero=True, channel_wise=True) -------------------------------
def test_an_mr_zscore_over_non_zero_voxels_is_carried_and_applied_as_monai_does(tmp_path):
    from monai.transforms import NormalizeIntensityd

    from napari_medai.inference.intensity import fit_intensity

    folder = write_bundle(tmp_path / "mr", _target(OneChannel), OneChannel().state_dict(),
                          extra_config={"postprocessing": SIGMOID_POST})
    normalize = {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True}
    _edit_json(folder / "configs" / "inference.json",
               lambda c: c["preprocessing"]["transforms"].__setitem__(4, normalize))
    intensity = load_model(folder).card.intensity
    assert intensity == {"kind": "zscore", "nonzero": True, "channel_wise": True}

    rng = np.random.default_rng(0)
    image = np.zeros((2, 10, 12, 12), np.float32)  # air (0) around a "head", two channels
    image[0, 2:8, 3:9, 3:9] = rng.normal(400, 60, (6, 6, 6))
    image[1, 1:9, 2:10, 2:10] = rng.normal(900, 150, (8, 8, 8))
    ours = fit_intensity(intensity, torch.from_numpy(image)).apply(torch.from_numpy(image))
    monai = NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True)({"image": image.copy()})["image"]
    np.testing.assert_allclose(ours.numpy(), np.asarray(monai), atol=1e-5)
    assert (ours.numpy()[image == 0] == 0).all()  # the air stays 0


def test_percentile_options_are_carried_and_an_unset_output_range_refused(tmp_path):
    from napari_medai.errors import ModelError

    def bundle_with(step, folder):
        path = write_bundle(tmp_path / folder, RULE, ThresholdSegmenter(**TRAINED).state_dict())
        _edit_json(path / "configs" / "inference.json", lambda c: c["preprocessing"]["transforms"].__setitem__(4, step))
        return path

    percentiles = {"_target_": "ScaleIntensityRangePercentilesd", "keys": "image", "lower": 5, "upper": 95,
                   "b_min": 0, "b_max": 1}
    # relative=True: MONAI maps p5 and p95 to 0.05 and 0.95 (the window was 0..1, silently)
    card = load_model(bundle_with({**percentiles, "relative": True}, "rel")).card
    assert (card.intensity["b_min"], card.intensity["b_max"]) == pytest.approx((0.05, 0.95))
    # channel_wise on a one-channel image is the same window: loads as before
    assert load_model(bundle_with({**percentiles, "channel_wise": True}, "cw")).card.intensity["b_max"] == 1.0
    # b_min None raised TypeError
    unset = {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -1000, "a_max": 400, "b_min": None,
             "b_max": None}
    with pytest.raises(ModelError, match="leaves b_min/b_max unset, which the card's intensity window cannot state"):
        load_model(bundle_with(unset, "none"))


# ---- 4. pixdim and roi_size values <= 0 ----------------------------------------------------
def test_pixdim_that_keeps_the_input_spacing_everywhere_means_no_resampling(tmp_path):
    folder = write_bundle(tmp_path / "native", RULE, ThresholdSegmenter().state_dict(), pixdim=(-1, -1, -1))
    assert load_model(folder).card.spacing is None


@pytest.mark.parametrize("pixdim, roi, spacing, roi_zyx", [
    ((1.5, 1.5, -1), (16, 16, 16), (None, 1.5, 1.5), (16, 16, 16)),  # in-plane only: keep the slices
    ((0, 1.5), (16, 16, 16), (1.5, 1.5, None), (16, 16, 16)),  # padded with 1.5 (x, y, z): keep x
    ((1.0, 1.0, 1.0), (16, 16, -1), (1.0, 1.0, 1.0), (None, 16, 16)),  # windows through every slice
])
def test_pixdim_or_roi_size_on_some_axes_only_follow_the_input_there(tmp_path, pixdim, roi, spacing, roi_zyx):
    """The card leaves such an axis None (JSON null) for the engine to fill in from the scan."""
    from napari_medai.models.card import ModelCard

    folder = write_bundle(tmp_path / "b_pd", RULE, ThresholdSegmenter().state_dict(), pixdim=pixdim, roi_size=roi)
    card = load_model(folder).card
    assert (card.spacing, card.roi_size) == (spacing, roi_zyx)
    again = ModelCard.from_json(card.to_json())
    assert (again.spacing, again.roi_size) == (spacing, roi_zyx)


# ---- 5. checkpoints, TorchScript weights, channels from network_def ---------------------------
@pytest.mark.parametrize("wrap", [
    lambda sd: {"model": sd, "epoch": 3},
    lambda sd: {"state_dict": sd, "optimizer": {}},
    lambda sd: {"network": sd},
    lambda sd: {"module." + k: v for k, v in sd.items()},  # DataParallel
    lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}},
], ids=["model", "state_dict", "network", "dataparallel", "state_dict+dataparallel"])
def test_wrapped_checkpoints_load(tmp_path, wrap):
    folder = write_bundle(tmp_path / "ck", RULE, wrap(ThresholdSegmenter(**TRAINED).state_dict()))
    loaded = load_model(folder).network
    torch.testing.assert_close(loaded.thresholds, torch.tensor([unit(-600.0), unit(-100.0)]))


def test_cards_unwrap_checkpoints_by_the_same_rule(tmp_path):
    from fixed_rule_models import segmentation_card

    from napari_medai.models.registry import load_state_dict, unwrap_state_dict

    card = segmentation_card()
    state = ThresholdSegmenter(**TRAINED).state_dict()
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "ddp.pt")
    card.weights, card.source_dir = "ddp.pt", tmp_path
    assert set(load_state_dict(card)) == set(state)
    # a network whose own keys start with "module." keeps them
    wrapped = nn.Sequential()
    wrapped.add_module("module", ThresholdSegmenter())
    assert set(unwrap_state_dict(wrapped.state_dict(), wrapped.state_dict().keys())) == {"module.thresholds"}


def test_a_torchscript_model_pt_is_the_network(tmp_path):
    folder = write_bundle(tmp_path / "ts", RULE, {})
    torch.jit.save(_traced(ThresholdSegmenter(**TRAINED)), str(folder / "models" / "model.pt"))
    model = load_model(folder)
    assert isinstance(model.network, torch.jit.ScriptModule)
    volume = np.full((8, 16, 16), -850.0, np.float32)
    volume[2:6, 4:12, 4:12] = 0.0
    labels = napari_medai.segment(volume, (1.0, 1.0, 1.0), model=model, settings=FP32).labels
    np.testing.assert_array_equal(labels, np.where(volume > -100, 2, 1))  # the scripted thresholds


def test_channels_come_from_network_def_when_the_metadata_has_none(tmp_path):
    from monai.networks.nets import UNet

    net_def = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 2, "out_channels": 3,
               "channels": [4, 8], "strides": [2], "num_res_units": 0}
    state = UNet(**{k: v for k, v in net_def.items() if k != "_target_"}).state_dict()
    folder = write_bundle(tmp_path / "twoin", net_def, state)

    def drop_channels(meta):
        fmt = meta["network_data_format"]
        fmt["inputs"]["image"].pop("num_channels")
        fmt["outputs"]["pred"].pop("num_channels")
    _edit_json(folder / "configs" / "metadata.json", drop_channels)
    card = load_model(folder).card
    assert card.in_channels == 2 and card.out_channels == 3


# ---- 6. TorchScript exported from a bundle, its config inside --------------------------------
def _spleen_bundle(tmp_path):
    """Resamples (pixdim twice the test volume's spacing), re-orients (RAS), windows CT."""
    return write_bundle(tmp_path / "rule_bundle", RULE, ThresholdSegmenter(**TRAINED).state_dict(),
                        pixdim=(2.0, 2.0, 4.0), roi_size=(16, 16, 8))


def _traced(network):
    """TorchScript by tracing (ThresholdSegmenter's optional sleep does not script)."""
    return torch.jit.trace(network.eval(), torch.zeros(1, 1, 8, 8, 8))


def _exported_with_ckpt_export(folder, path):
    from monai.bundle import ckpt_export

    ckpt_export(net_id="network_def", filepath=str(path), ckpt_file=str(folder / "models" / "model.pt"),
                meta_file=str(folder / "configs" / "metadata.json"),
                config_file=str(folder / "configs" / "inference.json"), bundle_root=str(folder),
                use_trace=True, input_shape=[1, 1, 8, 8, 8])
    return path


def _exported_by_hand(folder, path):
    """As older MONAI wrote it: the config under "inference" (no .json), no metadata."""
    config = (folder / "configs" / "inference.json").read_bytes()
    torch.jit.save(_traced(ThresholdSegmenter(**TRAINED)), str(path), _extra_files={"inference": config})
    return path


@pytest.mark.parametrize("export", [_exported_with_ckpt_export, _exported_by_hand])
def test_a_torchscript_exported_from_a_bundle_runs_as_the_bundle(tmp_path, export):
    folder = _spleen_bundle(tmp_path)
    ts = export(folder, tmp_path / "exported.ts")
    from_bundle, from_file = load_model(folder), load_model(ts)
    for field in ("spacing", "roi_size", "intensity", "output", "axes", "out_channels"):
        assert getattr(from_file.card, field) == getattr(from_bundle.card, field), field
    assert from_file.card.spacing == (4.0, 2.0, 2.0)
    volume = np.full((16, 32, 32), -850.0, np.float32)
    volume[4:8, 8:16, 20:28] = 100.0
    volume[8:16, 20:32, 0:12] = -250.0
    np.testing.assert_allclose(run_model(from_file, volume, (2.0, 1.0, 1.0), FP32),
                               run_model(from_bundle, volume, (2.0, 1.0, 1.0), FP32), atol=1e-6)


def test_a_sigmoid_torchscript_export_keeps_its_activation_and_label_classes(tmp_path):
    outputs = {"pred": {"type": "image", "format": "segmentation", "num_channels": 1,
                        "channel_def": {"0": "spleen"}}}
    folder = write_bundle(tmp_path / "sig", _target(OneChannel), OneChannel(50.0).state_dict(),
                          outputs=outputs, extra_config={"postprocessing": SIGMOID_POST})
    card = load_model(_exported_with_ckpt_export(folder, tmp_path / "sig.ts")).card
    assert card.output == "sigmoid" and card.class_names == {0: "background", 1: "spleen"}
