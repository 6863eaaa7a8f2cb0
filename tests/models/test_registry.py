"""Built-in registry: listing, installed-or-not, sha256 verification."""

import numpy as np
import pytest
import torch

from napari_medai.errors import MedaiError, ModelError
from napari_medai.models import registry
from napari_medai.models.card import ModelCard
from napari_medai.models.loading import load_model
from napari_medai.models.networks import build_network


def tiny_card(name="tiny_seg", task="segmentation", **kw) -> ModelCard:
    return ModelCard(name=name, task=task, roi_size=(16, 16, 16), out_channels=2,
                     network={"name": "UNet", "kwargs": {"channels": [4, 8], "strides": [2]}}, **kw)


@pytest.fixture
def installed(tmp_path):
    torch.manual_seed(0)
    card = tiny_card()
    network = build_network(card)
    registry.save_builtin(card, network, folder=tmp_path)
    registry.save_builtin(tiny_card("tiny_denoise", task="denoising", output="identity"),
                          build_network(tiny_card()), folder=tmp_path)
    return tmp_path, network


def test_list_and_get(installed):
    folder, _ = installed
    assert [c.name for c in registry.list_models(folder=folder)] == ["tiny_denoise", "tiny_seg"]
    assert [c.name for c in registry.list_models("denoising", folder=folder)] == ["tiny_denoise"]
    card = registry.get_card("tiny_seg", folder=folder)
    assert card.sha256 == registry.sha256_of(folder / "tiny_seg.pt")
    with pytest.raises(ModelError, match=r"no built-in model called 'lungz'.*tiny_denoise, tiny_seg"):
        registry.get_card("lungz", folder=folder)


def test_loaded_weights_are_the_saved_ones(installed):
    folder, network = installed
    model = load_model(folder / "tiny_seg.json")
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():
        np.testing.assert_array_equal(model.network(x).numpy(), network.eval()(x).numpy())
    # the .pt beside its card also loads through the card
    assert load_model(folder / "tiny_seg.pt").card.name == "tiny_seg"


def test_missing_weights_say_not_installed(installed):
    folder, _ = installed
    (folder / "tiny_seg.pt").unlink()
    with pytest.raises(ModelError, match="'tiny_seg' is not installed yet"):
        load_model(folder / "tiny_seg.json")


def test_sha256_mismatch_is_refused(installed):
    folder, _ = installed
    weights = folder / "tiny_seg.pt"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupted"):
        load_model(folder / "tiny_seg.json")


def test_weights_of_another_architecture(installed):
    folder, _ = installed
    card = registry.get_card("tiny_seg", folder=folder)
    card.network = {"name": "UNet", "kwargs": {"channels": [8, 16], "strides": [2]}}
    with pytest.raises(ModelError, match="do not fit the network"):
        load_model(card)


def test_shipped_cards_parse_and_installed_weights_match_their_sha256():
    # Every shipped card's weights ship with it, and are the ones the card describes.
    cards = registry.list_models()
    assert {"chest-ct-lung-nodule", "lung-nodule-detection", "ct-lowdose-denoising", "mr-denoising"} <= {
        card.name for card in cards}
    for card in cards:
        assert card.weights, card.name
        path = card.weights_path()
        assert path.is_file(), f"{card.name}: {path} is missing"
        assert registry.sha256_of(path) == card.sha256, card.name



def test_an_install_cut_off_midway_leaves_the_installed_weights_whole(installed, monkeypatch):
    """save_builtin wrote <name>.pt in place: a kill mid-write left cut-off weights under the old card."""
    folder, network = installed
    weights = folder / "tiny_seg.pt"
    before = weights.read_bytes()
    real_save = torch.save

    def cut_off(obj, f, *args, **kwargs):  # part of the file lands, then the disk is full
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as fh:
            fh.truncate(100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", cut_off)
    with pytest.raises((OSError, MedaiError)):
        registry.save_builtin(tiny_card(), build_network(tiny_card()), folder=folder)
    monkeypatch.undo()
    assert weights.read_bytes() == before
    assert load_model(str(folder / "tiny_seg.json")).card.name == "tiny_seg"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


def test_an_install_whose_card_cannot_be_written_leaves_the_earlier_weights_and_card(installed, full_disk):
    """A full disk at the card (written after the weights) left the new weights under the old
    card, whose sha256 they failed: the installed model stopped loading."""
    folder, _ = installed
    before = {name: (folder / name).read_bytes() for name in ("tiny_seg.pt", "tiny_seg.json")}
    torch.manual_seed(1)  # other weights
    full_disk("tiny_seg.json")
    with pytest.raises(MedaiError, match=f"cannot write {folder / 'tiny_seg.json'}: .*No space left on device"):
        registry.save_builtin(tiny_card(), build_network(tiny_card()), folder=folder)
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert load_model(str(folder / "tiny_seg.json")).card.name == "tiny_seg"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []
