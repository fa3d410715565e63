"""Preprocessing: resample (SimpleITK), normalise intensities and resize (TorchIO),
cached once as arrays so that training never redoes it epoch after epoch.

Output, for a canonical dataset directory:
``images.npy`` float32 (N, C, *size), ``masks.npy`` uint8 (N, 1, *size) or an empty
array when the data set has no masks, and ``index.tsv`` (row order, ids, labels).
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
import torchio as tio
from tqdm.auto import tqdm

from casebook.fileio import atomic_path
from casebook.imaging import check_same_geometry, resample_to_spacing
from casebook.layout import read_manifest
from casebook.tasks.classification.cache import load_cache  # noqa: F401  (the cache's reader, beside its writer)

log = logging.getLogger(__name__)


def _to_tensor(image: sitk.Image) -> tuple[torch.Tensor, np.ndarray]:
    """A TorchIO-shaped tensor (C, *spatial[, 1]) and its affine, from a SimpleITK image.

    Arrays keep SimpleITK's array order; a 2D image gets a trailing singleton axis,
    which is how TorchIO recognises 2D images.
    """
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = np.moveaxis(array, -1, 0)  # vector pixels (RGB) become channels
    else:
        array = array[None]
    spacing = list(image.GetSpacing())[::-1]
    if image.GetDimension() == 2:
        array = array[..., None]
        spacing.append(1.0)
    return torch.from_numpy(np.ascontiguousarray(array)), np.diag([*spacing, 1.0])


def apply_plan(cfg: dict[str, Any], plan: dict[str, Any] | None) -> dict[str, Any]:
    """The preprocessing config with every ``auto`` replaced by the plan's choice.

    The plan (see :mod:`casebook.fingerprint`) is derived from the data set's
    fingerprint, as nnU-Net's is: the target spacing, and for CT the clipping range
    and the foreground mean and standard deviation.
    """
    cfg = dict(cfg)
    if "auto" not in (cfg.get("spacing"), cfg.get("intensity")):
        return cfg
    if plan is None:
        raise ValueError("preprocess settings ask for 'auto', but no plan (qc/plan.json) was given")
    if cfg.get("spacing") == "auto":
        cfg["spacing"] = list(plan["spacing"])
    if cfg.get("intensity") == "auto":
        scheme = plan["intensity"]
        if scheme["scheme"] == "ct":
            first = scheme["channels"][0] if "channels" in scheme else scheme
            cfg.update(intensity="ct", clip=list(first["clip"]), mean=float(first["mean"]), std=float(first["std"]))
        else:
            cfg.update(intensity="zscore", use_roi=bool(scheme.get("use_roi")))
    return cfg


def _standardize(tensor: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return (tensor - mean) / std


def intensity_transform(cfg: dict[str, Any]) -> tio.Transform:
    """The intensity normalisation named in the config (TorchIO)."""
    method = cfg.get("intensity", "zscore")
    if method == "zscore":
        # inside the region of interest (the brain) when asked: background voxels would
        # otherwise dominate the mean and sd of a skull-stripped MRI
        return tio.ZNormalization(masking_method="roi" if cfg.get("use_roi") else None)
    if method == "ct":
        # nnU-Net's CT scheme: clip at the foreground percentiles, then one global z-score
        # (the same mean and sd for every image, so HU keep their meaning across scans)
        low, high = cfg["clip"]
        std = max(float(cfg["std"]), 1e-8)
        return tio.Compose(
            [
                tio.Clamp(out_min=low, out_max=high),
                tio.Lambda(partial(_standardize, mean=float(cfg["mean"]), std=std), types_to_apply=[tio.INTENSITY]),
            ]
        )
    if method == "minmax":
        return tio.RescaleIntensity(out_min_max=(0, 1))
    if method == "window":
        low, high = cfg["window"]
        return tio.Compose([tio.Clamp(out_min=low, out_max=high), tio.RescaleIntensity((0, 1), in_min_max=(low, high))])
    raise ValueError(f"unknown intensity normalisation {method!r}")


def spatial_transform(cfg: dict[str, Any], spatial_dims: int) -> tio.Transform:
    """Resize or crop/pad to the configured size (array order)."""
    size = list(cfg["size"])
    if len(size) != spatial_dims:
        raise ValueError(f"preprocess.size {size} does not match {spatial_dims}D images")
    target = size + [1] if spatial_dims == 2 else size
    if cfg.get("spatial", "resize") == "crop_or_pad":
        return tio.CropOrPad(target)
    return tio.Resize(target)


def preprocess_subject(
    image: sitk.Image, mask: sitk.Image | None, cfg: dict[str, Any], *, name: str = "image", roi: sitk.Image | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Preprocess one image (and its mask, with the same geometry) into arrays.

    A constant (blank) image cannot be z-scored or min-max scaled: it becomes all zeros,
    with a warning naming it, instead of stopping the whole stage.
    """
    if cfg.get("spacing"):
        image = resample_to_spacing(image, cfg["spacing"], is_label=False)
        # masks onto the resampled image's own grid, so that all stay aligned
        mask, roi = (
            None if m is None else sitk.Resample(m, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, m.GetPixelID())
            for m in (mask, roi)
        )
    tensor, affine = _to_tensor(image)
    subject = {"image": tio.ScalarImage(tensor=tensor, affine=affine)}
    for key, labels in (("mask", mask), ("roi", roi)):
        if labels is not None:
            label_tensor, label_affine = _to_tensor(labels)
            subject[key] = tio.LabelMap(tensor=label_tensor, affine=label_affine)
    steps = [spatial_transform(cfg, image.GetDimension())]
    if cfg.get("intensity", "zscore") in ("zscore", "minmax", "ct") and float(tensor.max()) == float(tensor.min()):
        log.warning("%s: constant image (value %s); normalised to zeros", name, float(tensor.min()))
        subject["image"] = tio.ScalarImage(tensor=torch.zeros_like(tensor), affine=affine)
    else:
        steps.insert(0, intensity_transform(cfg))
    transform = tio.Compose(steps)
    out = transform(tio.Subject(subject))
    squeeze = (lambda a: a[..., 0]) if image.GetDimension() == 2 else (lambda a: a)
    image_array = squeeze(out["image"].numpy()).astype(np.float32)
    mask_array = squeeze(out["mask"].numpy()).astype(np.uint8) if mask is not None else None
    return image_array, mask_array


def preprocess_dataset(
    manifest_path: str | Path,
    cfg: dict[str, Any],
    *,
    images_out: str | Path,
    masks_out: str | Path,
    index_out: str | Path,
    plan_path: str | Path | None = None,
) -> pd.DataFrame:
    """Preprocess every image of a canonical dataset into one cached array file.

    ``plan_path`` is the plan JSON derived from the data set fingerprint; it fills in
    the settings given as ``auto``.
    """
    plan = json.loads(Path(plan_path).read_text()) if plan_path else None
    cfg = apply_plan(cfg, plan)
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    root = manifest_path.parent
    has_masks = bool((manifest["mask"] != "").any())
    use_roi = bool(cfg.get("use_roi")) and "roi" in manifest.columns

    first = _preprocess_row(root, next(manifest.itertuples(index=False)), cfg, has_masks, use_roi)
    with atomic_path(images_out) as images_tmp, atomic_path(masks_out) as masks_tmp:
        images = np.lib.format.open_memmap(images_tmp, mode="w+", dtype=np.float32, shape=(len(manifest), *first[0].shape))
        masks = (
            np.lib.format.open_memmap(masks_tmp, mode="w+", dtype=np.uint8, shape=(len(manifest), 1, *first[0].shape[1:]))
            if has_masks
            else None
        )
        rows = tqdm(manifest.itertuples(index=False), total=len(manifest), desc="preprocess", unit="img")
        for i, row in enumerate(rows):
            image_array, mask_array = first if i == 0 else _preprocess_row(root, row, cfg, has_masks, use_roi)
            if image_array.shape != images.shape[1:]:
                raise ValueError(f"{root / row.image}: preprocessed to {image_array.shape}, expected {images.shape[1:]}")
            images[i] = image_array
            if masks is not None:
                masks[i] = mask_array
        images.flush()
        del images
        if masks is None:
            with open(masks_tmp, "wb") as fh:  # a file handle: np.save would append .npy to a path
                np.save(fh, np.zeros((0,), dtype=np.uint8))
        else:
            masks.flush()
            del masks
    index = manifest[["image_id", "patient_id", "label"]].copy()
    index.insert(0, "row", np.arange(len(index)))
    index["has_mask"] = manifest["mask"] != ""
    with atomic_path(index_out) as tmp:
        index.to_csv(tmp, sep="\t", index=False)
    return index


def _preprocess_row(root: Path, row: Any, cfg: dict[str, Any], has_masks: bool, use_roi: bool):
    """Read and preprocess one manifest row; any failure names the image file."""
    image, mask = _read_row(root, row, has_masks)
    roi = None
    if use_roi and row.roi:
        roi = sitk.ReadImage(str(root / row.roi))
        check_same_geometry(image, roi, str(root / row.image), str(root / row.roi))
    try:
        return preprocess_subject(image, mask, cfg, name=str(root / row.image), roi=roi)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{root / row.image}: cannot preprocess ({exc})") from exc


def _read_row(root: Path, row: Any, has_masks: bool) -> tuple[sitk.Image, sitk.Image | None]:
    row_image = row["image"] if isinstance(row, pd.Series) else row.image
    row_mask = row["mask"] if isinstance(row, pd.Series) else row.mask
    try:
        image = sitk.ReadImage(str(root / row_image))
    except RuntimeError as exc:
        raise ValueError(f"{root / row_image}: cannot read image ({exc})") from exc
    mask = None
    if has_masks:
        if row_mask:
            mask = sitk.ReadImage(str(root / row_mask))
            check_same_geometry(image, mask, str(root / row_image), str(root / row_mask))
        else:  # images without a lesion still need a mask of the right geometry
            mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
            mask.CopyInformation(image)
    return image, mask
