"""The canonical on-disk layout that every dataset adapter writes.

A dataset directory holds::

    images/<image_id>.nii.gz    one image per row (2D or 3D, spacing in the header)
    masks/<image_id>.nii.gz     optional lesion / ground-truth mask, same geometry
    rois/<image_id>.nii.gz      optional region of interest (a brain mask), same geometry
    boxes.tsv                   optional boxes of findings, world mm (casebook.boxes)
    manifest.tsv                one row per image (see MANIFEST_COLUMNS)
    dataset.json                class names, dimensionality, modality, counts

Arrays are in SimpleITK's array order ((y, x) in 2D, (z, y, x) in 3D); spacing is in
SimpleITK's physical order ((x, y) or (x, y, z)) in millimetres.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm.auto import tqdm

from casebook.boxes import BOXES_FILE, Box, box_problems, boxes_frame
from casebook.fileio import write_json

MANIFEST_COLUMNS = [
    "image_id",  # unique per image, safe as a file name
    "patient_id",  # pseudonymous; every split is made on this column
    "label",  # integer class index into dataset.json's class_names; empty for segmentation-only data
    "source_split",  # the source's own split (train/val/test), empty when it has none
    "image",  # path relative to the dataset directory
    "mask",  # path relative to the dataset directory, empty when there is none
    "source_checksum",  # checksum of the source file the image came from
]
# optional: "roi", a region-of-interest mask (brain mask) path, when the source has one

#: What ingest does with NaN / +inf / -inf voxels of an image (case-study key
#: ``dataset.non_finite``): refuse the data set, or replace them by the image's smallest
#: finite value (per channel; 0 where a channel has none) and report each image. A mask
#: or region of interest with non-finite voxels is always refused.
NON_FINITE_POLICIES = ("error", "replace")

log = logging.getLogger(__name__)


class ManifestError(ValueError):
    """A manifest that does not describe the files beside it."""


class NonFiniteError(ValueError):
    """An image or mask with NaN or infinite voxels: SimpleITK's NIfTI writer would store
    NaN as 0 without a word, so ingest refuses them (or replaces them, when asked to)."""


@dataclass
class Record:
    """One image produced by a dataset adapter, before it is written to disk.

    ``image`` and ``mask`` are either arrays (with ``spacing`` and optionally ``origin``
    and ``direction`` giving the geometry) or SimpleITK images, whose own geometry is kept
    and whose header metadata is dropped (it may hold identifiers). A multi-channel image
    is a vector image (channels last in array form). ``label`` is None for data sets that
    only have voxel labels (segmentation).
    """

    image_id: str
    patient_id: str
    label: int | None
    image: np.ndarray | sitk.Image
    spacing: tuple[float, ...] = ()
    mask: np.ndarray | sitk.Image | None = None
    source_split: str = ""
    source_checksum: str = ""
    origin: tuple[float, ...] | None = None
    direction: tuple[float, ...] | None = None
    roi: np.ndarray | sitk.Image | None = None
    #: grouping columns of the manifest (site, sex, scanner, ...) for subgroup analysis
    attributes: dict[str, str] = field(default_factory=dict)
    #: where the image came from (a file), for error messages and the ingest log only:
    #: never written to the manifest or dataset.json, as a source path may name the patient
    source: str = ""
    #: findings as boxes in world coordinates (casebook.boxes.Box), for detection data
    boxes: list[Box] | None = None


def _to_sitk(array: np.ndarray | sitk.Image, spacing: tuple[float, ...], origin=None, direction=None) -> sitk.Image:
    if isinstance(array, sitk.Image):
        return without_metadata(array)
    # a trailing channel axis (RGB MedMNIST sets) becomes a vector pixel
    image = sitk.GetImageFromArray(array, isVector=array.ndim == len(spacing) + 1)
    if len(spacing) != image.GetDimension():
        raise ValueError(f"spacing {spacing} does not match a {image.GetDimension()}D array")
    image.SetSpacing(tuple(float(s) for s in spacing))
    if origin is not None:
        image.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        image.SetDirection(tuple(float(d) for d in direction))
    return image


GEOMETRY_ATOL = 1e-4  # mm (spacing, origin) and cosine (direction)


def geometry_mismatches(image: Any, other: Any) -> list[tuple[str, Any, Any]]:
    """(property, image value, other value) for each grid property where two images differ.

    Works on anything with SimpleITK's getters: images, and ``sitk.ImageFileReader``
    after ``ReadImageInformation()`` (headers only, no pixels read).
    """
    if image.GetDimension() != other.GetDimension():
        # the other properties cannot be compared element-wise across dimensions
        return [("dimension", image.GetDimension(), other.GetDimension())]
    out = []
    if tuple(image.GetSize()) != tuple(other.GetSize()):
        out.append(("size", tuple(image.GetSize()), tuple(other.GetSize())))
    for prop in ("spacing", "origin", "direction"):
        a = tuple(getattr(image, f"Get{prop.capitalize()}")())
        b = tuple(getattr(other, f"Get{prop.capitalize()}")())
        if not np.allclose(a, b, rtol=0.0, atol=GEOMETRY_ATOL):
            out.append((prop, a, b))
    return out


def without_metadata(image: sitk.Image) -> sitk.Image:
    """A copy of ``image`` with no header metadata: a NIfTI ``descrip`` or DICOM-derived
    key could carry an identifier into an output; pixels and geometry are all we keep."""
    image = sitk.Image(image)
    for key in image.GetMetaDataKeys():
        image.EraseMetaData(key)
    return image


def _pixels(image: np.ndarray | sitk.Image, spacing: tuple[float, ...] = ()) -> tuple[np.ndarray, bool]:
    """An image's values (a view where possible) and whether their last axis is channels."""
    if isinstance(image, sitk.Image):
        return sitk.GetArrayViewFromImage(image), image.GetNumberOfComponentsPerPixel() > 1
    array = np.asarray(image)
    return array, bool(spacing) and array.ndim == len(spacing) + 1


def non_finite_voxels(array: np.ndarray, *, channels_last: bool = False) -> int:
    """The number of voxels holding NaN, +inf or -inf (in any channel, when the last axis
    is channels); 0 for integer and boolean arrays, which cannot hold them."""
    if array.dtype.kind != "f" or array.size == 0:
        return 0
    if np.isfinite(array.min()) and np.isfinite(array.max()):  # min/max propagate NaN: no mask needed
        return 0
    bad = ~np.isfinite(array)
    if channels_last:
        bad = bad.any(axis=-1)
    return int(np.count_nonzero(bad))


def _named(image_id: str, source: str) -> str:
    return f"image {image_id}" + (f" ({source})" if source else "")


def refuse_non_finite_mask(mask: np.ndarray | sitk.Image, *, image_id: str, source: str = "", what: str = "mask") -> None:
    """Refuse a mask (labels, region of interest) with NaN or infinite voxels, naming the
    image, the mask's source file and the count; a mask holds label values only."""
    values, channels_last = _pixels(mask)
    count = non_finite_voxels(values, channels_last=channels_last)
    if count:
        raise NonFiniteError(
            f"{_named(image_id, source)}: its {what} has {count} non-finite voxel(s) (NaN or inf); a {what} must hold label values only"
        )


def _finite_image(rec: Record, policy: str) -> tuple[np.ndarray | sitk.Image, int]:
    """A record's image with no NaN or infinite voxels, and how many were replaced.

    ``error`` refuses an image that has any; ``replace`` sets each to the smallest finite
    value of its channel (0 where the channel has none) and logs a warning. An image
    without any is returned untouched (same object, same bytes).
    """
    values, channels_last = _pixels(rec.image, rec.spacing)
    count = non_finite_voxels(values, channels_last=channels_last)
    if not count:
        return rec.image, 0
    if policy != "replace":
        raise NonFiniteError(
            f"{_named(rec.image_id, rec.source)}: {count} non-finite voxel(s) (NaN or inf); the NIfTI "
            f"written would hold 0 in their place. Fix the source, or set dataset.non_finite: replace in "
            f"the case study to replace them by the image's smallest finite value"
        )
    fixed = np.array(values, copy=True)
    for channel in [fixed[..., c] for c in range(fixed.shape[-1])] if channels_last else [fixed]:
        finite = np.isfinite(channel)
        channel[~finite] = channel[finite].min() if finite.any() else 0
    log.warning(
        "%s: replaced %d non-finite voxel(s) (NaN or inf) by the image's smallest finite value",
        _named(rec.image_id, rec.source),
        count,
    )
    if isinstance(rec.image, sitk.Image):
        image = sitk.GetImageFromArray(fixed, isVector=channels_last)
        image.CopyInformation(rec.image)
        return image, count
    return fixed, count


def _label_mask(mask: np.ndarray | sitk.Image, image: sitk.Image) -> sitk.Image:
    """The mask as uint8 on its image's grid (arrays take the image's geometry)."""
    if isinstance(mask, sitk.Image):
        return sitk.Cast(without_metadata(mask), sitk.sitkUInt8)
    out = sitk.GetImageFromArray(np.asarray(mask).astype(np.uint8))
    out.CopyInformation(image)
    return out


def _start_partial(out_dir: Path) -> Path:
    """A fresh sibling ``<name>.partial`` directory with its ``images/`` folder; a stale
    one (left by a crash) is removed first so no old file leaks into the new dataset."""
    tmp_dir = out_dir.with_name(out_dir.name + ".partial")
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    (tmp_dir / "images").mkdir(parents=True)
    return tmp_dir


def _write_label_image(mask: np.ndarray | sitk.Image, image: sitk.Image, rec: Record, tmp_dir: Path, folder: str, what: str) -> str:
    """Write a record's mask or region of interest under ``folder`` on its image's grid and
    return its relative path; one with non-finite voxels is refused before anything is written."""
    refuse_non_finite_mask(mask, image_id=rec.image_id, source=rec.source, what=what)
    rel = f"{folder}/{rec.image_id}.nii.gz"
    (tmp_dir / folder).mkdir(exist_ok=True)
    sitk.WriteImage(_label_mask(mask, image), str(tmp_dir / rel), True)
    return rel


def _write_record(
    rec: Record, tmp_dir: Path, class_names: list[str], non_finite: str, replaced: dict[str, int]
) -> tuple[dict[str, Any], int]:
    """Write one record's image (and mask, region of interest) and return its manifest
    row and the image's dimension; counts of replaced non-finite voxels go to ``replaced``."""
    if rec.label is not None and not 0 <= int(rec.label) < len(class_names):
        raise ValueError(f"{rec.image_id}: label {rec.label} outside {class_names}")
    pixels, n_replaced = _finite_image(rec, non_finite)
    if n_replaced:
        replaced[rec.image_id] = n_replaced
    image = _to_sitk(pixels, rec.spacing, rec.origin, rec.direction)
    image_rel = f"images/{rec.image_id}.nii.gz"
    sitk.WriteImage(image, str(tmp_dir / image_rel), True)
    mask_rel = "" if rec.mask is None else _write_label_image(rec.mask, image, rec, tmp_dir, "masks", "mask")
    roi_rel = "" if rec.roi is None else _write_label_image(rec.roi, image, rec, tmp_dir, "rois", "region of interest")
    row = {
        "image_id": rec.image_id,
        "patient_id": rec.patient_id,
        "label": "" if rec.label is None else int(rec.label),
        "source_split": rec.source_split,
        "image": image_rel,
        "mask": mask_rel,
        "source_checksum": rec.source_checksum,
        "roi": roi_rel,
        **_attribute_columns(rec),
    }
    return row, image.GetDimension()


def _manifest(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The manifest of the written rows: layout columns, then ``roi`` only where some record
    has one, then the grouping attributes (sorted; "" where a record lacks one). Duplicate
    image ids are refused: their files would have overwritten each other."""
    attributes = sorted({key for row in rows for key in row} - set(MANIFEST_COLUMNS) - {"roi"})
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS + ["roi"] + attributes).fillna({a: "" for a in attributes})
    if not (manifest["roi"] != "").any():
        manifest = manifest.drop(columns="roi")
    if manifest["image_id"].duplicated().any():
        dup = manifest.loc[manifest["image_id"].duplicated(), "image_id"].iloc[0]
        raise ValueError(f"duplicate image_id {dup!r}")
    return manifest


def _dataset_info(
    manifest: pd.DataFrame,
    *,
    class_names: list[str],
    spatial_dims: int | None,
    modality: str,
    description: str,
    channel_names: list[str] | None,
    labels: dict[int, str] | None,
    source: dict | None,
    non_finite: str,
    replaced: dict[str, int],
) -> dict[str, Any]:
    """dataset.json's content (key order is the file's); the optional blocks appear only
    when given, the ``non_finite`` record only when some voxel was replaced."""
    return {
        "class_names": list(class_names),
        "spatial_dims": spatial_dims,
        "modality": modality,
        "description": description,
        "n_images": len(manifest),
        "n_patients": int(manifest["patient_id"].nunique()),
        "label_counts": {class_names[int(k)]: int(v) for k, v in manifest["label"].value_counts().sort_index().items() if k != ""},
        **({"channel_names": list(channel_names)} if channel_names else {}),
        **({"labels": {str(k): v for k, v in sorted(labels.items())}} if labels else {}),
        **({"source": source} if source else {}),
        **(
            {
                "non_finite": {
                    "policy": non_finite,
                    "replaced_by": "the image's smallest finite value (per channel; 0 where a channel has none)",
                    "voxels_replaced": replaced,
                }
            }
            if replaced
            else {}
        ),
    }


def _publish(tmp_dir: Path, out_dir: Path) -> None:
    """Move the complete dataset into place, replacing the old one only now, so a failed
    run leaves the previous dataset untouched."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp_dir.rename(out_dir)


def write_dataset(
    records: Iterable[Record],
    out_dir: str | Path,
    *,
    class_names: list[str],
    modality: str,
    description: str = "",
    total: int | None = None,
    channel_names: list[str] | None = None,
    labels: dict[int, str] | None = None,
    source: dict | None = None,
    non_finite: str = "error",
) -> pd.DataFrame:
    """Write records in the canonical layout and return the manifest.

    Everything is written to a sibling temporary directory first and renamed into place
    at the end, so a failure leaves no half-written dataset behind.

    ``channel_names`` (for multi-channel images) and ``labels`` (voxel label values and
    their names, for masks with several classes) go to dataset.json, as in nnU-Net's;
    ``source`` (data set name, licence, ...) is recorded there too.

    ``non_finite`` (one of :data:`NON_FINITE_POLICIES`) says what to do with NaN or
    infinite image voxels: ``error`` refuses them, naming the image and the count;
    ``replace`` replaces them by the image's smallest finite value (per channel), logs a
    warning per image and records the count per image under ``non_finite`` in
    dataset.json. Masks and regions of interest with non-finite voxels are always refused.
    """
    if non_finite not in NON_FINITE_POLICIES:
        raise ValueError(f"non_finite must be one of {list(NON_FINITE_POLICIES)}, got {non_finite!r}")
    out_dir = Path(out_dir)
    tmp_dir = _start_partial(out_dir)
    rows = []
    ndim = None  # spatial dimension of the last image written (None when there are none)
    replaced: dict[str, int] = {}  # image_id -> non-finite voxels replaced
    boxes: list[Box] = []
    has_boxes = False  # a detection data set: boxes.tsv even when no image has a finding
    try:
        for rec in tqdm(records, total=total, desc=f"ingest {out_dir.name}", unit="img"):
            row, ndim = _write_record(rec, tmp_dir, class_names, non_finite, replaced)
            rows.append(row)
            boxes += _checked_boxes(rec, tmp_dir / row["image"])
            has_boxes |= rec.boxes is not None
        manifest = _manifest(rows)
        manifest.to_csv(tmp_dir / "manifest.tsv", sep="\t", index=False)
        if has_boxes:
            boxes_frame(boxes).to_csv(tmp_dir / BOXES_FILE, sep="\t", index=False)
        dataset_info = _dataset_info(
            manifest,
            class_names=class_names,
            spatial_dims=ndim,
            modality=modality,
            description=description,
            channel_names=channel_names,
            labels=labels,
            source=source,
            non_finite=non_finite,
            replaced=replaced,
        )
        write_json(tmp_dir / "dataset.json", dataset_info)
        _publish(tmp_dir, out_dir)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
    return manifest


def image_header(path: str | Path) -> sitk.ImageFileReader:
    """The header of an image file (size, spacing, origin, direction), no pixels read."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _checked_boxes(rec: Record, image_path: Path) -> list[Box]:
    """A record's boxes, each of its own image and with its centre inside it."""
    boxes = list(rec.boxes or [])
    if not boxes:
        return boxes
    header = image_header(image_path)  # the written image's geometry, not its voxels again
    problems = [f"{rec.image_id}: box of another image {b.image_id!r}" for b in boxes if b.image_id != rec.image_id]
    problems += box_problems(boxes, {rec.image_id: header}, rec.source or rec.image_id)
    if problems:
        raise ValueError("; ".join(problems))
    return boxes


def _attribute_columns(rec: Record) -> dict[str, str]:
    """A record's grouping attributes as manifest columns; a name that would overwrite a
    layout column is refused."""
    clash = set(rec.attributes) & (set(MANIFEST_COLUMNS) | {"roi"})
    if clash:
        raise ValueError(f"{rec.image_id}: attribute name(s) {sorted(clash)} clash with manifest columns")
    return {key: str(value) for key, value in rec.attributes.items()}


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
        for col in ("image", "mask", *(["roi"] if "roi" in manifest.columns else [])):
            for rel in manifest[col]:
                if rel and not (path.parent / rel).is_file():
                    raise ManifestError(f"{path}: {col} file {path.parent / rel} does not exist")
    if (manifest["label"].astype(str) == "").any():
        # segmentation-only data sets have no image-level label: a nullable integer column
        manifest["label"] = pd.to_numeric(manifest["label"].replace("", None)).astype("Int64")
    else:
        manifest["label"] = manifest["label"].astype(int)
    return manifest


def read_array(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read an image as (array in SimpleITK order, spacing)."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), tuple(image.GetSpacing())
