"""Bringing your own MONAI model: what a bundle's configs say that MONAI's parser drops (a
Spacingd switched off by "_disabled_"), what its files contradict (metadata.json's channels
against network_def), what it is not (a denoiser), and one clear sentence for each way its
weights can fail to load.  Bundles are written in tmp_path with tests/fixed_rule_models.write_bundle.
"""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
import torch
from fixed_rule_models import write_bundle
from monai.networks.nets import UNet
from torch import nn

import napari_medai
from napari_medai.errors import ModelError
from napari_medai.inference import InferenceSettings
from napari_medai.models.bundle import BundleTrustWarning
from napari_medai.models.card import ModelCard, save_card
from napari_medai.models.loading import load_model

pytestmark = pytest.mark.filterwarnings("ignore::napari_medai.models.bundle.BundleTrustWarning")
TWO_CLASSES = {"0": "background", "1": "organ"}
UNET = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8],
        "strides": [2], "num_res_units": 0}


def tiny_unet(out_channels=2, channels=(4, 8)) -> nn.Module:
    torch.manual_seed(0)
    return UNet(3, 1, out_channels, channels=channels, strides=(2,), num_res_units=0)


class Fed(nn.Module):
    """Two channels (0 and the input), and the shape of every batch it is fed."""

    shapes: list = []

    def __init__(self):
        super().__init__()
        self.register_buffer("unused", torch.zeros(1))

    def forward(self, x):
        type(self).shapes.append(tuple(x.shape[2:]))
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, :1]], dim=1)


def zoo_detection_preprocessing(pixdim="@grid"):
    """The Model Zoo's lung_nodule_ct_detection shape: its Spacingd is switched off unless the
    raw data are given, the data having been resampled to the grid beforehand."""
    return {
        "whether_raw": False,
        "whether_resampled": "$(not @whether_raw)",
        "grid": [0.5, 0.5, 1.25],
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": pixdim, "_disabled_": "@whether_resampled"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -1000, "a_max": 400, "b_min": 0.0,
             "b_max": 1.0, "clip": True},
            {"_target_": "EnsureTyped", "keys": "image"}]},
        "inferer": {"_target_": "SimpleInferer"},
    }


# ---- 1. a Spacingd switched off by "_disabled_" --------------------------------------------
def test_a_switched_off_spacingd_is_the_grid_the_bundles_data_were_already_on(tmp_path, monkeypatch):
    shapes = []
    monkeypatch.setattr(Fed, "shapes", shapes)
    folder = write_bundle(tmp_path / "zoo_det", {"_target_": f"{__name__}.Fed"}, Fed().state_dict(),
                          channel_def=TWO_CLASSES, extra_config=zoo_detection_preprocessing())
    model = load_model(folder)
    # MONAI's parser drops the step; the card still resamples to its pixdim (MONAI x, y, z -> our z, y, x)
    assert model.card.spacing == (1.25, 0.5, 0.5)
    assert "switched off" in model.card.description and "0.5, 0.5, 1.25" in model.card.description
    config = json.loads((folder / "configs" / "inference.json").read_text())
    config["whether_raw"] = True  # the step switched on: the same grid
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    assert load_model(folder).card.spacing == (1.25, 0.5, 0.5)
    # the network sees the scan on that grid: 5 mm slices become 1.25 mm ones
    volume = np.full((4, 8, 8), -850.0, np.float32)
    volume[1:3, 2:6, 2:6] = 100.0
    napari_medai.segment(volume, (5.0, 0.5, 0.5), model=model, settings=InferenceSettings(precision="fp32"))
    assert shapes and shapes[0][2] > 4 * 3  # z (MONAI's last axis) resampled to 1.25 mm, not 4 slices


def test_a_switched_off_spacingd_whose_pixdim_cannot_be_resolved_warns_that_nothing_is_resampled(tmp_path):
    folder = write_bundle(tmp_path / "zoo_det", {"_target_": f"{__name__}.Fed"}, Fed().state_dict(),
                          channel_def=TWO_CLASSES, extra_config=zoo_detection_preprocessing("$None"))
    with pytest.warns(UserWarning, match="resamples nothing"):
        model = load_model(folder)
    assert model.card.spacing is None


# ---- 5. metadata.json's channels against network_def ---------------------------------------
def test_metadata_channels_that_contradict_network_def_are_refused_when_the_bundle_loads(tmp_path):
    three = {**UNET, "out_channels": 3}
    folder = write_bundle(tmp_path / "b", three, tiny_unet(3).state_dict(), channel_def=TWO_CLASSES)
    with pytest.raises(ModelError, match=r"metadata\.json gives 2 output channel.*network_def's out_channels is 3"):
        load_model(folder)
    # channel_def alone (no num_channels) naming more channels than the network has
    names = {"0": "background", "1": "a", "2": "b", "3": "c"}
    outputs = {"pred": {"type": "image", "format": "segmentation", "channel_def": names}}
    folder = write_bundle(tmp_path / "c", UNET, tiny_unet(2).state_dict(), outputs=outputs)
    with pytest.raises(ModelError, match=r"metadata\.json names 4 output channels.*network_def's out_channels is 2"):
        load_model(folder)


def test_a_one_channel_bundle_may_name_its_background(tmp_path):
    one = {**UNET, "out_channels": 1}
    outputs = {"pred": {"type": "image", "format": "segmentation", "channel_def": {"0": "background", "1": "spleen"}}}
    folder = write_bundle(tmp_path / "spleen", one, tiny_unet(1).state_dict(), outputs=outputs)
    assert load_model(folder).card.out_channels == 1


# ---- 6. a denoising bundle -----------------------------------------------------------------
def test_a_denoising_bundle_is_told_how_a_denoiser_is_brought(tmp_path):
    folder = write_bundle(tmp_path / "den", UNET, tiny_unet(2).state_dict(), channel_def=TWO_CLASSES,
                          task="CT image denoising")
    with pytest.raises(ModelError, match=r"only as segmentation models or box detectors.*model card"):
        napari_medai.denoise(np.linspace(-1000, 400, 2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16),
                             (1.0, 1.0, 1.0), model=str(folder))


# ---- 3. weights that do not load -----------------------------------------------------------
def _bundle_with_weights(tmp_path, weights) -> object:
    folder = write_bundle(tmp_path / "w", UNET, tiny_unet().state_dict(), channel_def=TWO_CLASSES)
    if isinstance(weights, bytes):
        (folder / "models" / "model.pt").write_bytes(weights)
    else:
        torch.save(weights, folder / "models" / "model.pt")
    return folder


def _message(folder) -> str:
    with pytest.raises(ModelError) as caught:
        load_model(folder)
    text = str(caught.value)
    assert "\x1b" not in text and "\n" not in text  # one line, no terminal escape codes
    return text


def test_weights_of_another_network_say_which_keys_do_not_fit(tmp_path):
    text = _message(_bundle_with_weights(tmp_path, tiny_unet(channels=(8, 16)).state_dict()))
    assert "does not fit network_def's UNet" in text
    assert "tensor(s) of another size (e.g. 'model." in text and "in the file" in text and "in the network" in text


def test_a_lightning_checkpoint_names_the_prefix_it_did_not_strip(tmp_path):
    state = {"state_dict": {"model." + k: v for k, v in tiny_unet().state_dict().items()}, "epoch": 5}
    text = _message(_bundle_with_weights(tmp_path, state))
    assert "key(s) missing from the file (e.g. 'model." in text
    assert "unexpected key(s) in it (e.g. 'model.model." in text
    assert "extra leading 'model.'" in text


def test_a_pickled_network_is_refused_with_what_to_save_instead(tmp_path):
    text = _message(_bundle_with_weights(tmp_path, tiny_unet()))  # torch.save(net)
    assert "holds a pickled network object (UNet), not a state_dict: save net.state_dict()" in text


def test_truncated_and_foreign_weight_files(tmp_path):
    whole = tmp_path / "whole.pt"
    torch.save(tiny_unet().state_dict(), whole)
    data = whole.read_bytes()
    assert "is damaged or truncated" in _message(_bundle_with_weights(tmp_path / "t", data[: len(data) // 2]))
    assert "is not a PyTorch weights file" in _message(_bundle_with_weights(tmp_path / "n", b"my notes\n"))


def _damaged_index(data: bytes) -> bytes:
    """A zip whose central directory is damaged: zipfile still calls it a zip, then cannot read it."""
    at = data.find(b"PK\x01\x02")
    return data[:at] + b"XX\x01\x02" + data[at + 4:]


def test_weights_whose_zip_index_is_damaged_are_called_damaged_not_a_raw_badzipfile(tmp_path):
    """zipfile.is_zipfile passed such a file and reading its names raised BadZipFile, a traceback
    (an audit helper's finding), for a bundle's state dict and for a TorchScript file alike."""
    whole = tmp_path / "whole.pt"
    torch.save(tiny_unet().state_dict(), whole)
    damaged = _damaged_index(whole.read_bytes())
    assert "is damaged or truncated" in _message(_bundle_with_weights(tmp_path / "d", damaged))
    script = tmp_path / "whole.ts"
    torch.jit.save(torch.jit.script(tiny_unet()), str(script))
    assert "is damaged or truncated" in _message(_bundle_with_weights(tmp_path / "s", _damaged_index(script.read_bytes())))


def test_a_cards_weights_of_another_network_get_the_same_sentence(tmp_path):
    card = ModelCard(name="mine", roi_size=(16, 16, 16), out_channels=2, weights="mine.pt",
                     network={"name": "UNet", "kwargs": {"channels": [4, 8], "strides": [2], "num_res_units": 0}})
    torch.save(tiny_unet(channels=(8, 16)).state_dict(), tmp_path / "mine.pt")
    path = save_card(card, tmp_path / "mine.json")
    with pytest.raises(ModelError, match=r"do not fit the network in its card: \d+ tensor\(s\) of another size"):
        load_model(path)



def test_a_cards_pickled_or_truncated_weights_file_gets_one_sentence(tmp_path):
    """A card's own weights file goes through registry.load_state_dict, which printed torch's whole
    weights_only text (terminal escape codes included) or a bare "[Errno 22] Invalid argument"."""
    card = ModelCard(name="mine", roi_size=(16, 16, 16), out_channels=2, weights="mine.pt",
                     network={"name": "UNet", "kwargs": {"channels": [4, 8], "strides": [2], "num_res_units": 0}})
    path = save_card(card, tmp_path / "mine.json")
    torch.save(tiny_unet(), tmp_path / "mine.pt")  # the network object, not its state_dict
    with pytest.raises(ModelError) as pickled:
        load_model(path)
    assert "its weights file mine.pt holds a pickled network object (UNet)" in str(pickled.value)
    assert "\x1b" not in str(pickled.value)
    torch.save(tiny_unet().state_dict(), tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "mine.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="its weights file mine.pt is damaged or truncated"):
        load_model(path)


# ---- the trust warning, once -----------------------------------------------------------------
def test_the_trust_warning_is_given_once_and_names_the_bundle(tmp_path, caplog):
    folder = write_bundle(tmp_path / "b", UNET, tiny_unet().state_dict(), channel_def=TWO_CLASSES)
    with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        load_model(folder)
    trust = [w for w in seen if issubclass(w.category, BundleTrustWarning)]
    assert len(trust) == 1 and trust[0].filename == str(folder)
    assert not [r for r in caplog.records if "execute Python code" in r.getMessage()]  # not a second time
