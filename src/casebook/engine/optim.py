"""Optimizer and learning-rate schedule from a model's ``train`` settings."""

from __future__ import annotations

from typing import Any

import torch


def make_optimizer(params, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    name = cfg.get("optimizer", "adam").lower()
    lr, wd = float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=float(cfg.get("momentum", 0.9)), nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: dict[str, Any], epochs: int):
    """``multistep`` (milestones as fractions of the epochs, as MedMNIST does), ``cosine`` or ``none``."""
    sched = cfg.get("schedule", {"name": "none"})
    name = sched.get("name", "none")
    if name == "multistep":
        milestones = [round(f * epochs) for f in sched.get("milestones", [0.5, 0.75])]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=sched.get("gamma", 0.1))
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"unknown schedule {name!r}")
