"""Model cards: JSON round trip and clear validation errors."""

import json

import pytest

from napari_medai.errors import ModelError
from napari_medai.models.card import ModelCard, load_card, save_card


def full_card(**overrides) -> ModelCard:
    fields = dict(
        name="lung_seg", task="segmentation", modality="CT", description="lungs and nodules",
        spacing=(2.0, 1.5, 1.5), roi_size=(64, 96, 96), spatial_dims=3, in_channels=1, out_channels=3,
        classes=[{"index": 0, "name": "background", "color": "#000000"},
                 {"index": 1, "name": "lung", "color": "#3cb44b"},
                 {"index": 2, "name": "nodule", "color": "#e6194b"}],
        intensity={"kind": "ct_window", "a_min": -1000, "a_max": 400, "b_min": 0, "b_max": 1, "clip": True},
        network={"name": "UNet", "kwargs": {"channels": [8, 16], "strides": [2]}},
        output="softmax", weights="lung_seg.pt", sha256="ab" * 32,
        train_command="medai train lung_seg --seed 0", training={"epochs": 10, "seeds": [0]},
        scores={"dice_nodule": 0.8}, extra={"note": "test"},
    )
    fields.update(overrides)
    return ModelCard(**fields)


def test_json_round_trip(tmp_path):
    card = full_card()
    again = ModelCard.from_json(card.to_json())
    assert again == card
    assert again.spacing == (2.0, 1.5, 1.5) and again.roi_size == (64, 96, 96)
    path = save_card(card, tmp_path / "lung_seg.json")
    loaded = load_card(path)
    assert loaded == card
    assert loaded.weights_path() == tmp_path / "lung_seg.pt"
    assert loaded.class_names == {0: "background", 1: "lung", 2: "nodule"}
    assert json.loads(path.read_text())["roi_size"] == [64, 96, 96]


def test_two_dimensional_card_takes_two_values():
    card = full_card(spatial_dims=2, spacing=(0.8, 0.8), roi_size=(256, 256))
    assert card.roi_size == (256, 256)
    with pytest.raises(ModelError, match=r"roi_size needs 2 values \(y, x\)"):
        full_card(spatial_dims=2, spacing=(0.8, 0.8), roi_size=(96, 96, 96))


@pytest.mark.parametrize("overrides, message", [
    ({"task": "registration"}, "task must be one of"),
    ({"modality": "PET"}, "modality"),
    ({"roi_size": (96, 96)}, r"roi_size needs 3 values \(z, y, x\)"),
    ({"spacing": (1.0, 0.0, 1.0)}, "spacing values must be positive"),
    ({"in_channels": 0}, "in_channels must be a positive integer"),
    ({"output": "argmax"}, "output must be one of"),
    ({"intensity": {"kind": "ct_window", "a_min": 400, "a_max": -1000, "b_min": 0, "b_max": 1}}, "a_max > a_min"),
    ({"intensity": {"kind": "ct_window", "a_min": -1000}}, "needs a number for 'a_max'"),
    ({"intensity": {"kind": "histogram"}}, "intensity.kind"),
    ({"intensity": {"kind": "ct_window", "a_min": -1000, "a_max": 400, "b_min": 1, "b_max": 1}},
     "needs b_max different from b_min, got 1 for both"),
    ({"classes": [{"index": 1, "name": "lung", "color": "green"}]}, "colour must be hex"),
    ({"classes": [{"index": 1, "name": "a"}, {"index": 1, "name": "b"}]}, "appears twice"),
    # wrong types that used to end in a Python error where they were first used
    ({"classes": [{"index": "lung", "name": "lung"}]}, "index must be a whole number 0 or more, got 'lung'"),
    ({"classes": [{"index": 1.5, "name": "lung"}]}, "index must be a whole number"),
    ({"extra": []}, "extra must be an object"),
    ({"training": "ten epochs"}, "training must be an object"),
    ({"sha256": 123}, "sha256 must be text"),
    ({"weights": 5}, "weights must be text"),
    ({"intensity": {"kind": ["ct_window"]}}, "intensity.kind must be one of"),
    ({"network": {"name": "UNet", "kwargs": [1, 2]}}, "network must be an object"),
    ({"network": {"name": 7}}, "network must be an object"),
    # an audit helper's findings: a raw ValueError, an OverflowError, a scan resampled to one slice,
    # a window read digit by digit, a fraction of a voxel cut off, a class no channel gives
    ({"spacing": (float("nan"), 1.0, 1.0)}, "spacing must be a list of finite numbers"),
    ({"spacing": (float("inf"), 1.0, 1.0)}, "spacing must be a list of finite numbers"),
    ({"roi_size": (float("inf"), 16, 16)}, "roi_size must be a list of finite numbers"),
    ({"roi_size": "96"}, "roi_size must be a list of finite numbers"),
    ({"roi_size": (16.7, 16, 16)}, "roi_size must be whole numbers of voxels"),
    ({"classes": [{"index": 0, "name": "bg"}, {"index": 5, "name": "x"}]},
     r"class index\(es\) \[5\] lie beyond the labels its 3 softmax output channel\(s\) can give \(0 to 2\)"),
])
def test_invalid_cards_raise_model_errors(overrides, message):
    with pytest.raises(ModelError, match=message):
        full_card(**overrides)


def test_a_sigmoid_cards_labels_start_at_one():
    """Channel k of a multi-label card is label k + 1: two channels name labels up to 2."""
    assert full_card(out_channels=2, output="sigmoid").class_names[2] == "nodule"
    with pytest.raises(ModelError, match=r"\(0 to 2\)"):
        full_card(out_channels=2, output="sigmoid", classes=[{"index": 3, "name": "x"}])


def test_null_stands_for_a_fields_default_and_indices_may_be_written_as_text():
    card = full_card(extra=None, scores=None, sha256=None, description=None,
                     classes=[{"index": "0", "name": "background"}, {"index": 1.0, "name": "lung"}])
    assert card.extra == {} and card.scores == {} and card.sha256 == "" and card.description == ""
    assert card.class_names == {0: "background", 1: "lung"}
    with pytest.raises(ModelError, match="index must be a whole number"):
        full_card(classes=[{"index": 10**400, "name": "huge"}, {"index": -1, "name": "negative"}][1:])


def test_bad_json_and_unknown_fields(tmp_path):
    with pytest.raises(ModelError, match="not valid JSON"):
        ModelCard.from_json("{name: lung")
    with pytest.raises(ModelError, match=r"unknown field\(s\) \['colour'\]"):
        ModelCard.from_dict({"name": "x", "colour": "red"})
    with pytest.raises(ModelError, match="does not exist"):
        load_card(tmp_path / "missing.json")


def test_a_card_file_without_a_name_is_named_after_the_file(tmp_path):
    """The docs' lists of what a card of your own needs left "name" out, and such a card was
    refused: "a model card needs a 'name'" (found by an audit helper)."""
    data = {k: v for k, v in json.loads(full_card().to_json()).items() if k != "name"}
    (tmp_path / "my_denoiser.json").write_text(json.dumps(data))
    assert load_card(tmp_path / "my_denoiser.json").name == "my_denoiser"
    (tmp_path / "named.json").write_text(json.dumps({**data, "name": "lung_seg"}))
    assert load_card(tmp_path / "named.json").name == "lung_seg"  # a card's own name stands
    with pytest.raises(ModelError, match="needs a 'name'"):  # a card given as text has no file to name it
        ModelCard.from_json(json.dumps(data))


def test_a_one_channel_card_without_an_output_is_a_sigmoid():
    """A softmax over one channel is 1 everywhere: such a card labelled every voxel, while the same
    TorchScript file without a card got sigmoid (found by an audit helper)."""
    data = {k: v for k, v in json.loads(full_card().to_json()).items() if k not in ("output", "classes")}
    assert ModelCard.from_dict({**data, "out_channels": 1}).output == "sigmoid"
    assert ModelCard.from_dict({**data, "out_channels": 1, "output": None}).output == "sigmoid"
    assert ModelCard.from_dict(data).output == "softmax"  # three channels: the default stands
    assert ModelCard.from_dict({**data, "out_channels": 1, "output": "identity"}).output == "identity"


def test_a_patch_classifier_has_one_logit():
    """A two-logit (softmax) classifier card was accepted and scored by its "not lesion" logit
    (found by an audit helper)."""
    with pytest.raises(ModelError, match="one logit per patch"):
        full_card(task="classification", out_channels=2, classes=[])
    assert full_card(task="classification", out_channels=1, classes=[], output="sigmoid").out_channels == 1


def test_a_write_cut_off_midway_leaves_the_previous_card_whole(tmp_path, monkeypatch):
    """A kill or a full disk while a card was written in place left half a card that no longer loaded."""
    import errno
    import pathlib

    from napari_medai.errors import InputError

    path = save_card(full_card(), tmp_path / "lung_seg.json")
    before = path.read_text()

    def disk_full(self, text, *args, **kwargs):  # half the text lands, then the disk is full
        with open(self, "w", encoding="utf-8") as fh:
            fh.write(text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", disk_full)
    with pytest.raises((InputError, OSError)):
        save_card(full_card(description="refitted"), path)
    monkeypatch.undo()
    assert path.read_text() == before and load_card(path) == full_card()
    assert [p.name for p in tmp_path.iterdir()] == ["lung_seg.json"]  # no temporary file left
