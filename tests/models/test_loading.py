"""load_model on files that are, and are not, models; TorchScript with and without a card."""

import numpy as np
import pytest
import torch
from monai.data import save_net_with_metadata
from monai.networks.nets import UNet

from napari_medai.errors import ModelError
from napari_medai.inference import InferenceSettings, run_model
from napari_medai.models.card import ModelCard
from napari_medai.models.loading import load_model
from napari_medai.models.networks import build_network
from napari_medai.models.torchscript import save_torchscript


pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")


def tiny_unet():
    torch.manual_seed(0)
    return UNet(3, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0).eval()


# Seeded noise, and ids that are only the file names: random bytes in a test id made each
# pytest-xdist worker collect a different test, so `pytest -n` refused to run the suite.
@pytest.mark.parametrize("name, content", [
    ("notes.pt", b"these are my notes, not a model\n"),
    ("model.ts", np.random.default_rng(0).bytes(4096)),
    ("model.pth", b""),
], ids=["notes.pt", "random-bytes.ts", "empty.pth"])
def test_a_file_that_is_not_a_model(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ModelError, match=f"{name} is not a model file"):
        load_model(path)


def test_a_state_dict_without_a_card(tmp_path):
    torch.save(tiny_unet().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ModelError, match="holds only weights"):
        load_model(tmp_path / "weights.pt")


def test_missing_paths_and_folders_that_are_not_bundles(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nothing.ts")
    with pytest.raises(ModelError, match="not a MONAI bundle"):
        load_model(tmp_path)
    with pytest.raises(ModelError, match="no built-in model called 'nonexistent_model'"):
        load_model("nonexistent_model")


def test_torchscript_with_its_card_inside(tmp_path, small_ct):
    network = tiny_unet()
    card = ModelCard(name="ts_seg", roi_size=(16, 16, 16), spacing=(1.0, 1.0, 1.0),
                     classes=[{"index": 0, "name": "background"}, {"index": 1, "name": "tissue"}],
                     intensity={"kind": "ct_window", "a_min": -1000, "a_max": 400, "b_min": 0, "b_max": 1})
    path = save_torchscript(network, card, tmp_path / "ts_seg.pt")
    loaded = load_model(path)
    assert loaded.card.name == "ts_seg" and loaded.card.intensity == card.intensity
    assert loaded.card.class_names == {0: "background", 1: "tissue"}
    settings = InferenceSettings(precision="fp32")
    expected = run_model(load_model(card_model(card, network)), small_ct, (1.0, 1.0, 1.0), settings)
    np.testing.assert_allclose(run_model(loaded, small_ct, (1.0, 1.0, 1.0), settings), expected, atol=1e-5)


def card_model(card, network):
    from napari_medai.models.loading import LoadedModel

    return LoadedModel(card, network)


def test_plain_torchscript_gets_defaults_and_probed_channels(tmp_path):
    scripted = torch.jit.trace(tiny_unet(), torch.zeros(2, 1, 16, 16, 16))
    torch.jit.save(scripted, str(tmp_path / "plain.pt"))
    model = load_model(tmp_path / "plain.pt")
    assert model.card.name == "plain"
    assert model.card.out_channels == 2 and model.card.spacing is None
    assert model.card.intensity == {"kind": "none"} and model.card.output == "softmax"


def test_channels_are_probed_when_a_window_axis_spans_the_whole_image():
    from napari_medai.models.torchscript import _probe_out_channels

    # a bundle roi_size <= 0 on an axis leaves it None (the whole image): probed at 32 voxels
    assert _probe_out_channels(tiny_unet(), {"spatial_dims": 3, "roi_size": (None, 16, 16)}) == 2


def test_torchscript_exported_from_a_bundle_reads_its_metadata(tmp_path):
    scripted = torch.jit.trace(tiny_unet(), torch.zeros(2, 1, 16, 16, 16))
    meta = {"name": "spleen", "network_data_format": {
        "inputs": {"image": {"modality": "CT", "num_channels": 1}},
        "outputs": {"pred": {"num_channels": 2, "channel_def": {"0": "background", "1": "spleen"}}}}}
    save_net_with_metadata(scripted, str(tmp_path / "spleen.ts"), meta_values=meta)
    card = load_model(tmp_path / "spleen.ts").card
    assert card.name == "spleen" and card.modality == "CT"
    assert card.class_names == {0: "background", 1: "spleen"}


def test_network_builder_errors():
    base = dict(name="x", roi_size=(16, 16, 16))
    with pytest.raises(ModelError, match="no network called 'UNett'"):
        build_network(ModelCard(**base, network={"name": "UNett"}))
    with pytest.raises(ModelError, match="contradicts the card's in_channels=1"):
        build_network(ModelCard(**base, network={"name": "UNet", "kwargs": {
            "in_channels": 3, "channels": [4, 8], "strides": [2]}}))
    with pytest.raises(ModelError, match="cannot build network UNet"):
        build_network(ModelCard(**base, network={"name": "UNet", "kwargs": {"channels": [4, 8]}}))
    dotted = build_network(ModelCard(**base, network={
        "name": "monai.networks.nets.BasicUNet", "kwargs": {"features": [4, 4, 8, 8, 16, 4]}}))
    assert type(dotted).__name__ == "BasicUNet"


@pytest.mark.parametrize("name", ["subprocess.call", "os.getcwd", "builtins.eval"])
def test_a_card_naming_a_callable_that_is_no_network_class_is_refused_without_calling_it(tmp_path, name):
    import json

    flag = tmp_path / "called"
    card = {"name": "not-a-net", "task": "segmentation", "modality": "CT", "out_channels": 2,
            "network": {"name": name, "kwargs": {"args": ["touch", str(flag)]} if name == "subprocess.call" else {}}}
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="is not a network class"):
        load_model(tmp_path / "card.json")
    assert not flag.exists()  # nothing was run


def test_a_plain_torchscript_returning_a_dict_is_refused_with_a_message(tmp_path):
    class DictOut(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": x}

    torch.jit.save(torch.jit.script(DictOut()), str(tmp_path / "dict.pt"))
    with pytest.raises(ModelError, match="returns dict, not a .batch, channels"):
        load_model(tmp_path / "dict.pt")


def test_a_package_a_card_names_is_not_imported_unless_allowed(tmp_path, monkeypatch):
    import json
    import sys

    if "tabnanny" in sys.modules:
        pytest.skip("the stand-in package is already imported here")
    card = {"name": "foreign", "task": "segmentation", "modality": "CT", "out_channels": 2,
            "network": {"name": "tabnanny.Net"}}
    (tmp_path / "card.json").write_text(json.dumps(card))
    monkeypatch.delenv("MEDAI_NETWORK_PACKAGES", raising=False)
    with pytest.raises(ModelError, match="comes from package 'tabnanny', which is not imported.*"
                                         "MEDAI_NETWORK_PACKAGES=tabnanny"):
        load_model(tmp_path / "card.json")
    assert "tabnanny" not in sys.modules  # its code did not run
    monkeypatch.setenv("MEDAI_NETWORK_PACKAGES", "other, tabnanny")
    with pytest.raises(ModelError, match="cannot import network 'tabnanny.Net'"):  # imported, and has no Net
        load_model(tmp_path / "card.json")
    assert "tabnanny" in sys.modules
    del sys.modules["tabnanny"]
