"""Training of a denoiser on simulated low-dose pairs, on the shared engine's epoch loop
(:mod:`casebook.engine.loop`): mean squared error on the network scale (RED-CNN's loss),
the best epoch by validation PSNR."""

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
from casebook.tasks.restoration.adversarial import Adversary
from casebook.tasks.restoration.data import SlicePairs, from_network, region_masks, to_network
from casebook.tasks.restoration.metrics import SOFT_TISSUE, image_quality, region_quality
from casebook.tasks.restoration.networks import ConditionalDiffusion, build_restoration_network
from casebook.tasks.restoration.simulate import load_pairs

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_psnr", "lr", "seconds"]


def window_of(cfg: dict[str, Any]):
    """The display window a model's inputs are scaled by (its family settings, else soft tissue)."""
    return (cfg.get("restoration") or {}).get("window", SOFT_TISSUE)


def _tensor(images: np.ndarray, window) -> torch.Tensor:
    return torch.from_numpy(to_network(images, window))[:, None]


@torch.no_grad()
def restore(model: torch.nn.Module, noisy_hu: np.ndarray, window=SOFT_TISSUE, batch_size: int = 16) -> np.ndarray:
    """The model's output, in HU, for a stack of noisy slices (``window``: the one the
    model was trained on, which sets its input scale)."""
    model.eval()
    device = next(model.parameters()).device
    out = [model(_tensor(noisy_hu[i : i + batch_size], window).to(device)).cpu().numpy()[:, 0] for i in range(0, len(noisy_hu), batch_size)]
    return from_network(np.concatenate(out), window)


def fit(cfg: dict[str, Any], train: SlicePairs, val: SlicePairs, out_dir: str | Path, *, resume_key: str = "") -> dict[str, Any]:
    """Train ``cfg['network']`` with ``cfg['train']`` (epochs, batch_size, optimizer, lr,
    schedule); write the engine's files (``model.pt``, history, checkpoints) into
    ``out_dir``; return the best epoch and its validation PSNR."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tcfg = cfg["train"]
    seed_everything(int(cfg.get("seed", 0)))
    device = select_device(cfg.get("device", "auto"))
    model = build_restoration_network(cfg["network"], spatial_dims=2).to(device)
    optimizer = make_optimizer(model.parameters(), tcfg)
    epochs = int(tcfg["epochs"])
    window = window_of(cfg)
    inputs, targets = _tensor(train.noisy, window), _tensor(train.reference, window)
    # a missing region: the loss is taken inside it only (the known pixels are pasted back)
    weights = None if train.region is None else torch.from_numpy(region_masks(train.region, train.noisy.shape[1:]))[:, None]
    generator = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    batch = int(tcfg["batch_size"])

    # pix2pix: a conditional PatchGAN beside the reconstruction loss (train.adversarial)
    adversary = Adversary(tcfg["adversarial"], device) if tcfg.get("adversarial") is not None else None
    diffusion = isinstance(model, ConditionalDiffusion)
    if diffusion and adversary is not None:
        raise ValueError("train.adversarial applies to a network that maps its input to its output, not to the diffusion restorer")

    def train_epoch(_epoch: int) -> float:
        model.train()
        total = 0.0
        for idx in torch.randperm(len(inputs), generator=generator).split(batch):
            x, y = inputs[idx].to(device), targets[idx].to(device)
            optimizer.zero_grad(set_to_none=True)
            w = None if weights is None else weights[idx].to(device)
            if diffusion:  # the noise-prediction loss; its outputs are samples
                loss = model.training_loss(x, y, generator, w)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
                continue
            out = model(x)
            loss = torch.nn.functional.mse_loss(out, y) if w is None else ((out - y) ** 2 * w).sum() / w.sum()
            total += loss.item() * len(idx)  # the history's loss: reconstruction, comparable with or without
            if adversary is not None:
                loss = loss + adversary.generator_loss(x, out)
            loss.backward()
            optimizer.step()
            if adversary is not None:
                adversary.step(x, out, y)
        return total / len(inputs)

    def validate() -> dict[str, float]:
        restored = restore(model, val.noisy, window)
        if val.region is None:
            val_loss = float(np.mean((to_network(restored, window) - to_network(val.reference, window)) ** 2))
            return {"val_loss": val_loss, "val_psnr": float(np.mean(image_quality(restored, val.reference, window, ms_ssim=False)["psnr"]))}
        inside = region_masks(val.region, val.noisy.shape[1:])
        val_loss = float(np.mean(((to_network(restored, window) - to_network(val.reference, window)) ** 2)[inside]))
        return {"val_loss": val_loss, "val_psnr": float(np.mean(region_quality(restored, val.reference, val.region, window)["psnr"]))}

    trainer = Trainer(
        net=model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, tcfg, epochs),
        train_epoch=train_epoch,
        validate=validate,
        metric="val_psnr",
        columns=HISTORY_COLUMNS,
        generator=generator,
    )
    state = run_epochs(trainer, out_dir=out_dir, epochs=epochs, resume_key=resume_key, desc="train denoiser")
    return {"best_epoch": state["best_epoch"], "best_val_psnr": state["best"], "epochs": epochs, "n_train": len(train)}


def load_denoiser(path: str | Path, network: dict[str, Any], device: str | torch.device = "cpu") -> torch.nn.Module:
    """The best weights written by :func:`fit` (``model.pt``)."""
    model = build_restoration_network(network, spatial_dims=2)
    model.load_state_dict(torch.load(path, map_location=device, weights_only=True)["state_dict"])
    return model.to(device).eval()


def train_stage(
    cfg: dict[str, Any], *, pairs: str, splits: str, fold: int, name: str, outputs: dict[str, str], wildcards=None
) -> dict[str, Any]:
    """The train rule of a restoration case study: fit on the fold's training images,
    validate on its validation images, then write the model card and the record."""
    started, code = provenance.now(), provenance.code_state()
    window = window_of(cfg)
    part = fold_split(read_json(splits), fold, splits)
    train, val = load_pairs(pairs, part["train"]), load_pairs(pairs, part["val"])
    sums = {str(p): provenance.input_digest(p) for p in (pairs, splits)}
    summary = fit(
        cfg, train, val, Path(outputs["model"]).parent,
        resume_key=checkpoint.resume_key({k: v for k, v in cfg.items() if k != "device"}, fold, sums),
    )  # fmt: skip
    card = {
        "name": name,
        "version": "1",
        "task": "restoration",
        "network": cfg["network"],
        "input": {
            "format": "float32 tensor (1, rows, columns): a degraded slice (low-dose FBP, thick slices B-spline interpolated, a histogram-matched source sequence, or a hole filled by biharmonic inpainting), (value - window centre) / window width",
            "window": list(window),
        },
        "output": {"type": "the restored slice, same scale"},
        "training": {k: cfg["train"][k] for k in sorted(cfg["train"])},
        "metrics": {"best_val_psnr": summary["best_val_psnr"], "best_epoch": summary["best_epoch"]},
        "data": {"n_train_slices": len(train), "n_val_slices": len(val)},
        "versions": provenance.package_versions(),
    }
    provenance.write_training_record(
        outputs,
        card,
        inputs=[pairs, splits],
        params={"model": cfg, "fold": fold},
        seed=cfg.get("seed"),
        started=started,
        code=code,
        device=str(select_device(cfg.get("device", "auto"))),
        wildcards=wildcards,
    )
    return summary
