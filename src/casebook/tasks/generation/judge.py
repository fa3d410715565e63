"""Training of the family's classifier (casebook.tasks.generation.networks.Judge): the
judge of the samples (trained on the real training images) and every arm of the utility
study (trained on real, synthetic or both). The best epoch is chosen by validation AUC on
real validation images, and kept in memory: an arm is seconds of work, not a job."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from casebook import provenance
from casebook.engine.checkpoint import save_torch
from casebook.engine.runtime import seed_everything
from casebook.fileio import atomic_path, read_json
from casebook.split import fold_split
from casebook.tasks.generation.data import load_images
from casebook.tasks.generation.networks import Judge

#: the judge's and the arms' defaults (generation.judge in the case study overrides them)
JUDGE_DEFAULTS: dict[str, Any] = {"epochs": 12, "batch_size": 64, "lr": 0.002, "network": {}}


@dataclass
class Fitted:
    model: Judge
    history: pd.DataFrame
    best_epoch: int
    best_val_auc: float
    extra: dict[str, Any] = field(default_factory=dict)


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(images, dtype=np.float32))[:, None]


@torch.no_grad()
def predict_proba(model: Judge, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """p(class) of each image (rows), on the network scale [-1, 1]."""
    model.eval()
    x = _tensor(images)
    return np.concatenate([torch.softmax(model(x[i : i + batch_size]), dim=1).numpy() for i in range(0, len(x), batch_size)])


@torch.no_grad()
def embed(model: Judge, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The judge's pooled features of each image (rows)."""
    model.eval()
    x = _tensor(images)
    return np.concatenate([model.embed(x[i : i + batch_size]).numpy() for i in range(0, len(x), batch_size)])


def score_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC of p(class 1) (two classes) or the one-vs-rest macro AUC; NaN with one class."""
    labels = np.asarray(labels)
    if np.unique(labels).size < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    return float(roc_auc_score(labels, probs, multi_class="ovr", labels=list(range(probs.shape[1]))))


def fit_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    n_classes: int,
    settings: dict[str, Any],
    seed: int,
) -> Fitted:
    """Train a judge on ``images`` (network scale) for ``settings['epochs']`` epochs of
    Adam, with class-balanced sampling (a synthetic set need not have the real prevalence,
    and a small fraction may have few positives); keep the epoch of best validation AUC."""
    cfg = {**JUDGE_DEFAULTS, **settings}
    seed_everything(seed)
    model = Judge(n_classes, **(cfg.get("network") or {}))
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]))
    x, y = _tensor(images), torch.from_numpy(np.asarray(labels, dtype=np.int64))
    counts = np.bincount(np.asarray(labels), minlength=n_classes).astype(float)
    weights = torch.from_numpy(1.0 / np.maximum(counts, 1.0)[np.asarray(labels)])
    generator = torch.Generator().manual_seed(seed)
    batch, rows = int(cfg["batch_size"]), []
    best: tuple[float, int, dict] = (-np.inf, 0, copy.deepcopy(model.state_dict()))
    for epoch in range(1, int(cfg["epochs"]) + 1):
        model.train()
        order = torch.multinomial(weights, len(x), replacement=True, generator=generator)
        losses = []
        for idx in order.split(batch):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        val_auc = score_auc(val_labels, predict_proba(model, val_images))
        rows.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_auc": val_auc})
        if val_auc > best[0]:  # NaN (one validation class) never improves: the first epoch's stays
            best = (val_auc, epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    model.eval()
    return Fitted(model, pd.DataFrame(rows), best_epoch=best[1], best_val_auc=float(best[0]))


def judge_stage(
    images: str, splits: str, fold: int, n_classes: int, settings: dict[str, Any], *, seed: int, outputs: dict[str, str], wildcards=None
) -> Fitted:
    """The train_judge rule: the judge on the fold's real training images, its best epoch
    by validation AUC; ``model.pt`` (weights and settings), ``history.tsv``, the record."""
    started, code = provenance.now(), provenance.code_state()
    part = fold_split(read_json(splits), fold, splits)
    train, val = load_images(images, part["train"]), load_images(images, part["val"])
    fitted = fit_classifier(train.images, train.labels, val.images, val.labels, n_classes, settings, seed)
    save_torch(
        outputs["model"],
        {
            "state_dict": fitted.model.state_dict(),
            "n_classes": n_classes,
            "settings": settings,
            "best_epoch": fitted.best_epoch,
            "val_auc": fitted.best_val_auc,
        },
    )
    with atomic_path(outputs["history"]) as tmp:
        fitted.history.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    provenance.write_record(
        outputs["provenance"],
        rule="train_judge",
        inputs=[images, splits],
        outputs=[outputs["model"], outputs["history"]],
        params={"judge": settings, "fold": fold, "n_train": len(train), "n_val": len(val)},
        seed=seed,
        started=started,
        code=code,
        wildcards=wildcards,
    )
    return fitted


def load_judge(path: str) -> Judge:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    cfg = {**JUDGE_DEFAULTS, **saved["settings"]}
    model = Judge(int(saved["n_classes"]), **(cfg.get("network") or {}))
    model.load_state_dict(saved["state_dict"])
    return model.eval()
