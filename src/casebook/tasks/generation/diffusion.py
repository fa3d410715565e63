"""Denoising diffusion with MONAI's schedulers: the DDPM training objective (predict the
noise added at a random step) and class-conditional sampling with DDPM (every training
step) or DDIM (a subset of them, deterministic)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from tqdm.auto import tqdm

SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}
#: the forward process every model of the family trains with, unless generation.diffusion says otherwise
DIFFUSION_PROCESS: dict[str, Any] = {"timesteps": 1000, "schedule": "linear_beta"}


def make_scheduler(name: str, process: dict[str, Any] | None = None, *, clip: float = 1.0):
    """A MONAI scheduler of the training's forward process (``timesteps``, ``schedule``),
    each step's predicted clean image clipped to [-clip, clip]: the images' range [-1,
    1] for pixels, the training latents' range for a latent model. Unclipped, DDIM's
    first steps divide the predicted noise's error by sqrt(alpha-bar) (0.006 at the last
    linear-beta step), and latent samples came out with four times the latents' spread."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown sampler {name!r}; the samplers are {sorted(SCHEDULERS)}")
    process = {**DIFFUSION_PROCESS, **(process or {})}
    return SCHEDULERS[name](
        num_train_timesteps=int(process["timesteps"]), schedule=str(process["schedule"]),
        clip_sample=True, clip_sample_min=-float(clip), clip_sample_max=float(clip),
    )  # fmt: skip


def noise_loss(model: torch.nn.Module, scheduler, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mean squared error of the predicted noise at uniformly drawn steps (Ho et al. 2020)."""
    noise = torch.randn(images.shape, generator=generator).to(images.device)
    steps = torch.randint(0, scheduler.num_train_timesteps, (len(images),), generator=generator).to(images.device)
    noisy = scheduler.add_noise(original_samples=images, noise=noise, timesteps=steps)
    return torch.nn.functional.mse_loss(model(noisy, steps, class_labels=labels), noise)


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    labels: np.ndarray,
    *,
    sampler: str,
    steps: int,
    size: int,
    process: dict[str, Any] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    desc: str = "sample",
) -> tuple[np.ndarray, float]:
    """One image per entry of ``labels`` (network scale, clipped to [-1, 1]) and the
    seconds it took. Same seed, same images. A latent model (with ``latent_shape`` and
    ``decode``) is sampled in its latent space and decoded, the decoding timed too."""
    latent = hasattr(model, "latent_shape")
    scheduler = make_scheduler(sampler, process, clip=float(model.clip) if latent else 1.0)
    scheduler.set_timesteps(num_inference_steps=int(steps))
    device = next(model.parameters()).device
    model.eval()
    # on the model's device: the schedulers draw DDPM's step noise with it there
    generator = torch.Generator(device=device).manual_seed(seed)
    labels = np.asarray(labels, dtype=np.int64)
    shape = model.latent_shape(size) if latent else (1, size, size)
    out, start = [], time.perf_counter()
    batches = range(0, len(labels), batch_size)
    with tqdm(total=len(batches) * len(scheduler.timesteps), desc=desc, unit="step") as bar:
        for first in batches:
            cls = torch.from_numpy(labels[first : first + batch_size]).to(device)
            image = torch.randn((len(cls), *shape), generator=generator, device=device)
            for t in scheduler.timesteps:
                predicted = model(image, torch.full((len(cls),), int(t), device=device), class_labels=cls)
                image, _ = scheduler.step(predicted, t, image, generator=generator)
                bar.update()
            if latent:
                image = model.decode(image)
            out.append(image.clamp(-1, 1).cpu().numpy()[:, 0])
    return np.concatenate(out).astype(np.float32), time.perf_counter() - start
