"""The arms' networks: MONAI's CNN (ResNet) and transformers (ViT, Swin), each split
into an encoder (image -> feature vector) and a linear head, so that one encoder can be
pretrained, probed (head only) or fine-tuned (all of it) the same way for every
architecture.

``network: {name: resnet|vit|swin, kwargs: {...}}``: kwargs over casebook's small
defaults pass through to the MONAI constructor (``monai.networks.nets.ResNet``,
``monai.networks.nets.ViT``, ``monai.networks.nets.swin_unetr.SwinTransformer``)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from monai.networks import nets
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


class ResNetEncoder(nn.Module):
    """MONAI's ResNet without its fully connected layer: the pooled features."""

    def __init__(self, spatial_dims: int, in_channels: int, size: int, **kwargs: Any) -> None:
        super().__init__()
        cfg = {"block": "basic", "layers": [1, 1, 1, 1], "block_inplanes": [16, 32, 64, 128], **kwargs}
        self.net = nets.ResNet(spatial_dims=spatial_dims, n_input_channels=in_channels, feed_forward=False, **cfg)
        self.features = int(cfg["block_inplanes"][-1]) * (4 if cfg["block"] == "bottleneck" else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ViTEncoder(nn.Module):
    """MONAI's ViT; the features are its final tokens averaged (no class token)."""

    def __init__(self, spatial_dims: int, in_channels: int, size: int, **kwargs: Any) -> None:
        super().__init__()
        cfg = {"patch_size": 8, "hidden_size": 64, "mlp_dim": 128, "num_layers": 4, "num_heads": 4, **kwargs}
        self.net = nets.ViT(in_channels=in_channels, img_size=size, spatial_dims=spatial_dims, classification=False, **cfg)
        self.features = int(cfg["hidden_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.net(x)
        return tokens.mean(dim=1)


class SwinEncoder(nn.Module):
    """MONAI's Swin transformer (SwinUNETR's encoder); the features are its last
    stage's map averaged over space."""

    def __init__(self, spatial_dims: int, in_channels: int, size: int, **kwargs: Any) -> None:
        super().__init__()
        cfg = {
            "embed_dim": 24,
            "window_size": [4] * spatial_dims,
            "patch_size": [2] * spatial_dims,
            "depths": [1, 1, 1, 1],
            "num_heads": [3, 3, 6, 6],
            **kwargs,
        }
        self.net = SwinTransformer(in_chans=in_channels, spatial_dims=spatial_dims, **cfg)
        # MONAI runs exactly four stages, each merging patches (doubling the channels)
        self.features = int(cfg["embed_dim"]) * 2 ** len(cfg["depths"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = self.net(x, normalize=True)[-1]
        return last.flatten(2).mean(dim=2)


ENCODERS: dict[str, Callable[..., nn.Module]] = {"resnet": ResNetEncoder, "vit": ViTEncoder, "swin": SwinEncoder}


class Classifier(nn.Module):
    """An encoder and a linear head on its features."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def build_encoder(spec: dict[str, Any], *, spatial_dims: int, in_channels: int, size: int) -> nn.Module:
    """The encoder named in ``spec`` (see ENCODERS)."""
    name = spec["name"]
    if name not in ENCODERS:
        raise ValueError(f"unknown network {name!r}; known: {sorted(ENCODERS)}")
    return ENCODERS[name](spatial_dims, in_channels, size, **dict(spec.get("kwargs") or {}))


def build_classifier(spec: dict[str, Any], *, spatial_dims: int, in_channels: int, size: int, num_classes: int) -> Classifier:
    return Classifier(build_encoder(spec, spatial_dims=spatial_dims, in_channels=in_channels, size=size), num_classes)


def parameter_count(net: nn.Module, trainable_only: bool = False) -> int:
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only))


def macs_per_image(net: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of one image of ``shape`` (C, *spatial):
    PyTorch's FLOP counter (matrix products and convolutions) halved."""
    was_training = net.training
    net.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros((1, *shape)))
    net.train(was_training)
    return int(counter.get_total_flops() // 2)


def features(encoder: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The encoder's feature vectors of the images ``x`` (n, C, *spatial), in order."""
    encoder.eval()
    with torch.no_grad():
        return np.concatenate([encoder(torch.from_numpy(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)])
