"""Tiny networks and cards for engine tests (all run in well under a second)."""

import torch
from torch import nn

from napari_medai.models.card import ModelCard
from napari_medai.models.loading import LoadedModel


class Pointwise(nn.Module):
    """A per-voxel non-linear network: sliding-window stitching cannot change its output,
    so any misplaced, missing or mis-weighted window shows up as a difference."""

    def __init__(self, dims=3, out_channels=2, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.net = nn.Sequential(conv(1, 8, 1), nn.Tanh(), conv(8, out_channels, 1))

    def forward(self, x):
        return self.net(x)


class Identity(nn.Module):
    """Returns its input: shows where the engine's resampling and re-orientation put voxels."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * 1.0


class Counting(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.windows = 0
        self.shapes = []

    def forward(self, x):
        self.calls += 1
        self.windows += x.shape[0]
        self.shapes.append(tuple(x.shape))
        return self.inner(x)


def make_model(network, **card_fields) -> LoadedModel:
    fields = dict(name="tiny", roi_size=(16, 16, 16), out_channels=2, output="softmax")
    fields.update(card_fields)
    return LoadedModel(ModelCard(**fields), network.eval())
