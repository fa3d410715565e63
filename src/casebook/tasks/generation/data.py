"""The images a generative model learns: every ingested 2D image resized to one square
size and mapped from its intensity range to [-1, 1] (the diffusion models' scale), with
its label, patient and image id, in one ``images.npz``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from casebook import provenance
from casebook.fileio import atomic_path
from casebook.layout import read_array, read_manifest


class ImageError(ValueError):
    """An ingested image that a 2D generation study cannot use."""


@dataclass
class ImageSet:
    """Images on the network scale ([-1, 1], shape (n, size, size)) with their labels,
    patients and image ids."""

    images: np.ndarray
    labels: np.ndarray
    patient: np.ndarray
    image_id: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, mask: np.ndarray) -> "ImageSet":
        return ImageSet(self.images[mask], self.labels[mask], self.patient[mask], self.image_id[mask])


def to_network(array: np.ndarray, intensity_range: Sequence[float]) -> np.ndarray:
    """``intensity_range`` (low, high) mapped to [-1, 1], clipped outside it."""
    low, high = (float(v) for v in intensity_range)
    if not high > low:
        raise ValueError(f"an intensity range needs low < high, got {intensity_range}")
    return np.clip(2 * (np.asarray(array, dtype=np.float32) - low) / (high - low) - 1, -1.0, 1.0)


def to_unit(images: np.ndarray) -> np.ndarray:
    """The network scale [-1, 1] mapped to [0, 1] (for display and image metrics)."""
    return np.clip((np.asarray(images, dtype=np.float32) + 1) / 2, 0.0, 1.0)


def as_2d(array: np.ndarray, image_id: str, path: Path) -> np.ndarray:
    """A 2D image (a single-slice volume is squeezed); an error naming it otherwise."""
    squeezed = np.squeeze(array)
    if squeezed.ndim != 2:
        raise ImageError(f"{image_id} ({path}): a generation study needs 2D images, got shape {array.shape}")
    return squeezed


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Area-averaged (antialiased) resize of a 2D image to ``size`` x ``size``."""
    if image.shape == (size, size):
        return image.astype(np.float32)
    tensor = torch.from_numpy(image.astype(np.float32))[None, None]
    return torch.nn.functional.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0, 0].numpy()


def load_dataset(data_dir: str | Path, size: int, intensity_range: Sequence[float]) -> ImageSet:
    """Every image of an ingested data set, resized and scaled (labels are required:
    the family declares image_labels, so ingest has refused unlabelled images)."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir / "manifest.tsv")
    images = []
    for row in tqdm(list(manifest.itertuples()), desc="load images", unit="image"):
        array, _ = read_array(data_dir / row.image)
        images.append(to_network(resize(as_2d(array, row.image_id, data_dir / row.image), size), intensity_range))
    return ImageSet(
        images=np.stack(images).astype(np.float32),
        labels=manifest["label"].to_numpy(dtype=np.int64),
        patient=manifest["patient_id"].to_numpy(dtype=str),
        image_id=manifest["image_id"].to_numpy(dtype=str),
    )


def save_images(path: str | Path, images: ImageSet) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # np.savez would add '.npz' to a path without it
            np.savez_compressed(handle, images=images.images, labels=images.labels, patient=images.patient, image_id=images.image_id)


def load_images(path: str | Path, ids: Sequence[str] | None = None) -> ImageSet:
    """The images of ``images.npz``, only those of ``ids`` when given (in file order)."""
    with np.load(path) as data:
        images = ImageSet(data["images"], data["labels"], data["patient"].astype(str), data["image_id"].astype(str))
    if ids is None:
        return images
    return images.subset(np.isin(images.image_id, np.asarray(list(ids), dtype=str)))


def prepare_stage(data_dir: str, settings: dict[str, Any], outputs: dict[str, str], wildcards=None) -> ImageSet:
    """The prepare_generation rule: ``images.npz`` and its provenance record."""
    started, code = provenance.now(), provenance.code_state()
    images = load_dataset(data_dir, int(settings["size"]), settings["intensity_range"])
    save_images(outputs["images"], images)
    provenance.write_record(
        outputs["provenance"],
        rule="prepare_generation",
        inputs=[str(Path(data_dir) / "manifest.tsv")],
        outputs=[outputs["images"]],
        params=settings,
        started=started,
        code=code,
        wildcards=wildcards,
    )
    return images
