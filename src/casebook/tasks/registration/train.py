"""Unsupervised training of a registration network on the shared engine's epoch loop
(:mod:`casebook.engine.loop`): the similarity of the warped moving image to the fixed
one plus the weighted regularization of the field (:mod:`.losses`), the best epoch by
the validation pairs' mean Dice of the warped labels. The labels are never seen in
training; every pair is also presented with its images swapped, at random, which
doubles the directions a network learns."""

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
from casebook.tasks.registration.fields import warp
from casebook.tasks.registration.losses import regularization_loss, similarity_loss
from casebook.tasks.registration.metrics import mean_dice
from casebook.tasks.registration.networks import Registrar, build_registration_network
from casebook.tasks.registration.pairs import Pairs, load_pairs

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds"]


def image_batch(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[:, None]


@torch.no_grad()
def predict_fields(model: Registrar, moving: np.ndarray, fixed: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """The fields (N, 2, rows, columns; pixels) a model predicts for stacks of pairs."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(moving), batch_size):
        out.append(
            model(image_batch(moving[i : i + batch_size]).to(device), image_batch(fixed[i : i + batch_size]).to(device)).cpu().numpy()
        )
    return np.concatenate(out).astype(np.float32)


def pairs_dice(pairs: Pairs, fields: np.ndarray, labels: list[int]) -> float:
    """Mean over pairs of the mean Dice of the warped moving labels (the validation metric)."""
    warped = warp(torch.from_numpy(pairs.moving_label)[:, None], torch.from_numpy(fields), labels=True)[:, 0].numpy()
    return float(np.nanmean([mean_dice(w, f, labels) for w, f in zip(warped, pairs.fixed_label)]))


def fit(cfg: dict[str, Any], train: Pairs, val: Pairs, out_dir: str | Path, *, labels: list[int], resume_key: str = "") -> dict[str, Any]:
    """Train ``cfg['network']`` with ``cfg['train']`` (epochs, batch_size, optimizer, lr,
    schedule, similarity, regularization); write the engine's files into ``out_dir``;
    return the best epoch and its validation Dice."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tcfg = cfg["train"]
    seed_everything(int(cfg.get("seed", 0)))
    device = select_device(cfg.get("device", "auto"))
    model = build_registration_network(cfg["network"], train.moving.shape[1:]).to(device)
    optimizer = make_optimizer(model.parameters(), tcfg)
    epochs, batch = int(tcfg["epochs"]), int(tcfg["batch_size"])
    similarity = similarity_loss(tcfg.get("similarity"))
    regularize, weight = regularization_loss(tcfg.get("regularization"))
    moving, fixed = image_batch(train.moving), image_batch(train.fixed)
    val_moving, val_fixed = image_batch(val.moving).to(device), image_batch(val.fixed).to(device)
    generator = torch.Generator().manual_seed(int(cfg.get("seed", 0)))

    def loss_of(m: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        ddf = model(m, f)
        return similarity(warp(m, ddf), f) + weight * regularize(ddf)

    def train_epoch(_epoch: int) -> float:
        model.train()
        total = 0.0
        for idx in torch.randperm(len(moving), generator=generator).split(batch):
            m, f = moving[idx], fixed[idx]
            swap = torch.rand(len(idx), generator=generator) < 0.5
            m, f = torch.where(swap[:, None, None, None], f, m), torch.where(swap[:, None, None, None], m, f)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(m.to(device), f.to(device))
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        return total / len(moving)

    def validate() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            val_loss = float(loss_of(val_moving, val_fixed))
        fields = predict_fields(model, val.moving, val.fixed)
        return {"val_loss": val_loss, "val_dice": pairs_dice(val, fields, labels)}

    trainer = Trainer(
        net=model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, tcfg, epochs),
        train_epoch=train_epoch,
        validate=validate,
        metric="val_dice",
        columns=HISTORY_COLUMNS,
        generator=generator,
        best_extra={"image_size": list(train.moving.shape[1:])},
    )
    state = run_epochs(trainer, out_dir=out_dir, epochs=epochs, resume_key=resume_key, desc=f"train {cfg['network']['name']}")
    return {"best_epoch": state["best_epoch"], "best_val_dice": state["best"], "epochs": epochs, "n_train": len(train)}


def load_registrar(path: str | Path, network: dict[str, Any], device: str | torch.device = "cpu") -> Registrar:
    """The best weights written by :func:`fit` (``model.pt``)."""
    saved = torch.load(path, map_location=device, weights_only=True)
    model = build_registration_network(network, tuple(saved["image_size"]))
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval()


def train_stage(
    cfg: dict[str, Any], *, pairs: str, splits: str, fold: int, name: str, labels: list[int], outputs: dict[str, str], wildcards=None
) -> dict[str, Any]:
    """The train rule of a registration case study: fit on the fold's training pairs,
    select on its validation pairs, then write the model card and the record."""
    started, code = provenance.now(), provenance.code_state()
    part = fold_split(read_json(splits), fold, splits)
    train, val = load_pairs(pairs, part["train"]), load_pairs(pairs, part["val"])
    sums = {str(p): provenance.input_digest(p) for p in (pairs, splits)}
    summary = fit(
        cfg, train, val, Path(outputs["model"]).parent, labels=labels,
        resume_key=checkpoint.resume_key({k: v for k, v in cfg.items() if k != "device"}, fold, sums),
    )  # fmt: skip
    card = {
        "name": name,
        "version": "1",
        "task": "registration",
        "network": cfg["network"],
        "input": {
            "format": "two float32 tensors (1, rows, columns), moving then fixed, intensities scaled per volume (1st and 99th percentiles to 0 and 1)",
            "image_size": list(train.moving.shape[1:]),
        },
        "output": {
            "type": "dense displacement field (2, rows, columns) in pixels, rows then columns: warped(x) = moving(x + field(x)) (MONAI Warp)"
        },
        "training": {k: cfg["train"][k] for k in sorted(cfg["train"])},
        "metrics": {"best_val_dice": summary["best_val_dice"], "best_epoch": summary["best_epoch"]},
        "data": {"n_train_pairs": len(train), "n_val_pairs": len(val), "labels_scored": labels},
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
