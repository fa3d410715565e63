"""Models-Genesis-style self-supervision (Zhou et al., MICCAI 2019): the encoder learns
by restoring images that were corrupted on purpose. Corruptions, each applied to an
image with probability one half: a non-linear intensity transform (a random power of the
image's rank-preserving rescaling), local pixel shuffling (pixels permuted within small
windows) and in-painting (boxes replaced by noise). A small decoder of our own (MONAI has
none that takes a pooled feature vector) maps the encoder's features back to the image;
only the encoder is kept."""

from __future__ import annotations

import torch
from torch import nn


class Restorer(nn.Module):
    """Encoder, then a linear map to a coarse grid and transposed convolutions, each
    doubling the size, back to the image (2D or 3D)."""

    def __init__(self, encoder: nn.Module, size: int, spatial_dims: int, channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.encoder = encoder
        self.coarse, self.steps = size, 0
        while self.coarse % 2 == 0 and self.coarse > 4:
            self.coarse, self.steps = self.coarse // 2, self.steps + 1
        self.shape = (width,) + (self.coarse,) * spatial_dims
        self.project = nn.Linear(encoder.features, width * self.coarse**spatial_dims)
        conv_t = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        layers: list[nn.Module] = []
        for _ in range(self.steps):
            layers += [conv_t(width, width, kernel_size=2, stride=2), nn.ReLU()]
        layers.append(conv(width, channels, kernel_size=3, padding=1))
        self.decode = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.project(self.encoder(x)).view(len(x), *self.shape))


def _intensity(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    low = x.flatten(1).min(1).values.view(-1, *([1] * (x.ndim - 1)))
    high = x.flatten(1).max(1).values.view(-1, *([1] * (x.ndim - 1)))
    unit = (x - low) / (high - low).clamp_min(1e-6)
    power = torch.exp(torch.randn((len(x),) + (1,) * (x.ndim - 1), generator=generator) * 0.7)
    return unit**power * (high - low) + low


def _shuffle(image: torch.Tensor, generator: torch.Generator, windows: int = 20, side: int = 3) -> torch.Tensor:
    out = image.clone()
    spatial = image.shape[1:]
    for _ in range(windows):
        start = [int(torch.randint(0, max(1, s - side), (1,), generator=generator)) for s in spatial]
        region = (slice(None),) + tuple(slice(a, a + side) for a in start)
        block = out[region]
        flat = block.reshape(block.shape[0], -1)
        out[region] = flat[:, torch.randperm(flat.shape[1], generator=generator)].reshape(block.shape)
    return out


def _inpaint(image: torch.Tensor, generator: torch.Generator, boxes: int = 3) -> torch.Tensor:
    out = image.clone()
    spatial = image.shape[1:]
    for _ in range(boxes):
        sides = [int(torch.randint(s // 8 + 1, s // 4 + 2, (1,), generator=generator)) for s in spatial]
        start = [int(torch.randint(0, s - d + 1, (1,), generator=generator)) for s, d in zip(spatial, sides)]
        region = (slice(None),) + tuple(slice(a, a + d) for a, d in zip(start, sides))
        out[region] = torch.randn(out[region].shape, generator=generator)
    return out


def _shuffled_and_painted(image: torch.Tensor, shuffle: bool, paint: bool, generator: torch.Generator) -> torch.Tensor:
    if shuffle:
        image = _shuffle(image, generator)
    return _inpaint(image, generator) if paint else image


def corrupt(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of the batch (n, C, *spatial) with each corruption applied at p = 0.5."""
    choose = torch.rand(len(x), 3, generator=generator) < 0.5
    out = torch.where(choose[:, 0].view(-1, *([1] * (x.ndim - 1))), _intensity(x, generator), x)
    return torch.stack([_shuffled_and_painted(img, bool(s), bool(p), generator) for img, s, p in zip(out, choose[:, 1], choose[:, 2])])
