"""The images of a comparison study: every ingested image (2D or 3D) at one size,
z-scored per image, with its label, patient and id, in one ``images.npz`` that every
arm of the study reads (preprocessing shared between arms)."""

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
    """An ingested image that the study cannot use."""


@dataclass
class Images:
    """``x``: (n, 1, *size) float32; ``label``, ``patient``, ``image_id``: (n,)."""

    x: np.ndarray
    label: np.ndarray
    patient: np.ndarray
    image_id: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    @property
    def spatial_dims(self) -> int:
        return self.x.ndim - 2

    def take(self, mask: np.ndarray) -> "Images":
        return Images(self.x[mask], self.label[mask], self.patient[mask], self.image_id[mask])

    def of_patients(self, patients: Sequence[str]) -> "Images":
        return self.take(np.isin(self.patient, np.asarray(list(patients), dtype=str)))

    def of_ids(self, ids: Sequence[str]) -> "Images":
        return self.take(np.isin(self.image_id, np.asarray(list(ids), dtype=str)))


def squeezed(array: np.ndarray, image_id: str, path: Path) -> np.ndarray:
    """The image without singleton axes: 2D or 3D, an error naming it otherwise."""
    out = np.squeeze(np.asarray(array, dtype=np.float32))
    if out.ndim not in (2, 3):
        raise ImageError(f"{path} ({image_id}): a comparison study needs a 2D or 3D single-channel image, got shape {array.shape}")
    return out


def resized(image: np.ndarray, size: int) -> np.ndarray:
    """Antialiased (2D) or trilinear (3D) resize to ``size`` along every axis."""
    target = (size,) * image.ndim
    if image.shape == target:
        return image
    mode = "bilinear" if image.ndim == 2 else "trilinear"
    tensor = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    return torch.nn.functional.interpolate(tensor, size=target, mode=mode, antialias=image.ndim == 2, align_corners=False)[0, 0].numpy()


def zscore(image: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per image (a constant image becomes zeros)."""
    std = float(image.std())
    return (image - image.mean()) / (std if std > 0 else 1.0)


def load_dataset(data_dir: str | Path, size: int) -> Images:
    """Every image of an ingested data set (ingest refused unlabelled images: the family
    declares image labels)."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir / "manifest.tsv")
    arrays, ndims = [], set()
    for row in tqdm(list(manifest.itertuples()), desc="load images", unit="image"):
        array, _ = read_array(data_dir / row.image)
        image = squeezed(array, row.image_id, data_dir / row.image)
        ndims.add(image.ndim)
        if len(ndims) > 1:
            raise ImageError(
                f"{data_dir / row.image} ({row.image_id}): {image.ndim}D among images of another dimension; a study compares on one"
            )
        arrays.append(zscore(resized(image, size)).astype(np.float32))
    return Images(
        x=np.stack(arrays)[:, None],
        label=manifest["label"].to_numpy(dtype=np.int64),
        patient=manifest["patient_id"].to_numpy(dtype=str),
        image_id=manifest["image_id"].to_numpy(dtype=str),
    )


def save_images(path: str | Path, images: Images) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # np.savez would add '.npz' to a path without it
            np.savez(handle, x=images.x, label=images.label, patient=images.patient, image_id=images.image_id)


def load_images(path: str | Path) -> Images:
    with np.load(path) as data:
        return Images(data["x"], data["label"], data["patient"].astype(str), data["image_id"].astype(str))


def prepare_stage(data_dir: str, settings: dict[str, Any], outputs: dict[str, str], wildcards=None) -> Images:
    """The prepare_comparison rule: ``images.npz`` and its provenance record."""
    started, code = provenance.now(), provenance.code_state()
    images = load_dataset(data_dir, int(settings["size"]))
    save_images(outputs["images"], images)
    provenance.write_record(
        outputs["provenance"],
        rule="prepare_comparison",
        inputs=[str(Path(data_dir) / "manifest.tsv")],
        outputs=[outputs["images"]],
        params=settings,
        started=started,
        code=code,
        wildcards=wildcards,
    )
    return images
