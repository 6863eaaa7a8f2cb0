"""Plain TorchScript files: one output channel is a sigmoid map, and a file written with
MONAI's save_net_with_metadata gives its dimensions and window through ``spatial_shape``."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

import napari_medai
from napari_medai.inference import InferenceSettings
from napari_medai.models.loading import load_model

FP32 = InferenceSettings(precision="fp32")


class Logit(nn.Module):
    """One channel: a logit that is positive only above 0 HU."""

    def forward(self, x):
        return x / 100.0


class Conv2d(nn.Module):
    """A 2D network: fails on 5D (3D) inputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, x):
        return self.conv(x)


def _script(network):
    with warnings.catch_warnings():  # torch flags torch.jit.script as deprecated
        warnings.simplefilter("ignore")
        return torch.jit.script(network.eval())


def test_a_one_channel_torchscript_is_a_sigmoid_map(tmp_path):
    path = tmp_path / "binary.ts"
    torch.jit.save(_script(Logit()), str(path))
    model = load_model(path)
    assert model.card.out_channels == 1 and model.card.output == "sigmoid"
    volume = np.full((6, 12, 10), -850.0, np.float32)
    volume[2:5, 3:9, 4:8] = 100.0
    result = napari_medai.segment(volume, (1.0, 1.0, 1.0), model=model, settings=FP32)
    np.testing.assert_array_equal(result.labels, volume > 0)  # not every voxel


def test_a_two_channel_torchscript_stays_softmax(tmp_path):
    path = tmp_path / "two.ts"
    torch.jit.save(_script(nn.Conv3d(1, 2, 1)), str(path))
    assert load_model(path).card.output == "softmax"


class WindowOf16x24(nn.Module):
    """A 2D network that runs only on the window its metadata declares."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, x):
        if x.shape[2] != 16 or x.shape[3] != 24:
            raise RuntimeError("this network takes 16 x 24 windows")
        return self.conv(x)


def test_a_2d_torchscript_with_monai_metadata_is_2d(tmp_path):
    from monai.data import save_net_with_metadata

    meta = {"name": "tiny2d", "network_data_format": {
        "inputs": {"image": {"num_channels": 1, "spatial_shape": [16, 24]}},
        "outputs": {"pred": {"num_channels": 2, "channel_def": {"0": "background", "1": "organ"}}}}}
    save_net_with_metadata(_script(WindowOf16x24()), str(tmp_path / "tiny2d"), meta_values=meta)
    model = load_model(tmp_path / "tiny2d.ts")
    assert model.card.spatial_dims == 2
    # the network's own axis order, fed as it is: it refuses any other window
    assert model.card.roi_size == (16, 24) and model.card.axes == "SPL"
    volume = np.random.default_rng(0).normal(size=(3, 20, 30)).astype(np.float32)
    result = napari_medai.segment(volume, (1.0, 1.0, 1.0), model=model, settings=FP32)
    assert result.labels.shape == volume.shape


def test_a_plain_2d_torchscript_runs_slice_by_slice(tmp_path):
    # no metadata: its Conv2d says 2D, as a bundle's network does (bundle.network_spatial_dims);
    # it was probed as 3D and refused with "give in_channels/spatial_dims/roi_size"
    path = tmp_path / "plain2d.ts"
    torch.jit.save(_script(Conv2d()), str(path))
    model = load_model(path)
    assert model.card.spatial_dims == 2 and model.card.roi_size == (256, 256) and model.card.out_channels == 2
    volume = np.random.default_rng(0).normal(size=(3, 20, 30)).astype(np.float32)
    result = napari_medai.segment(volume, (1.0, 1.0, 1.0), model=model, settings=FP32)
    assert result.labels.shape == volume.shape


class SlicesOnly(nn.Module):
    """A 2D network without a convolution to tell it: runs only on (batch, channels, y, x)."""

    def forward(self, x):
        if x.dim() != 4:
            raise RuntimeError("this network takes (batch, channels, y, x)")
        return torch.cat([torch.zeros_like(x), x], dim=1)


def test_a_torchscript_that_cannot_be_probed_says_what_to_do_and_a_card_beside_it_runs_it(tmp_path):
    import json

    import pytest

    from napari_medai.errors import ModelError

    path = tmp_path / "slices.ts"
    torch.jit.save(_script(SlicesOnly()), str(path))
    with pytest.raises(ModelError, match=r"write a model card beside it \(slices\.json with \"weights\": "
                                         r"\"slices\.ts\".*save_net_with_metadata") as caught:
        load_model(path)
    assert "give in_channels" not in str(caught.value)  # nothing on the CLI or in the widget gives them
    card = {"name": "slices", "task": "segmentation", "spatial_dims": 2, "roi_size": [16, 16], "out_channels": 2,
            "classes": [{"index": 0, "name": "background"}, {"index": 1, "name": "organ"}], "weights": "slices.ts"}
    (tmp_path / "slices.json").write_text(json.dumps(card))
    model = load_model(path)  # the file, as the CLI's --model and the widget's Load model file give it
    assert model.card.name == "slices" and model.card.spatial_dims == 2
    volume = np.random.default_rng(0).normal(size=(3, 20, 30)).astype(np.float32)
    labels = napari_medai.segment(volume, (1.0, 1.0, 1.0), model=model, settings=FP32).labels
    np.testing.assert_array_equal(labels, volume > 0)


def test_metadata_that_is_json_but_no_mapping_is_read_as_none(tmp_path):
    import json

    from napari_medai.models.bundle import bundle_task

    net = torch.jit.script(nn.Conv3d(1, 2, 3, padding=1))
    for i, meta in enumerate(("[1]", json.dumps({"network_data_format": {"inputs": [1]}}),
                              json.dumps({"network_data_format": "x"}))):
        path = tmp_path / f"m{i}.ts"  # each raised AttributeError ('list' object has no attribute 'get')
        torch.jit.save(net, str(path), _extra_files={"metadata.json": meta})
        assert load_model(path).card.out_channels == 2
    assert bundle_task({"network_data_format": {"outputs": [1, 2]}}) == "segmentation"


def test_a_damaged_torchscript_is_called_damaged_and_a_cards_sha256_is_checked_first(tmp_path):
    """An audit helper's findings: a card (no network) over a cut-off .ts said "the card's network
    needs a 'name'", its sha256 never checked; the file given alone was "not a model file"."""
    import hashlib
    import json

    import pytest

    from napari_medai.errors import ModelError

    path = tmp_path / "m.ts"
    torch.jit.save(_script(Conv2d()), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"m\.ts is no TorchScript model: it is damaged or truncated"):
        load_model(path)
    card = {"name": "m", "weights": "m.ts", "spatial_dims": 2, "roi_size": [16, 16]}
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"names no network, so its weights file m\.ts must be a TorchScript "
                                         r"model, but it is damaged or truncated"):
        load_model(tmp_path / "m.json")
    card["sha256"] = hashlib.sha256(data).hexdigest()
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"\(m\.ts\) are corrupted or were replaced: their sha256 does not match"):
        load_model(tmp_path / "m.json")
