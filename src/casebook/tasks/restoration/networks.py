"""Restoration networks: RED-CNN (Chen et al. 2017, IEEE TMI 36:2524), which MONAI does
not have, MONAI's BasicUNet learning the residual (the noise) rather than the image, and
a conditional diffusion model (MONAI's DiffusionModelUNet and DDIM scheduler) that
samples the residual given the degraded image.

Each maps a one-channel image to a one-channel image of the same shape (the first two
in 2D or 3D, the diffusion model in 2D).
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.layers import Conv
from monai.networks.nets import BasicUNet, DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
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


class ConditionalDiffusion(nn.Module):
    """SR3 / Palette-style conditional diffusion (Saharia et al. 2022): a
    DiffusionModelUNet sees the noisy residual (reference minus degraded input, on the
    network scale) beside the degraded input and predicts the noise (:meth:`training_loss`,
    the DDPM objective); called on a degraded batch, it samples the residual with
    ``steps`` DDIM steps from a fixed seed (the same input, the same output) and adds
    it. ``clip`` bounds each step's estimate of the residual (in window widths)."""

    def __init__(
        self,
        spatial_dims: int = 2,
        channels: tuple[int, ...] = (16, 32, 32),
        timesteps: int = 1000,
        schedule: str = "linear_beta",
        steps: int = 10,
        clip: float = 1.0,
        seed: int = 0,
        **unet_kwargs: Any,
    ):
        super().__init__()
        if spatial_dims != 2:
            raise ValueError("the conditional diffusion restorer is 2D only")
        kwargs = {"num_res_blocks": 1, "norm_num_groups": 8, **unet_kwargs}
        kwargs["attention_levels"] = tuple(kwargs.get("attention_levels") or (False,) * len(channels))
        self.unet = DiffusionModelUNet(spatial_dims=2, in_channels=2, out_channels=1, channels=tuple(channels), **kwargs)
        self.timesteps, self.schedule, self.steps, self.clip, self.seed = int(timesteps), schedule, int(steps), float(clip), int(seed)

    def _scheduler(self, name: str):
        cls = DDPMScheduler if name == "ddpm" else DDIMScheduler
        return cls(
            num_train_timesteps=self.timesteps, schedule=self.schedule,
            clip_sample=True, clip_sample_min=-self.clip, clip_sample_max=self.clip,
        )  # fmt: skip

    def training_loss(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The noise-prediction error at uniformly drawn steps (inside ``weights`` only, when given)."""
        scheduler = self._scheduler("ddpm")
        noise = torch.randn(y.shape, generator=generator).to(y.device)
        steps = torch.randint(0, self.timesteps, (len(y),), generator=generator).to(y.device)
        noisy = scheduler.add_noise(original_samples=y - x, noise=noise, timesteps=steps)
        error = (self.unet(torch.cat([noisy, x], dim=1), steps) - noise) ** 2
        return error.mean() if weights is None else (error * weights).sum() / weights.sum()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scheduler = self._scheduler("ddim")
        scheduler.set_timesteps(num_inference_steps=self.steps)
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        residual = torch.randn(x.shape, generator=generator, device=x.device)
        for t in scheduler.timesteps:
            predicted = self.unet(torch.cat([residual, x], dim=1), torch.full((len(x),), int(t), device=x.device))
            residual, _ = scheduler.step(predicted, t, residual)
        return x + residual


RESTORATION_NETWORKS = {"redcnn": REDCNN, "unet": ResidualUNet, "diffusion": ConditionalDiffusion}


def build_restoration_network(spec: dict[str, Any], spatial_dims: int = 2) -> nn.Module:
    """The network of a model's ``network: {name, kwargs}``."""
    name = spec.get("name")
    if name not in RESTORATION_NETWORKS:
        raise ValueError(f"unknown restoration network {name!r}; choose one of {sorted(RESTORATION_NETWORKS)}")
    kwargs = dict(spec.get("kwargs") or {})
    for key in ("features", "channels"):  # YAML gives lists; MONAI wants tuples
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    return RESTORATION_NETWORKS[name](spatial_dims=spatial_dims, **kwargs)
