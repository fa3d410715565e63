"""Restoration networks: RED-CNN (Chen et al. 2017, IEEE TMI 36:2524), which MONAI does
not have, and MONAI's BasicUNet learning the residual (the noise) rather than the image.

Both map a one-channel image to a one-channel image of the same shape, in 2D or 3D.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.layers import Conv
from monai.networks.nets import BasicUNet
from torch import nn


class REDCNN(nn.Module):
    """Residual encoder-decoder CNN: five unpadded convolutions shrink the image, five
    transposed convolutions grow it back, and three shortcuts add the input, the
    second and the fourth encoder maps to the decoder (the paper's 96 filters of 5 pixels).
    ``final_relu`` restores the paper's last ReLU, meant for inputs scaled to [0, 1]; off
    by default, as the inputs here are centred on the display window."""

    def __init__(self, spatial_dims: int = 2, channels: int = 96, kernel_size: int = 5, final_relu: bool = False):
        super().__init__()
        conv, tconv = Conv[Conv.CONV, spatial_dims], Conv[Conv.CONVTRANS, spatial_dims]
        self.encoder = nn.ModuleList([conv(1 if i == 0 else channels, channels, kernel_size) for i in range(5)])
        self.decoder = nn.ModuleList([tconv(channels, 1 if i == 4 else channels, kernel_size) for i in range(5)])
        self.final_relu = final_relu
        #: the smallest input side: each unpadded convolution takes kernel_size - 1 pixels
        self.min_size = 5 * (kernel_size - 1) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[2:]) < self.min_size:
            raise ValueError(f"RED-CNN needs every side of its input to be at least {self.min_size} pixels, got {tuple(x.shape[2:])}")
        relu = torch.relu
        shortcut_input = x
        out = relu(self.encoder[1](relu(self.encoder[0](x))))
        shortcut_2 = out
        out = relu(self.encoder[3](relu(self.encoder[2](out))))
        shortcut_4 = out
        out = relu(self.encoder[4](out))
        out = self.decoder[0](out) + shortcut_4
        out = self.decoder[2](relu(self.decoder[1](relu(out)))) + shortcut_2
        out = self.decoder[4](relu(self.decoder[3](relu(out)))) + shortcut_input
        return relu(out) if self.final_relu else out


class ResidualUNet(nn.Module):
    """MONAI's BasicUNet predicting the correction that is added to its input. Not
    MONAI's ``UNet``: with one output channel its top layer instance-normalises that
    single channel, which pins the correction to a fixed contrast (it lost 16 dB on
    low-dose CT where this one gains)."""

    def __init__(self, spatial_dims: int = 2, features: tuple[int, ...] = (16, 16, 32, 64, 128, 16)):
        super().__init__()
        self.unet = BasicUNet(spatial_dims=spatial_dims, in_channels=1, out_channels=1, features=features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.unet(x)


RESTORATION_NETWORKS = {"redcnn": REDCNN, "unet": ResidualUNet}


def build_restoration_network(spec: dict[str, Any], spatial_dims: int = 2) -> nn.Module:
    """The network of a model's ``network: {name, kwargs}``."""
    name = spec.get("name")
    if name not in RESTORATION_NETWORKS:
        raise ValueError(f"unknown restoration network {name!r}; choose one of {sorted(RESTORATION_NETWORKS)}")
    kwargs = dict(spec.get("kwargs") or {})
    if isinstance(kwargs.get("features"), list):  # YAML gives lists; BasicUNet wants a sequence
        kwargs["features"] = tuple(kwargs["features"])
    return RESTORATION_NETWORKS[name](spatial_dims=spatial_dims, **kwargs)
