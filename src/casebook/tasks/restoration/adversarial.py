"""pix2pix-style adversarial training (Isola et al. 2017) for any restoration network: a
conditional PatchGAN (MONAI's PatchDiscriminator) judges the input beside either the
reference or the network's output, patch by patch, with MONAI's least-squares
adversarial loss; the generator adds that loss, weighted, to its reconstruction loss.

The discriminator is trained and kept in memory only: a run resumed from a checkpoint
continues its generator and starts a fresh discriminator."""

from __future__ import annotations

from typing import Any

import torch
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import PatchDiscriminator

DEFAULTS: dict[str, Any] = {"weight": 0.01, "channels": 16, "layers": 3, "lr": 0.0002}


class Adversary:
    def __init__(self, settings: dict[str, Any], device: torch.device | str):
        cfg = {**DEFAULTS, **settings}
        self.weight = float(cfg["weight"])
        self.net = PatchDiscriminator(
            spatial_dims=2, num_layers_d=int(cfg["layers"]), channels=int(cfg["channels"]), in_channels=2, out_channels=1
        ).to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=float(cfg["lr"]), betas=(0.5, 0.999))
        self.loss = PatchAdversarialLoss(criterion="least_squares")

    def _logits(self, inputs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([inputs, images], dim=1))[-1]  # the last of its feature maps

    def generator_loss(self, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """The weighted loss of the generator: its outputs should be judged real."""
        return self.weight * self.loss(self._logits(inputs, outputs), target_is_real=True, for_discriminator=False)

    def step(self, inputs: torch.Tensor, outputs: torch.Tensor, references: torch.Tensor) -> float:
        """One discriminator update on a batch: references real, outputs fake."""
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        fake = self.loss(self._logits(inputs, outputs.detach()), target_is_real=False, for_discriminator=True)
        real = self.loss(self._logits(inputs, references), target_is_real=True, for_discriminator=True)
        loss = 0.5 * (fake + real)
        loss.backward()
        self.optimizer.step()
        return float(loss.item())
