"""Checkpoints: one naming scheme, atomic saves, a resume key, and the random state.

Neither checkpoint is a Snakemake output, so a failed or killed job keeps them for its
rerun; ``model.pt`` (an output, deleted by Snakemake when a job fails) is copied from
the best checkpoint at the end of training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from casebook.fileio import atomic_path

log = logging.getLogger(__name__)

#: the last epoch's full state (resumed after a kill) and the best epoch's weights
CHECKPOINT = "last_checkpoint.pt"
BEST = "best_checkpoint.pt"


def save_torch(path: Path, obj: Any) -> None:
    """torch.save, atomically (a killed job leaves the previous file, never half of one)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def resume_key(cfg: dict[str, Any], fold: int, data_checksums: dict[str, str]) -> str:
    """What a checkpoint must have been made under to be resumed: config, fold and data."""
    return hashlib.sha256(json.dumps([cfg, fold, data_checksums], sort_keys=True, default=str).encode()).hexdigest()


def resumable_checkpoint(path, resume_key: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` when it may be resumed: made under ``resume_key`` (the
    same config and data) by a run that did not finish; else None, saying why."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("resume_key") != resume_key:
        log.warning("%s was made with another config or data; starting afresh", path)
        return None
    if ckpt["state"].get("complete"):
        log.info("%s is from a finished run; training afresh", path)
        return None
    return ckpt


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The random streams to restore for an exact resume (and a loader's generator)."""
    state = {"rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}}
    if generator is not None:
        state["loader_generator"] = generator.get_state()
    return state


def set_rng_state(saved: dict[str, Any], generator: torch.Generator | None = None) -> None:
    if generator is not None and "loader_generator" in saved:
        generator.set_state(saved["loader_generator"])
    torch.set_rng_state(saved["rng"]["torch"])
    np.random.set_state(saved["rng"]["numpy"])
    random.setstate(saved["rng"]["python"])
