"""A tiny preprocessed cache, as the preprocess and split rules write it, for the
training tests (test_train.py, test_distributed.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def write_tiny_cache(root: Path, n_images: int = 48) -> dict[str, Path]:
    """2D 16x16 images, class 1 has a bright 4x4 blob somewhere; two images (one per
    class) per patient; fold 0 trains on the first 32 and validates on the rest, fold 1
    the other way round. Returns fit()'s path arguments."""
    rng = np.random.default_rng(0)
    labels = np.arange(n_images) % 2
    images = rng.normal(0, 1, (n_images, 1, 16, 16)).astype(np.float32)
    for i in np.flatnonzero(labels == 1):
        y, x = rng.integers(2, 10, 2)
        images[i, 0, y : y + 4, x : x + 4] += 3.0
    np.save(root / "images.npy", images)
    ids = [f"img{i:03d}" for i in range(n_images)]
    index = pd.DataFrame(
        {
            "row": np.arange(n_images),
            "image_id": ids,
            "patient_id": [f"p{i // 2:03d}" for i in range(n_images)],
            "label": labels,
            "has_mask": False,
        }
    )
    index.to_csv(root / "index.tsv", sep="\t", index=False)
    train, val = ids[:32], ids[32:]
    splits = {"method": "test", "seed": 0, "test": [], "folds": [{"train": train, "val": val}, {"train": val, "val": train}]}
    (root / "splits.json").write_text(json.dumps(splits))
    return {"images_path": root / "images.npy", "index_path": root / "index.tsv", "splits_path": root / "splits.json"}
