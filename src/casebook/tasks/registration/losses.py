"""The unsupervised registration loss: an image similarity between the warped moving
image and the fixed one, plus a weighted regularization of the field (MONAI's losses).

``train.similarity``: ``{name: lncc, kernel_size}`` (local normalized cross-correlation,
for images of one contrast), ``{name: mi, bins}`` (global mutual information, for
images of different contrasts) or ``{name: mse}``. ``train.regularization``:
``{name: bending | diffusion, weight}``.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch

SIMILARITY = {"name": "lncc", "kernel_size": 7}
REGULARIZATION = {"name": "bending", "weight": 1.0}


def similarity_loss(spec: dict[str, Any] | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from monai.losses import GlobalMutualInformationLoss, LocalNormalizedCrossCorrelationLoss

    spec = {**SIMILARITY, **(spec or {})}
    if spec["name"] == "lncc":
        return LocalNormalizedCrossCorrelationLoss(spatial_dims=2, kernel_size=int(spec["kernel_size"]))
    if spec["name"] == "mi":
        return GlobalMutualInformationLoss(num_bins=int(spec.get("bins", 23)))
    if spec["name"] == "mse":
        return torch.nn.MSELoss()
    raise ValueError(f"unknown similarity {spec['name']!r}; choose lncc, mi or mse")


def regularization_loss(spec: dict[str, Any] | None) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """The regularizer of a field and its weight."""
    from monai.losses import BendingEnergyLoss, DiffusionLoss

    spec = {**REGULARIZATION, **(spec or {})}
    losses = {"bending": BendingEnergyLoss, "diffusion": DiffusionLoss}
    if spec["name"] not in losses:
        raise ValueError(f"unknown regularization {spec['name']!r}; choose one of {sorted(losses)}")
    penalty = losses[spec["name"]]()

    def regularize(ddf: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # MONAI indexes with lists, which torch 2.13 warns of on every call
            warnings.simplefilter("ignore", UserWarning)
            return penalty(ddf)

    return regularize, float(spec["weight"])
