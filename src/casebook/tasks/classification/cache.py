"""Reading the preprocessed cache (numpy only: a figure job reads it without importing
the torch and TorchIO that wrote it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_cache(images_path: str | Path, masks_path: str | Path | None = None):
    """Memory-map the cached arrays (so a data loader reads only what it indexes)."""
    images = np.load(images_path, mmap_mode="r")
    masks = None
    if masks_path is not None:
        masks = np.load(masks_path, mmap_mode="r")
        if masks.size == 0:
            masks = None
    return images, masks
