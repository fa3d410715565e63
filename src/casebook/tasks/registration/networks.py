"""The registration networks, MONAI's, behind one interface: ``forward(moving, fixed)``
returns the field (N, 2, rows, columns; pixels, :mod:`.fields` convention).

* ``voxelmorph``: ``VoxelMorph`` on a ``VoxelMorphUNet``; its velocity field is
  integrated by scaling and squaring (``integration_steps``; 0: a plain field).
* ``localnet``: ``LocalNet`` (dense field from multi-scale features).
* ``globalnet``: ``GlobalNet`` (an affine transform, returned as its field).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

NETWORKS = ("voxelmorph", "localnet", "globalnet")

_DEFAULTS: dict[str, dict[str, Any]] = {
    "voxelmorph": {"channels": [16, 32, 32, 32, 32, 32], "final_conv_channels": [16, 16], "unet_out_channels": 16, "integration_steps": 7},
    "localnet": {"num_channel_initial": 16, "extract_levels": [3]},
    "globalnet": {"num_channel_initial": 16, "depth": 3},
}


class Registrar(nn.Module):
    """A MONAI registration network that maps (moving, fixed) to a field."""

    def __init__(self, name: str, net: nn.Module):
        super().__init__()
        self.name, self.net = name, net

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        if self.name == "voxelmorph":
            return self.net(moving, fixed)[1]
        return self.net(torch.cat([moving, fixed], dim=1))


def _downsamplings(name: str, kwargs: dict[str, Any]) -> int:
    if name == "voxelmorph":
        return len(kwargs["channels"]) // 2
    if name == "localnet":
        return max(kwargs["extract_levels"])
    return int(kwargs["depth"])


def build_registration_network(network: dict[str, Any], image_size: tuple[int, int]) -> Registrar:
    """The network of a model's ``network: {name, kwargs}`` for images of ``image_size``
    (rows, columns), which must be divisible by 2 to the power of its downsamplings."""
    from monai.networks.nets import GlobalNet, LocalNet, VoxelMorph, VoxelMorphUNet

    name = network["name"]
    if name not in NETWORKS:
        raise ValueError(f"unknown registration network {name!r}; choose one of {list(NETWORKS)}")
    kwargs = {**_DEFAULTS[name], **(network.get("kwargs") or {})}
    depth = _downsamplings(name, kwargs)
    if any(side % 2**depth for side in image_size):
        raise ValueError(f"network {name}: image size {tuple(image_size)} is not divisible by 2**{depth}; set registration.size")
    with warnings.catch_warnings():  # MONAI's Warp says it uses torch's grid_sample
        warnings.simplefilter("ignore", UserWarning)
        if name == "voxelmorph":
            steps = int(kwargs.pop("integration_steps"))
            backbone = VoxelMorphUNet(spatial_dims=2, in_channels=2, **kwargs)
            return Registrar(name, VoxelMorph(backbone=backbone, integration_steps=steps, spatial_dims=2))
        if name == "localnet":
            return Registrar(
                name,
                LocalNet(spatial_dims=2, in_channels=2, out_channels=2, **{**kwargs, "extract_levels": tuple(kwargs["extract_levels"])}),
            )
        return Registrar(name, GlobalNet(image_size=list(image_size), spatial_dims=2, in_channels=2, **kwargs))
