"""On-the-fly augmentation: a TorchIO policy built from the case study's config.

Each entry of the policy is one TorchIO transform with its probability. Flips are
opt-in per axis, because anatomy is not always symmetric: a left-right flip of a chest
radiograph moves the heart to the wrong side, while a lung nodule patch may be flipped
along any axis.

Example::

    # a 3D nodule patch: flips along every array axis (z, y, x) are fine
    policy = {"affine": {"p": 0.5, "degrees": 10, "scales": 0.1, "translation": 3},
              "flip": {"axes": [0, 1, 2], "p": 0.5}, "noise": {"p": 0.2, "std": 0.05}}
    transform = build_augmentation(policy, spatial_dims=3)
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torchio as tio


def _affine(cfg: dict[str, Any], spatial_dims: int) -> tio.Transform:
    d, s, t = float(cfg.get("degrees", 10)), float(cfg.get("scales", 0.1)), float(cfg.get("translation", 0))
    if spatial_dims == 2:
        # (C, H, W, 1): rotate in-plane only and never scale or move the singleton axis
        return tio.RandomAffine(
            scales=(1 - s, 1 + s, 1 - s, 1 + s, 1, 1),
            degrees=(0, 0, 0, 0, -d, d),
            translation=(-t, t, -t, t, 0, 0),
            p=cfg.get("p", 0.5),
        )
    return tio.RandomAffine(scales=s, degrees=d, translation=t, p=cfg.get("p", 0.5))


def _flip(cfg: dict[str, Any], spatial_dims: int) -> tio.Transform | None:
    axes = tuple(int(a) for a in cfg.get("axes", []))
    if not axes:
        return None
    if any(not 0 <= a < spatial_dims for a in axes):
        raise ValueError(f"flip axes {axes} outside 0..{spatial_dims - 1}")
    return tio.RandomFlip(axes=axes, flip_probability=cfg.get("p", 0.5))


_BUILDERS: dict[str, Callable[[dict[str, Any], int], tio.Transform | None]] = {
    "affine": _affine,
    "flip": _flip,
    "noise": lambda c, _: tio.RandomNoise(std=c.get("std", 0.05), p=c.get("p", 0.2)),
    "blur": lambda c, _: tio.RandomBlur(std=c.get("std", 0.5), p=c.get("p", 0.1)),
    "gamma": lambda c, _: tio.RandomGamma(log_gamma=c.get("log_gamma", 0.3), p=c.get("p", 0.2)),
    "bias_field": lambda c, _: tio.RandomBiasField(coefficients=c.get("coefficients", 0.3), p=c.get("p", 0.2)),
}

# applied in this order: geometry first, then intensity, as TorchIO's examples do
POLICY_KEYS = tuple(_BUILDERS)


def build_transform(policy: dict[str, Any] | None, spatial_dims: int) -> tio.Transform | None:
    """The TorchIO transform of a policy, or None when it has nothing to apply. Applied
    to a ``tio.Subject``, its spatial transforms move a label map with its image."""
    if not policy:
        return None
    unknown = set(policy) - set(POLICY_KEYS)
    if unknown:
        raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; known: {list(POLICY_KEYS)}")
    transforms = []
    for key in POLICY_KEYS:
        cfg = policy.get(key)
        if cfg and cfg.get("p", 1) > 0:
            built = _BUILDERS[key](cfg, spatial_dims)
            if built is not None:
                transforms.append(built)
    return tio.Compose(transforms) if transforms else None


def build_augmentation(policy: dict[str, Any] | None, spatial_dims: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A callable mapping a (C, *spatial) tensor to an augmented one, or None."""
    compose = build_transform(policy, spatial_dims)
    if compose is None:
        return None

    def apply(tensor: torch.Tensor) -> torch.Tensor:
        if spatial_dims == 2:
            return compose(tensor[..., None])[..., 0]
        return compose(tensor)

    return apply
