"""Networks for GAN denoising: a residual generator and a patch discriminator, both from MONAI.

The generator predicts the noise and subtracts it (output = input - f(input)).  The layer that
produces f is a 1x1 convolution initialised to zero, so an untrained generator is the identity:
training starts from "leave the image alone" instead of from a random image, which is what made
the adversarial training stable on this data (see docs/denoising.md).
"""

from __future__ import annotations

import torch
from torch import nn

# Default generator: 4-level 2D MONAI UNet, 0.2 M parameters.  Small on purpose: a 512x512 CT
# slice must denoise in well under the time scikit-image's non-local means needs (benchmark goal).
# With MONAI's UNet a first stride of 2 leaves no layer at the image's own grid: the noise, a
# per-pixel pattern, is estimated from half-resolution features.  A first stride of 1 keeps a
# level there: +0.2 to +0.8 dB on the CT benchmark, but 3x the time, which breaks the
# 5x-faster-than-NLM goal, so it is a variant (``medai train denoising --first-stride 1``), not the
# default (docs/denoising.md).
GENERATOR_KWARGS = {
    "spatial_dims": 2,
    "channels": [16, 32, 64, 128],
    "strides": [2, 2, 2],
    "num_res_units": 1,
    "features": 16,
}


class ResidualDenoiser(nn.Module):
    """``output = centre - head(UNet(input))`` with a zero-initialised 1x1 ``head``.

    ``in_channels`` > 1 (odd) makes it 2.5D: the input holds the slice and its neighbours
    (z-k..z+k as channels) and the output is the denoised centre slice.

    ``head_channels`` > 0 puts one 3x3 convolution at full resolution before the head, over the
    UNet's features and the input itself.  With strides 2-2-2 no UNet layer sees the input at its
    own grid, so this is the only place the per-pixel noise pattern is read at full resolution;
    it costs 1.2-1.8 times the default's time per slice, where a full-resolution UNet level (first
    stride 1) costs 3-4.6 times (docs/denoising.md).
    """

    def __init__(self, spatial_dims=2, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1, features=16,
                 in_channels=1, head_channels=0):
        super().__init__()
        from monai.networks.nets import UNet

        if in_channels % 2 != 1:
            raise ValueError(f"in_channels must be odd (a slice and its neighbours), got {in_channels}")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.centre = in_channels // 2
        self.body = UNet(spatial_dims, in_channels, features, tuple(channels), tuple(strides),
                         num_res_units=num_res_units)
        self.act = nn.PReLU()
        # None registers nothing: generators without it keep their state-dict keys
        self.fuse = None
        if head_channels:
            self.fuse = nn.Sequential(conv(features + in_channels, head_channels, kernel_size=3, padding=1), nn.PReLU())
        self.head = conv(head_channels or features, 1, kernel_size=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # Inputs must be divisible by this (one halving per stride).
        self.size_multiple = int(torch.tensor(list(strides)).prod().item())

    def noise(self, x: torch.Tensor) -> torch.Tensor:
        """The noise estimate f(x) that the generator removes."""
        features = self.act(self.body(x))
        if self.fuse is not None:
            features = self.fuse(torch.cat([features, x], dim=1))
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.centre : self.centre + 1] - self.noise(x)


def build_generator(**kwargs) -> ResidualDenoiser:
    """Generator with :data:`GENERATOR_KWARGS` overridden by ``kwargs``."""
    return ResidualDenoiser(**{**GENERATOR_KWARGS, **kwargs})


def build_discriminator(spatial_dims: int = 2, channels: int = 32, num_layers_d: int = 3) -> nn.Module:
    """MONAI PatchDiscriminator; its forward returns a list of features whose last item is the logits."""
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(
        spatial_dims=spatial_dims, num_layers_d=num_layers_d, channels=channels, in_channels=1, out_channels=1
    )
