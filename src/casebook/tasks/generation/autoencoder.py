"""The first stage of a latent diffusion model: its AutoencoderKL (a VAE) trained on the
same training images, on the engine's epoch loop, by L1 reconstruction plus a small KL
term (the latent space stays smooth enough to sample from, and close enough to the
images to decode them), the best epoch by validation L1. No perceptual or adversarial
term: MONAI's perceptual loss needs downloaded weights, and a CPU budget has no room for
a discriminator. Its files go into ``autoencoder/`` beside the diffusion model's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.networks.nets import AutoencoderKL

from casebook.engine.loop import Trainer, run_epochs
from casebook.engine.optim import make_optimizer, make_scheduler

HISTORY_COLUMNS = ["epoch", "train_loss", "val_l1", "val_neg_l1", "lr", "seconds"]
#: the stage's defaults (``network.autoencoder`` overrides them)
AUTOENCODER_TRAINING: dict[str, Any] = {"epochs": 10, "lr": 0.001, "kl_weight": 1e-6}


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma) || N(0, 1)) summed over a latent, averaged over the batch."""
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2) + 1e-12) - 1.0)
    return kl.flatten(1).sum(1).mean()


def fit_autoencoder(
    autoencoder: AutoencoderKL,
    settings: dict[str, Any],
    images: torch.Tensor,
    val_images: torch.Tensor,
    out_dir: Path,
    *,
    batch_size: int,
    seed: int,
    resume_key: str,
    device: torch.device | str,
) -> dict[str, Any]:
    """Train ``autoencoder`` in place (on ``device``) and load its best epoch's weights;
    return that epoch and its validation L1 (on the [-1, 1] scale)."""
    cfg = {**AUTOENCODER_TRAINING, **{k: v for k, v in settings.items() if k != "kwargs"}}
    out_dir.mkdir(parents=True, exist_ok=True)
    epochs, kl_weight = int(cfg["epochs"]), float(cfg["kl_weight"])
    optimizer = make_optimizer(autoencoder.parameters(), {"optimizer": "adam", "lr": float(cfg["lr"])})
    generator = torch.Generator().manual_seed(seed)

    def train_epoch(_epoch: int) -> float:
        autoencoder.train()
        total = 0.0
        for idx in torch.randperm(len(images), generator=generator).split(batch_size):
            x = images[idx].to(device)
            optimizer.zero_grad(set_to_none=True)
            reconstruction, z_mu, z_sigma = autoencoder(x)
            loss = torch.nn.functional.l1_loss(reconstruction, x) + kl_weight * kl_divergence(z_mu, z_sigma)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        return total / len(images)

    @torch.no_grad()
    def validate() -> dict[str, float]:
        autoencoder.eval()
        errors = [
            torch.nn.functional.l1_loss(autoencoder.reconstruct(x.to(device)), x.to(device), reduction="sum").item()
            for x in val_images.split(batch_size)
        ]
        l1 = float(np.sum(errors) / max(val_images.numel(), 1))
        return {"val_l1": l1, "val_neg_l1": -l1}

    trainer = Trainer(
        net=autoencoder,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, {"schedule": {"name": "none"}}, epochs),
        train_epoch=train_epoch,
        validate=validate,
        metric="val_neg_l1",
        columns=HISTORY_COLUMNS,
        generator=generator,
    )
    state = run_epochs(trainer, out_dir=out_dir, epochs=epochs, resume_key=f"{resume_key}:autoencoder", desc="train autoencoder")
    best = torch.load(out_dir / "model.pt", map_location=device, weights_only=True)
    autoencoder.load_state_dict(best["state_dict"])
    return {"best_epoch": state["best_epoch"], "best_val_l1": -state["best"], "epochs": epochs, "kl_weight": kl_weight}


@torch.no_grad()
def latent_scale(latents: torch.Tensor) -> float:
    """Rombach et al.'s scale factor: one over the latents' standard deviation."""
    sd = float(latents.std())
    if not np.isfinite(sd) or sd <= 0:
        raise ValueError(f"the autoencoder's latents have a standard deviation of {sd}: it did not learn")
    return 1.0 / sd
