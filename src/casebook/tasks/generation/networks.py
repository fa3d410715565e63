"""The family's networks: MONAI's DiffusionModelUNet (class-conditional through its
class embedding), on the pixels (``ddpm``) or on the latents of a MONAI AutoencoderKL, a
VAE (``ldm``, latent diffusion: Rombach et al. 2022), and the judge, a small MONAI
DenseNet whose pooled features are the space the samples are measured in."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import AutoencoderKL, DenseNet, DiffusionModelUNet
from torch import nn

#: a DiffusionModelUNet small enough to learn 32-pixel images on a CPU in a minute
DIFFUSION_DEFAULTS: dict[str, Any] = {
    "channels": (32, 64, 64),
    "attention_levels": (False, False, False),
    "num_res_blocks": 1,
    "norm_num_groups": 8,
}


#: a small AutoencoderKL: 32-pixel images to 16-pixel latents of 3 channels
AUTOENCODER_DEFAULTS: dict[str, Any] = {
    "channels": (32, 64),
    "attention_levels": (False, False),
    "num_res_blocks": 1,
    "latent_channels": 3,
    "norm_num_groups": 8,
    "with_encoder_nonlocal_attn": False,
    "with_decoder_nonlocal_attn": False,
}

GENERATION_NETWORKS = ("ddpm", "ldm")


def _unet(given: dict[str, Any], channels: int, n_classes: int) -> DiffusionModelUNet:
    kwargs = {**DIFFUSION_DEFAULTS, **given}
    # one attention flag per level: none unless asked, whatever the number of levels
    kwargs["attention_levels"] = tuple(given.get("attention_levels") or (False,) * len(kwargs["channels"]))
    kwargs["channels"] = tuple(kwargs["channels"])
    return DiffusionModelUNet(spatial_dims=2, in_channels=channels, out_channels=channels, num_class_embeds=n_classes, **kwargs)


def build_autoencoder(given: dict[str, Any] | None = None) -> AutoencoderKL:
    """The VAE of an ``ldm`` model (``given`` overrides :data:`AUTOENCODER_DEFAULTS`)."""
    kwargs = {**AUTOENCODER_DEFAULTS, **(given or {})}
    kwargs["channels"] = tuple(kwargs["channels"])
    kwargs["attention_levels"] = tuple((given or {}).get("attention_levels") or (False,) * len(kwargs["channels"]))
    return AutoencoderKL(spatial_dims=2, in_channels=1, out_channels=1, **kwargs)


class LatentDiffusion(nn.Module):
    """A DiffusionModelUNet on the latents of a (frozen) AutoencoderKL. Called like the
    denoiser (noisy latents, steps, class labels), so the training loss and the samplers
    are the pixel model's; :meth:`latent_shape`, :meth:`encode` and :meth:`decode` move
    between images and latents. ``scale`` makes the latents' spread about 1, as the
    schedules assume (Rombach et al.'s scale factor: one over the training latents' sd);
    ``clip``, the scaled training latents' largest magnitude, bounds the samplers' clean
    latent estimates as [-1, 1] bounds the pixels'.
    MONAI's LatentDiffusionInferer is not used: it cannot pass class labels."""

    def __init__(self, autoencoder: AutoencoderKL, unet: DiffusionModelUNet, downsampling: int):
        super().__init__()
        self.autoencoder, self.unet, self.downsampling = autoencoder, unet, downsampling
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("clip", torch.tensor(1.0))

    @property
    def class_embedding(self) -> nn.Embedding:
        return self.unet.class_embedding

    def latent_shape(self, size: int) -> tuple[int, int, int]:
        if size % self.downsampling:
            raise ValueError(f"an image side of {size} pixels is not a multiple of the autoencoder's downsampling ({self.downsampling})")
        return (self.unet.in_channels, size // self.downsampling, size // self.downsampling)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The scaled latent means of ``images`` (the posterior's mean: a deterministic target)."""
        z_mu, _ = self.autoencoder.encode(images)
        return z_mu * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(latents / self.scale)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x, timesteps, class_labels=class_labels)


def build_diffusion(network: dict[str, Any], n_classes: int) -> nn.Module:
    """The denoiser of a generation model: ``ddpm``, a DiffusionModelUNet on the pixels
    (one channel in and out, one class embedding per class; ``kwargs`` override
    :data:`DIFFUSION_DEFAULTS`); ``ldm``, the same on the latents of an AutoencoderKL
    (``autoencoder.kwargs`` override :data:`AUTOENCODER_DEFAULTS`)."""
    name = network["name"]
    if name not in GENERATION_NETWORKS:
        raise ValueError(f"unknown generation network {name!r}; the generation networks are {list(GENERATION_NETWORKS)}")
    given = network.get("kwargs") or {}
    if name == "ddpm":
        return _unet(given, 1, n_classes)
    ae_kwargs = {**AUTOENCODER_DEFAULTS, **((network.get("autoencoder") or {}).get("kwargs") or {})}
    autoencoder = build_autoencoder(ae_kwargs)
    downsampling = 2 ** (len(ae_kwargs["channels"]) - 1)  # one halving between levels
    return LatentDiffusion(autoencoder, _unet(given, int(ae_kwargs["latent_channels"]), n_classes), downsampling)


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
