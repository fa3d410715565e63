"""The canonical on-disk layout that every dataset adapter writes.

A dataset directory holds::

    images/<image_id>.nii.gz    one image per row (2D or 3D, spacing in the header)
    masks/<image_id>.nii.gz     optional lesion / ground-truth mask, same geometry
    manifest.tsv                one row per image (see MANIFEST_COLUMNS)
    dataset.json                class names, dimensionality, modality, counts

Arrays are in SimpleITK's array order ((y, x) in 2D, (z, y, x) in 3D); spacing is in
SimpleITK's physical order ((x, y) or (x, y, z)) in millimetres.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm.auto import tqdm

from casebook.fileio import write_json

MANIFEST_COLUMNS = [
    "image_id",  # unique per image, safe as a file name
    "patient_id",  # pseudonymous; every split is made on this column
    "label",  # integer class index into dataset.json's class_names
    "source_split",  # the source's own split (train/val/test), empty when it has none
    "image",  # path relative to the dataset directory
    "mask",  # path relative to the dataset directory, empty when there is none
    "source_checksum",  # checksum of the source file the image came from
]


class ManifestError(ValueError):
    """A manifest that does not describe the files beside it."""


@dataclass
class Record:
    """One image produced by a dataset adapter, before it is written to disk."""

    image_id: str
    patient_id: str
    label: int
    image: np.ndarray
    spacing: tuple[float, ...]
    mask: np.ndarray | None = None
    source_split: str = ""
    source_checksum: str = ""


def _to_sitk(array: np.ndarray, spacing: tuple[float, ...]) -> sitk.Image:
    # a trailing channel axis (RGB MedMNIST sets) becomes a vector pixel
    image = sitk.GetImageFromArray(array, isVector=array.ndim == len(spacing) + 1)
    if len(spacing) != image.GetDimension():
        raise ValueError(f"spacing {spacing} does not match a {image.GetDimension()}D array")
    image.SetSpacing(tuple(float(s) for s in spacing))
    return image


def write_dataset(
    records: Iterable[Record],
    out_dir: str | Path,
    *,
    class_names: list[str],
    modality: str,
    description: str = "",
    total: int | None = None,
) -> pd.DataFrame:
    """Write records in the canonical layout and return the manifest.

    Everything is written to a sibling temporary directory first and renamed into place
    at the end, so a failure leaves no half-written dataset behind.
    """
    out_dir = Path(out_dir)
    tmp_dir = out_dir.with_name(out_dir.name + ".partial")
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    (tmp_dir / "images").mkdir(parents=True)
    rows = []
    ndim = None
    try:
        for rec in tqdm(records, total=total, desc=f"ingest {out_dir.name}", unit="img"):
            if not 0 <= int(rec.label) < len(class_names):
                raise ValueError(f"{rec.image_id}: label {rec.label} outside {class_names}")
            ndim = len(rec.spacing)
            image_rel = f"images/{rec.image_id}.nii.gz"
            sitk.WriteImage(_to_sitk(rec.image, rec.spacing), str(tmp_dir / image_rel), True)
            mask_rel = ""
            if rec.mask is not None:
                mask_rel = f"masks/{rec.image_id}.nii.gz"
                (tmp_dir / "masks").mkdir(exist_ok=True)
                mask = _to_sitk(rec.mask.astype(np.uint8), rec.spacing)
                sitk.WriteImage(mask, str(tmp_dir / mask_rel), True)
            rows.append(
                {
                    "image_id": rec.image_id,
                    "patient_id": rec.patient_id,
                    "label": int(rec.label),
                    "source_split": rec.source_split,
                    "image": image_rel,
                    "mask": mask_rel,
                    "source_checksum": rec.source_checksum,
                }
            )
        manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
        if manifest["image_id"].duplicated().any():
            dup = manifest.loc[manifest["image_id"].duplicated(), "image_id"].iloc[0]
            raise ValueError(f"duplicate image_id {dup!r}")
        manifest.to_csv(tmp_dir / "manifest.tsv", sep="\t", index=False)
        write_json(
            tmp_dir / "dataset.json",
            {
                "class_names": list(class_names),
                "spatial_dims": ndim,
                "modality": modality,
                "description": description,
                "n_images": len(manifest),
                "n_patients": int(manifest["patient_id"].nunique()),
                "label_counts": {
                    class_names[k]: int(v) for k, v in manifest["label"].value_counts().sort_index().items()
                },
            },
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp_dir.rename(out_dir)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
    return manifest


def read_manifest(path: str | Path, *, check_files: bool = True) -> pd.DataFrame:
    """Read and check a manifest: required columns, unique ids, and files that exist."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    manifest = pd.read_csv(path, sep="\t", dtype={"image_id": str, "patient_id": str}, keep_default_na=False)
    missing_cols = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing_cols:
        raise ManifestError(f"{path}: missing column(s) {', '.join(missing_cols)}")
    if manifest["image_id"].duplicated().any():
        dup = manifest.loc[manifest["image_id"].duplicated(), "image_id"].iloc[0]
        raise ManifestError(f"{path}: duplicate image_id {dup!r}")
    if check_files:
        for col in ("image", "mask"):
            for rel in manifest[col]:
                if rel and not (path.parent / rel).is_file():
                    raise ManifestError(f"{path}: {col} file {path.parent / rel} does not exist")
    manifest["label"] = manifest["label"].astype(int)
    return manifest


def read_array(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read an image as (array in SimpleITK order, spacing)."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), tuple(image.GetSpacing())
