"""The family's networks: MONAI's DiffusionModelUNet (class-conditional through its
class embedding) and the judge, a small MONAI DenseNet whose pooled features are the
space the samples are measured in."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import DenseNet, DiffusionModelUNet
from torch import nn

#: a DiffusionModelUNet small enough to learn 32-pixel images on a CPU in a minute
DIFFUSION_DEFAULTS: dict[str, Any] = {
    "channels": (32, 64, 64),
    "attention_levels": (False, False, False),
    "num_res_blocks": 1,
    "norm_num_groups": 8,
}


def build_diffusion(network: dict[str, Any], n_classes: int) -> DiffusionModelUNet:
    """The denoiser of a ``ddpm`` model: one channel in and out, one class embedding per
    class (``kwargs`` override :data:`DIFFUSION_DEFAULTS`)."""
    if network["name"] != "ddpm":
        raise ValueError(f"unknown generation network {network['name']!r}; the generation networks are ['ddpm']")
    given = network.get("kwargs") or {}
    kwargs = {**DIFFUSION_DEFAULTS, **given}
    # one attention flag per level: none unless asked, whatever the number of levels
    kwargs["attention_levels"] = tuple(given.get("attention_levels") or (False,) * len(kwargs["channels"]))
    kwargs["channels"] = tuple(kwargs["channels"])
    return DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, num_class_embeds=n_classes, **kwargs)


class Judge(nn.Module):
    """A DenseNet classifier with its pooled features exposed (:meth:`embed`): the
    in-pipeline feature space of the Fréchet distance, precision and recall."""

    def __init__(self, n_classes: int, init_features: int = 16, growth_rate: int = 16, block_config=(2, 2)):
        super().__init__()
        self.net = DenseNet(
            spatial_dims=2, in_channels=1, out_channels=n_classes,
            init_features=init_features, growth_rate=growth_rate, block_config=tuple(block_config),
        )  # fmt: skip

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        features = self.net.features(x)
        # MONAI's class_layers: relu, pool, flatten, out; all but the last
        for layer in list(self.net.class_layers)[:-1]:
            features = layer(features)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.class_layers.out(self.embed(x))
