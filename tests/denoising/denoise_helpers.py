"""Builds a tiny denoising model (zero-initialised residual generator) saved like a built-in."""

from __future__ import annotations

TINY_KWARGS = {"channels": [4, 8], "strides": [2], "num_res_units": 0, "features": 4}


def make_tiny_card(folder, modality="MR", head_weight=0.0, in_channels=1, kwargs=None, spatial_dims=2):
    """Save a tiny ResidualDenoiser as a built-in-style model in ``folder``; return the card path.

    ``head_weight`` != 0 makes the generator change its input (a zero head is the identity);
    ``kwargs`` replaces ``TINY_KWARGS`` (e.g. the built-ins' three halvings); ``spatial_dims`` 3
    makes a 3D generator.
    """
    kwargs = kwargs or TINY_KWARGS
    import torch

    from napari_medai.models.card import ModelCard
    from napari_medai.models.denoising_nets import build_generator
    from napari_medai.models.registry import save_builtin

    torch.manual_seed(0)
    net = build_generator(**kwargs, in_channels=in_channels, spatial_dims=spatial_dims)
    torch.nn.init.constant_(net.head.weight, head_weight)
    intensity = (
        {"kind": "ct_window", "a_min": -1000, "a_max": 1000, "b_min": 0, "b_max": 1, "clip": False}
        if modality == "CT" else {"kind": "percentile", "lower": 0.0, "upper": 99.0, "b_min": 0, "b_max": 1}
    )
    card = ModelCard(
        name=f"tiny-{modality.lower()}-denoiser", task="denoising", modality=modality, spatial_dims=spatial_dims,
        roi_size=(32,) * spatial_dims, in_channels=in_channels, out_channels=1, intensity=intensity, output="identity",
        network={"name": "napari_medai.models.denoising_nets.ResidualDenoiser", "kwargs": kwargs},
    )
    return save_builtin(card, net, folder=folder)
