"""A training run's files given as a model: best.pt/best.json run, a card may name last.pt, and
the run's folder, last.pt or training.json are refused with the run's best.pt named."""

import json

import pytest
import torch

from napari_medai.errors import ModelError
from napari_medai.models.card import save_card
from napari_medai.models.loading import load_model
from napari_medai.training.segmentation import SegTrainConfig, build_unet, make_card


@pytest.fixture
def run(tmp_path):
    """What `medai train segmentation --out run` leaves, with a tiny UNet."""
    cfg = SegTrainConfig(data="data", out=str(tmp_path / "run"), roi=(8, 16, 16), channels=(4, 8), strides=(2,),
                         num_res_units=0)
    folder = tmp_path / "run"
    folder.mkdir()
    torch.manual_seed(0)
    best, last = build_unet(cfg).state_dict(), build_unet(cfg).state_dict()
    torch.save(best, folder / "best.pt")
    card = make_card(cfg, "run")
    card.weights = "best.pt"
    save_card(card, folder / "best.json")
    torch.save({"net": last, "opt": {}, "sched": {}, "epoch": 0, "best": 0.5, "history": [],
                "torch_rng": torch.get_rng_state(), "settings": {"data": "data"}}, folder / "last.pt")
    (folder / "training.json").write_text(json.dumps({"history": [], "best_score": 0.5, "n_train": 2}))
    card.name, card.weights = "run-last", "last.pt"
    save_card(card, folder / "last_card.json")
    return folder, last


def test_a_card_naming_a_runs_last_pt_loads_its_network(run):
    folder, last = run
    loaded = load_model(folder / "last_card.json")  # the trainer keeps the weights under "net"
    assert all(torch.equal(loaded.network.state_dict()[k], v) for k, v in last.items())


@pytest.mark.parametrize("given", ["", "last.pt", "training.json"], ids=["folder", "last.pt", "training.json"])
def test_a_runs_folder_last_pt_or_training_json_names_the_runs_best_pt(run, given):
    folder, _ = run
    with pytest.raises(ModelError, match=rf"training run's .*pass {folder / 'best.pt'} \(or its card "):
        load_model(folder / given if given else folder)
