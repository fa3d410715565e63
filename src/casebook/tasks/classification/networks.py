"""MONAI classification networks chosen by name in the case-study config.

``network: {name: resnet18, kwargs: {...}}`` builds ``monai.networks.nets.resnet18``
with the data's spatial dims, channels and classes filled in; ``kwargs`` pass through
to the MONAI constructor unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from monai.networks import nets

# name -> (constructor, how it names in-channels / classes, Grad-CAM target layer)
_RESNET = ("n_input_channels", "num_classes", "layer4")
_DENSENET = ("in_channels", "out_channels", "class_layers.relu")
NETWORKS: dict[str, tuple[Callable[..., torch.nn.Module], tuple[str, str, str]]] = {
    "resnet10": (nets.resnet10, _RESNET),
    "resnet18": (nets.resnet18, _RESNET),
    "resnet34": (nets.resnet34, _RESNET),
    "resnet50": (nets.resnet50, _RESNET),
    "densenet": (nets.DenseNet, _DENSENET),
    "densenet121": (nets.DenseNet121, _DENSENET),
    "densenet169": (nets.DenseNet169, _DENSENET),
}


def build_network(spec: dict[str, Any], *, spatial_dims: int, in_channels: int, num_classes: int) -> torch.nn.Module:
    """Instantiate the MONAI network named in ``spec`` (see NETWORKS for the names)."""
    name = spec["name"]
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; known: {sorted(NETWORKS)}")
    constructor, (in_key, out_key, _) = NETWORKS[name]
    kwargs = dict(spec.get("kwargs") or {})
    kwargs.update({"spatial_dims": spatial_dims, in_key: in_channels, out_key: num_classes})
    return constructor(**kwargs)


def cam_layer(spec: dict[str, Any]) -> str:
    """The layer whose activations Grad-CAM uses, for the network named in ``spec``."""
    return spec.get("cam_layer") or NETWORKS[spec["name"]][1][2]
