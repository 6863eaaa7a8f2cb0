"""Sigmoid (multi-label) outputs as label maps: label k + 1 is channel k, 0 is background where
no channel reaches 0.5, and the smallest region wins where several do; one-channel models name
their foreground as label 1 (volumes, ``medai evaluate``)."""

from __future__ import annotations

import numpy as np
import pytest
from fixed_rule_models import CT_WINDOW, unit
from torch import nn

from napari_medai.api import finish_segmentation, first_segmentation
from napari_medai.models import LoadedModel
from napari_medai.models.card import ModelCard


def sigmoid_card(out_channels: int, classes=(), **extra) -> ModelCard:
    return ModelCard(name="multi-label", modality="CT", roi_size=(8, 16, 16), out_channels=out_channels,
                     output="sigmoid", classes=[dict(c) for c in classes], intensity=dict(CT_WINDOW),
                     extra=dict(extra))


def nested_probs(order=(0, 1, 2)) -> tuple[np.ndarray, np.ndarray]:
    """Tumour core, whole tumour, enhancing tumour (BraTS order, or ``order``'s permutation of
    it) as probabilities, and the labels they should give (channel index + 1, innermost wins)."""
    wt = np.zeros((6, 10, 10), np.float32)
    wt[1:5, 1:9, 1:9] = 0.9
    tc = np.where(np.pad(np.ones((2, 6, 6)), ((2, 2), (2, 2), (2, 2))) > 0, 0.8, 0.1).astype(np.float32)
    et = np.zeros_like(wt)
    et[2:4, 4:6, 4:6] = 0.7
    channels = [tc, wt, et]
    probs = np.stack([channels[i] for i in order])
    label_of = {i: order.index(i) + 1 for i in range(3)}  # channel of region i, plus one
    expected = np.select([et >= 0.5, tc >= 0.5, wt >= 0.5], [label_of[2], label_of[0], label_of[1]], 0)
    return probs, expected


@pytest.mark.parametrize("order", [(0, 1, 2), (1, 0, 2), (2, 0, 1)])
def test_sigmoid_channels_give_background_and_their_innermost_region(order):
    probs, expected = nested_probs(order)
    labels, lesion = first_segmentation(sigmoid_card(3), probs)
    assert labels.dtype == np.uint8 and lesion is None
    np.testing.assert_array_equal(labels, expected)
    assert (labels[probs.max(0) < 0.5] == 0).all()  # no channel fires: background, not an argmax


def test_a_one_channel_lesion_label_reads_channel_zero():
    probs = np.zeros((1, 4, 4, 4), np.float32)
    probs[0, 1:3, 1:3, 1:3] = 0.8
    labels, lesion = first_segmentation(sigmoid_card(1, lesions=[1]), probs)
    np.testing.assert_array_equal(labels, probs[0] >= 0.5)
    np.testing.assert_array_equal(lesion, probs[0])


@pytest.mark.parametrize("classes, names", [
    ([{"index": 0, "name": "spleen"}], {0: "background", 1: "spleen"}),  # a channel name
    ([], {0: "background", 1: "class 1"}),
    ([{"index": 0, "name": "background"}, {"index": 1, "name": "spleen"}], {0: "background", 1: "spleen"}),
])
def test_a_one_channel_model_names_its_foreground_label_one(classes, names):
    card = sigmoid_card(1, classes)
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    result = finish_segmentation(LoadedModel(card, nn.Identity()), (labels, None), labels.astype(np.float32),
                                 (1.0, 1.0, 1.0), postprocess=False)
    assert {i: c["name"] for i, c in result.classes.items()} == names
    assert [(v["index"], v["name"]) for v in result.volumes] == [(1, names[1])]


class AboveZeroHU(nn.Module):
    def forward(self, x):
        return 100.0 * (x[:, :1] - unit(0.0))


def test_medai_evaluate_scores_a_one_channel_model(tmp_path):
    from napari_medai.evaluation import evaluate_segmentation
    from napari_medai.io import write_volume

    volume = np.full((8, 16, 16), -850.0, np.float32)
    volume[2:6, 4:12, 4:10] = 60.0
    write_volume(volume, tmp_path / "a_image.nii.gz", modality="CT")
    write_volume((volume > 0).astype(np.uint8), tmp_path / "a_label.nii.gz", is_labels=True)
    model = LoadedModel(sigmoid_card(1, [{"index": 0, "name": "spleen"}]), AboveZeroHU())
    rows = evaluate_segmentation([(tmp_path / "a_image.nii.gz", tmp_path / "a_label.nii.gz")], [model])
    assert [(r["class"], r["dice"]) for r in rows] == [("spleen", 1.0)]


def test_a_sigmoid_table_naming_channel_0_background_keeps_channels_as_labels():
    probs = np.zeros((2, 4, 6, 6), np.float32)
    probs[0] = 0.9  # a background channel: everywhere but the tumour
    probs[1, 1:3, 2:4, 2:4], probs[0, 1:3, 2:4, 2:4] = 0.8, 0.1
    card = sigmoid_card(2, [{"index": 0, "name": "background"}, {"index": 1, "name": "tumour"}], lesions=[1])
    labels, lesion = first_segmentation(card, probs)
    # the tumour is label 1, as the table names it; the background channel draws nothing
    np.testing.assert_array_equal(labels, (probs[1] >= 0.5).astype(np.uint8))
    np.testing.assert_array_equal(lesion, probs[1])  # lesion label 1 reads the tumour's channel
