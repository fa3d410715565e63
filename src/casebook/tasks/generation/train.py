"""Training of a class-conditional diffusion model on the engine's epoch loop
(:mod:`casebook.engine.loop`), on the pixels or, for a latent model, on the latents of
its autoencoder trained first (:mod:`.autoencoder`): the DDPM noise-prediction loss, the best epoch by the
validation images' loss at fixed steps and noise (the same draw every epoch, so epochs
compare), written as its negative (the loop keeps the highest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from casebook import provenance
from casebook.engine import checkpoint
from casebook.engine.loop import Trainer, run_epochs
from casebook.engine.optim import make_optimizer, make_scheduler
from casebook.engine.runtime import seed_everything, select_device
from casebook.fileio import read_json
from casebook.split import fold_split
from casebook.tasks.generation.autoencoder import fit_autoencoder, latent_scale
from casebook.tasks.generation.data import ImageSet, load_images
from casebook.tasks.generation.diffusion import DIFFUSION_PROCESS, noise_loss
from casebook.tasks.generation.diffusion import make_scheduler as make_noise_scheduler
from casebook.tasks.generation.networks import LatentDiffusion, build_diffusion

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_neg_loss", "lr", "seconds"]


def _tensors(images: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(images.images)[:, None], torch.from_numpy(images.labels.astype(np.int64))


def fit(
    cfg: dict[str, Any], train: ImageSet, val: ImageSet, n_classes: int, out_dir: str | Path, *, resume_key: str = ""
) -> dict[str, Any]:
    """Train ``cfg['network']`` with ``cfg['train']`` and the forward process
    ``cfg['diffusion']``; write the engine's files into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tcfg, seed = cfg["train"], int(cfg.get("seed", 0))
    seed_everything(seed)
    device = select_device(cfg.get("device", "auto"))
    model = build_diffusion(cfg["network"], n_classes).to(device)
    process = {**DIFFUSION_PROCESS, **(cfg.get("diffusion") or {})}
    noise_scheduler = make_noise_scheduler("ddpm", process)
    epochs, batch = int(tcfg["epochs"]), int(tcfg["batch_size"])
    x, y = _tensors(train)
    vx, vy = _tensors(val)
    extra, latent = {}, {}
    if isinstance(model, LatentDiffusion):  # first the VAE, then diffusion on its latents
        latent, x = _fit_first_stage(model, cfg, x, vx, out_dir, batch=batch, seed=seed, resume_key=resume_key, device=device)
        vx = _encode(model, vx, batch, device)
        extra = {"latent_scale": latent["scale"]}
    optimizer = make_optimizer(model.unet.parameters() if latent else model.parameters(), tcfg)
    generator = torch.Generator().manual_seed(seed)

    def train_epoch(_epoch: int) -> float:
        model.train()
        total = 0.0
        for idx in torch.randperm(len(x), generator=generator).split(batch):
            optimizer.zero_grad(set_to_none=True)
            loss = noise_loss(model, noise_scheduler, x[idx].to(device), y[idx].to(device), generator)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        return total / len(x)

    @torch.no_grad()
    def validate() -> dict[str, float]:
        model.eval()
        fixed = torch.Generator().manual_seed(seed + 1)  # same steps and noise every epoch
        losses = [
            noise_loss(model, noise_scheduler, vx[i : i + batch].to(device), vy[i : i + batch].to(device), fixed).item()
            * len(vx[i : i + batch])
            for i in range(0, len(vx), batch)
        ]
        val_loss = float(np.sum(losses) / max(len(vx), 1))
        return {"val_loss": val_loss, "val_neg_loss": -val_loss}

    trainer = Trainer(
        net=model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, tcfg, epochs),
        train_epoch=train_epoch,
        validate=validate,
        metric="val_neg_loss",
        columns=HISTORY_COLUMNS,
        generator=generator,
        best_extra={"n_classes": n_classes, "diffusion": process, **extra},
    )
    state = run_epochs(trainer, out_dir=out_dir, epochs=epochs, resume_key=resume_key, desc="train diffusion")
    summary = {"best_epoch": state["best_epoch"], "best_val_loss": -state["best"], "epochs": epochs, "n_train": len(train)}
    return {**summary, **({"latent": latent} if latent else {})}


def _fit_first_stage(
    model: LatentDiffusion,
    cfg: dict[str, Any],
    x: torch.Tensor,
    vx: torch.Tensor,
    out_dir: Path,
    *,
    batch: int,
    seed: int,
    resume_key: str,
    device,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Train the latent model's autoencoder, freeze it and set its latent scale and
    clip; return its summary and the training images' scaled latents."""
    summary = fit_autoencoder(
        model.autoencoder, cfg["network"].get("autoencoder") or {}, x, vx, out_dir / "autoencoder",
        batch_size=batch, seed=seed, resume_key=resume_key, device=device,
    )  # fmt: skip
    model.autoencoder.requires_grad_(False)
    model.scale.fill_(1.0)
    latents = _encode(model, x, batch, device)
    model.scale.fill_(latent_scale(latents))
    latents = latents * model.scale.cpu()
    model.clip.fill_(float(latents.abs().max()))
    return {**summary, "scale": float(model.scale), "clip": float(model.clip), "shape": list(model.latent_shape(int(x.shape[-1])))}, latents


def _encode(model: LatentDiffusion, images: torch.Tensor, batch: int, device) -> torch.Tensor:
    model.eval()
    return torch.cat([model.encode(part.to(device)).cpu() for part in images.split(batch)])


def load_generator(path: str | Path, network: dict[str, Any], device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The best weights written by :func:`fit` and the forward process they learnt."""
    saved = torch.load(path, map_location=device, weights_only=True)
    model = build_diffusion(network, int(saved["n_classes"]))
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval(), dict(saved["diffusion"])


def train_stage(
    cfg: dict[str, Any], *, images: str, splits: str, fold: int, n_classes: int, name: str, outputs: dict[str, str], wildcards=None
) -> dict[str, Any]:
    """The train rule of a generation case study: fit on the fold's training images
    only (its card lists them: the leakage guard of the samples' users reads it)."""
    started, code = provenance.now(), provenance.code_state()
    part = fold_split(read_json(splits), fold, splits)
    train, val = load_images(images, part["train"]), load_images(images, part["val"])
    sums = {str(p): provenance.input_digest(p) for p in (images, splits)}
    summary = fit(
        cfg, train, val, n_classes, Path(outputs["model"]).parent,
        resume_key=checkpoint.resume_key({k: v for k, v in cfg.items() if k != "device"}, fold, sums),
    )  # fmt: skip
    card = {
        "name": name,
        "version": "1",
        "task": "generation",
        "network": cfg["network"],
        "diffusion": {**DIFFUSION_PROCESS, **(cfg.get("diffusion") or {})},
        "input": {"format": "noise (1, size, size), or of the latent shape, and a class index", "size": int(train.images.shape[-1])},
        "output": {"type": "an image on [-1, 1] (the prepared images' scale)"},
        "training": {k: cfg["train"][k] for k in sorted(cfg["train"])},
        "metrics": {"best_val_loss": summary["best_val_loss"], "best_epoch": summary["best_epoch"]},
        **({"autoencoder": summary["latent"]} if "latent" in summary else {}),
        "data": {
            "n_train_images": len(train),
            "n_val_images": len(val),
            "fold": fold,
            "train_image_ids": sorted(train.image_id.tolist()),
            "train_patients": sorted(set(train.patient.tolist())),
        },
        "versions": provenance.package_versions(),
    }
    provenance.write_training_record(
        outputs,
        card,
        inputs=[images, splits],
        params={"model": cfg, "fold": fold},
        seed=cfg.get("seed"),
        started=started,
        code=code,
        device=str(select_device(cfg.get("device", "auto"))),
        wildcards=wildcards,
    )
    return summary
