"""One arm trained at one level of the sweep: the engine's epoch loop over a linear head
on an encoder (from scratch, or from a pretraining job's weights, all of it fine-tuned
or the encoder frozen: a linear probe), the best epoch by validation AUC, then its test
probabilities and what it cost (parameters, multiply-accumulates, throughput)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from casebook.engine.augment import build_augmentation
from casebook.engine.loop import Trainer, run_epochs
from casebook.engine.optim import make_optimizer, make_scheduler
from casebook.engine.runtime import seed_everything, select_device
from casebook.tasks.comparison.data import Images
from casebook.tasks.comparison.networks import build_classifier, macs_per_image, parameter_count

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_auc", "lr", "seconds"]


@dataclass
class Arm:
    """What an arm trains: ``network`` (name, kwargs), ``train`` settings, the study's
    ``augment`` policy, the encoder weights it starts from (None: random) and whether
    only the head learns (``probe``)."""

    network: dict[str, Any]
    train: dict[str, Any]
    augment: dict[str, Any] = field(default_factory=dict)
    init: dict[str, torch.Tensor] | None = None
    probe: bool = False
    device: str = "auto"


@dataclass
class Fitted:
    """The test probabilities of the positive class and the fit's costs."""

    probs: np.ndarray
    cost: dict[str, float]


def loss_function(train: dict[str, Any], labels: np.ndarray, num_classes: int, device: torch.device) -> nn.Module:
    """Cross-entropy, weighted by inverse class frequency (``class_weights: balanced``,
    scikit-learn's weights), or MONAI's focal loss (``focal: {gamma}``)."""
    if train.get("focal"):
        from monai.losses import FocalLoss

        focal = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=float(train["focal"]["gamma"]))
        return _OnLabels(focal)
    if train.get("class_weights") == "balanced":
        weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=labels)
        return nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32, device=device))
    return nn.CrossEntropyLoss()


class _OnLabels(nn.Module):
    """A MONAI loss that wants the labels as a (B, 1) channel, called as cross-entropy is."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, labels[:, None])


def batches(labels: np.ndarray, batch_size: int, generator: torch.Generator, balanced: bool) -> list[torch.Tensor]:
    """One epoch's batches of indices: a permutation, or (``balanced``) as many draws with
    replacement, each class equally likely (PyTorch's weighted sampling)."""
    n = len(labels)
    if balanced:
        counts = np.bincount(labels)
        weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.double)
        order = torch.multinomial(weights, n, replacement=True, generator=generator)
    else:
        order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


@torch.no_grad()
def positive_probs(net: nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Softmax probability of class 1 for every image, in order."""
    net.eval()
    out = [
        torch.softmax(net(torch.from_numpy(x[i : i + batch_size]).to(device)), dim=1)[:, 1].cpu().numpy()
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros(0)


def _auc(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(roc_auc_score(labels, probs)) if np.unique(labels).size == 2 else float("nan")


def throughput(epoch_seconds: list[float], images: int) -> float:
    """Training images per second over the epochs this process ran, the first left out
    when there are others (it pays for warm-up: allocations, kernel choice); NaN when
    none ran (a resumed fit that was complete)."""
    timed = epoch_seconds[1:] or epoch_seconds
    return images * len(timed) / sum(timed) if timed and sum(timed) > 0 else float("nan")


def build(arm: Arm, images: Images, num_classes: int) -> nn.Module:
    """The arm's classifier, its encoder loaded from ``arm.init`` and frozen for a probe."""
    net = build_classifier(
        arm.network, spatial_dims=images.spatial_dims, in_channels=images.x.shape[1], size=images.x.shape[-1], num_classes=num_classes
    )
    if arm.init is not None:
        net.encoder.load_state_dict(arm.init)
    if arm.probe:
        for p in net.encoder.parameters():
            p.requires_grad_(False)
    return net


def fit_level(arm: Arm, train: Images, val: Images, test: Images, *, seed: int, out_dir: Path, resume_key: str, desc: str) -> Fitted:
    """Train ``arm`` on ``train`` (its best epoch by validation AUC) and score ``test``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    device = select_device(arm.device)
    num_classes = 2
    net = build(arm, train, num_classes).to(device)
    trainable = [p for p in net.parameters() if p.requires_grad]
    tcfg, epochs = arm.train, int(arm.train["epochs"])
    optimizer = make_optimizer(trainable, tcfg)
    scheduler = make_scheduler(optimizer, tcfg, epochs)
    loss_fn = loss_function(tcfg, train.label, num_classes, device)
    augment = build_augmentation(arm.augment, train.spatial_dims)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = torch.from_numpy(train.x), torch.from_numpy(train.label)
    epoch_seconds: list[float] = []

    def train_epoch(_epoch: int) -> float:
        net.train()
        if arm.probe:  # a frozen encoder keeps its batch-norm statistics too
            net.encoder.eval()
        total = 0.0
        start = time.perf_counter()
        for idx in batches(train.label, int(tcfg["batch_size"]), generator, tcfg.get("sampling") == "balanced"):
            xb = x_train[idx]
            if augment is not None:
                xb = torch.stack([augment(x) for x in xb])
            xb, yb = xb.to(device), y_train[idx].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        epoch_seconds.append(time.perf_counter() - start)
        return total / max(len(x_train), 1)

    def validate() -> dict[str, float]:
        probs = positive_probs(net, val.x, device)
        p = torch.from_numpy(np.stack([1 - probs, probs], axis=1)).clamp_min(1e-7)
        val_loss = float(nn.functional.nll_loss(p.log(), torch.from_numpy(val.label)))
        return {"val_loss": val_loss, "val_auc": _auc(val.label, probs)}

    trainer = Trainer(net, optimizer, scheduler, train_epoch, validate, "val_auc", HISTORY_COLUMNS, generator)
    state = run_epochs(trainer, out_dir=out_dir, epochs=epochs, resume_key=resume_key, desc=desc)
    net.load_state_dict(torch.load(out_dir / "model.pt", map_location=device, weights_only=True)["state_dict"])
    start = time.perf_counter()
    probs = positive_probs(net, test.x, device)
    infer_seconds = time.perf_counter() - start
    cost = {
        "parameters": parameter_count(net),
        "trainable_parameters": parameter_count(net, trainable_only=True),
        "macs_per_image": macs_per_image(net.cpu(), tuple(train.x.shape[1:])),
        "train_images_per_s": throughput(epoch_seconds, len(x_train)),
        "inference_images_per_s": len(test) / infer_seconds if infer_seconds else float("nan"),
        "best_epoch": int(state["best_epoch"]),
        "best_val_auc": float(state["best"]),
        "train_images": len(train),
        "train_patients": int(np.unique(train.patient).size),
    }
    return Fitted(probs=probs, cost=cost)
