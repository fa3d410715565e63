"""Where and how a job computes: the device, seeds and determinism, mixed precision."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
from monai.utils import set_determinism


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch and ask for deterministic algorithms.

    On CUDA, cuBLAS needs CUBLAS_WORKSPACE_CONFIG for determinism, and some kernels
    (e.g. 3D adaptive pooling backward) have no deterministic version: those warn
    instead of failing, so GPU runs are reproducible only up to such kernels.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_determinism(seed=seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    random.seed(seed)
    np.random.seed(seed)


def seed_rng(seed: int) -> None:
    """Seed the three random streams (not the determinism flags): another rank's stream."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision on a GPU (bfloat16: no loss scaling needed); nothing on a CPU,
    where float16 matmuls are slow or missing."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
