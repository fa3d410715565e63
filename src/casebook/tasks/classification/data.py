"""PyTorch datasets over the preprocessed cache (memory-mapped arrays)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset


class CachedImages(Dataset):
    """Rows of the preprocessed array, with labels and an optional augmentation."""

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int],
        rows: Sequence[int],
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        # np.array copies out of the memory map, so the loader never holds the file open per item
        x = torch.from_numpy(np.array(self.images[self.rows[i]], dtype=np.float32))
        if self.transform is not None:
            x = self.transform(x).float()
        return x, int(self.labels[i])


def rows_for(index: pd.DataFrame, image_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cache rows and labels of the given image ids, in that order."""
    by_id = index.set_index("image_id")
    missing = [i for i in image_ids if i not in by_id.index]
    if missing:
        raise KeyError(f"{len(missing)} image id(s) not in the preprocessed index, e.g. {missing[:3]}")
    part = by_id.loc[list(image_ids)]
    return part["row"].to_numpy(), part["label"].to_numpy()


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader whose shuffling and worker seeds come from its own seeded generator.

    Workers are not persistent: each epoch's workers are seeded afresh from the
    generator, so restoring the generator's state on resume restores augmentations too.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
    )
