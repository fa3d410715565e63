"""Preprocessing of 3D segmentation data, case by case, with its exact inverse.

nnU-Net's recipe, in SimpleITK and numpy: reorient to one canonical orientation, crop
to the foreground (the region of interest: the brain, the body), resample to the plan's
target spacing (linear for images, nearest neighbour for labels), then normalise the
intensities (CT: clip at the data set's foreground percentiles and z-score with its
global mean and sd; MRI: z-score each channel inside the region of interest, 0 outside).

Every step keeps the physical geometry (origin, spacing, direction) of its output, so
the way back is a single resampling of the prediction onto the original image's grid
(:func:`to_original`): orientation, crop and spacing are all undone at once, and the
result carries the original header. Arrays are in SimpleITK array order, (C, z, y, x)
for images and (z, y, x) for labels.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk
from tqdm.auto import tqdm

from casebook.fileio import read_json, write_json
from casebook.imaging import check_same_geometry, resample_to_spacing
from casebook.layout import read_manifest

log = logging.getLogger(__name__)

# ITK's "LPS" is the identity direction matrix (+x left, +y posterior, +z superior),
# DICOM's patient frame; every case is turned to it so a patch means the same anatomy
CANONICAL_ORIENTATION = "LPS"


@dataclass
class Case:
    """One preprocessed case: arrays and the physical grid they lie on."""

    image: np.ndarray  # float32 (C, z, y, x)
    label: np.ndarray | None  # uint8 (z, y, x) class indices (0 .. K-1), None without labels
    geometry: dict[str, list[float]]  # spacing, origin, direction of the preprocessed grid (SimpleITK order)
    crop: dict[str, list[int]] = field(default_factory=dict)  # index and size of the crop (canonical grid, x, y, z)


def reorient(image: sitk.Image) -> sitk.Image:
    """The image turned to the canonical orientation (a permutation and flips of the
    axes, no interpolation); physical positions are unchanged. An image already in it
    is returned as it is: DICOMOrient would copy it anyway (the cost of a whole pass)."""
    if np.allclose(image.GetDirection(), np.eye(image.GetDimension()).ravel(), atol=1e-6):
        return image
    return sitk.DICOMOrient(image, CANONICAL_ORIENTATION)


def foreground_box(region: np.ndarray, margin: int) -> tuple[list[int], list[int]]:
    """Index and size (SimpleITK order, x, y, z) of the bounding box of ``region`` (a
    (z, y, x) boolean array), grown by ``margin`` voxels and kept inside the volume.
    An empty region gives the whole volume."""
    shape = region.shape
    if not region.any():
        return [0] * len(shape), list(shape[::-1])
    lows, highs = [], []
    for axis in range(region.ndim):
        others = tuple(a for a in range(region.ndim) if a != axis)
        hit = np.flatnonzero(region.any(axis=others))
        lows.append(max(0, int(hit[0]) - margin))
        highs.append(min(shape[axis], int(hit[-1]) + 1 + margin))
    return lows[::-1], [h - lo for lo, h in zip(lows, highs)][::-1]


def crop(image: sitk.Image, index: Sequence[int], size: Sequence[int]) -> sitk.Image:
    """The sub-volume; its origin moves so that every voxel keeps its physical position."""
    return sitk.RegionOfInterest(image, [int(s) for s in size], [int(i) for i in index])


def crop_array(array: np.ndarray, index: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """The (z, y, x) array of a crop given by SimpleITK index and size (x, y, z)."""
    return array[tuple(slice(i, i + n) for i, n in zip(index[::-1], size[::-1]))]


def canonical_spacing(spacing: Sequence[float], direction: Sequence[float]) -> list[float]:
    """A spacing given along an image's own axes, along the canonical (LPS) axes it is
    turned to: a slice-first file (its first axis along z) has its spacings permuted."""
    dims = len(spacing)
    matrix = np.abs(np.asarray(direction, dtype=float).reshape(dims, dims))
    out = [0.0] * dims
    for axis in range(dims):  # column 'axis' of the direction matrix: where that axis points
        out[int(np.argmax(matrix[:, axis]))] = float(spacing[axis])
    return out


def channels_first(image: sitk.Image) -> np.ndarray:
    """(C, z, y, x) float32 array of a scalar or vector image."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    return np.moveaxis(array, -1, 0) if image.GetNumberOfComponentsPerPixel() > 1 else array[None]


def normalize(image: np.ndarray, intensity: dict[str, Any], roi: np.ndarray | None) -> np.ndarray:
    """Normalise a (C, z, y, x) array as the plan says (see :mod:`casebook.fingerprint`).

    ``ct``: clip at the foreground 0.5/99.5 percentiles of the data set, then subtract
    its foreground mean and divide by its sd (one channel entry each), so that a value
    keeps its meaning across scans. ``zscore``: each channel by its own mean and sd
    inside ``roi`` when ``use_roi`` is set (the brain: background air would otherwise
    dominate), with 0 outside it, as nnU-Net does for MRI.
    """
    out = np.empty_like(image, dtype=np.float32)
    scheme = intensity["scheme"]
    if scheme == "ct":
        channels = intensity["channels"]
        if len(channels) != image.shape[0]:
            raise ValueError(f"the CT plan has {len(channels)} channel(s), the image {image.shape[0]}")
        for c, ch in enumerate(channels):
            low, high = ch["clip"]
            out[c] = (np.clip(image[c], low, high) - ch["mean"]) / max(float(ch["std"]), 1e-8)
        return out
    if scheme != "zscore":
        raise ValueError(f"unknown intensity scheme {scheme!r}")
    inside = roi if (intensity.get("use_roi") and roi is not None and roi.any()) else None
    for c in range(image.shape[0]):
        values = image[c][inside] if inside is not None else image[c]
        mean, std = float(values.mean()), float(values.std())
        out[c] = (image[c] - mean) / max(std, 1e-8)
        if inside is not None:
            out[c][~inside] = 0.0
    return out


def label_lut(label_values: Sequence[int]) -> np.ndarray:
    """Voxel label value -> class index (0 .. K-1), for values up to 255; a value not in
    ``label_values`` maps to 255 so that it is caught rather than trained on."""
    lut = np.full(256, 255, dtype=np.uint8)
    lut[np.asarray(label_values, dtype=np.int64)] = np.arange(len(label_values), dtype=np.uint8)
    return lut


def to_classes(label: np.ndarray, label_values: Sequence[int], where: str) -> np.ndarray:
    """Voxel label values to contiguous class indices; an unexpected value is an error
    naming the case and the value."""
    if not np.issubdtype(label.dtype, np.integer) or (label.size and (label.min() < 0 or label.max() > 255)):
        raise ValueError(f"{where}: a label map must hold integers 0-255, this one is {label.dtype} in [{label.min()}, {label.max()}]")
    classes = label_lut(label_values)[label]
    if (classes == 255).any():
        bad = sorted(set(np.unique(label[classes == 255]).tolist()))
        raise ValueError(f"{where}: label value(s) {bad} are not among the case study's labels {list(label_values)}")
    return classes


def geometry_of(image: sitk.Image) -> dict[str, list[float]]:
    return {
        "spacing": [float(s) for s in image.GetSpacing()],
        "origin": [float(o) for o in image.GetOrigin()],
        "direction": [float(d) for d in image.GetDirection()],
    }


def preprocess_case(
    image: sitk.Image,
    label: sitk.Image | None,
    roi: sitk.Image | None,
    *,
    spacing: Sequence[float] | None,
    intensity: dict[str, Any],
    label_values: Sequence[int],
    crop_margin: int = 2,
    name: str = "case",
) -> Case:
    """Reorient, crop to the region of interest (or the nonzero voxels), resample and
    normalise one case.

    ``spacing`` is the target (x, y, z) in mm, None to keep the image's. Labels follow
    the image's grid at every step (nearest neighbour), and their values become class
    indices of ``label_values``.
    """
    image = reorient(image)
    label = None if label is None else reorient(label)
    roi = None if roi is None else reorient(roi)
    # the region of interest (brain, body) where there is one, else the nonzero voxels of
    # any channel, as nnU-Net crops (skull-stripped MRI is 0 outside the brain; CT air
    # is -1000, so a CT without a body mask keeps its whole field of view)
    if roi is not None:
        region = sitk.GetArrayViewFromImage(roi) > 0
    else:
        array = sitk.GetArrayViewFromImage(image)
        region = (array != 0).any(axis=-1) if image.GetNumberOfComponentsPerPixel() > 1 else array != 0
    index, size = foreground_box(region, crop_margin)
    image, label, roi = (None if x is None else crop(x, index, size) for x in (image, label, roi))
    if intensity["scheme"] == "zscore" and roi is None:
        # MRI without a region of interest: z-score inside the nonzero voxels, as nnU-Net
        # does, so that a zero background (and zero padding later) stays out of the statistics
        roi = sitk.GetImageFromArray(crop_array(region, index, size).astype(np.uint8))
        roi.CopyInformation(image)
        intensity = {**intensity, "use_roi": True}
    elif not (intensity["scheme"] == "zscore" and intensity.get("use_roi")):
        roi = None  # cropped already; resampling it too would be wasted work
    if spacing is not None:
        image = resample_to_spacing(image, spacing, is_label=False, cover=True)
        label, roi = (
            None if x is None else sitk.Resample(x, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, x.GetPixelID())
            for x in (label, roi)
        )
    roi_array = None if roi is None else sitk.GetArrayViewFromImage(roi) > 0
    array = normalize(channels_first(image), intensity, roi_array)
    classes = None if label is None else to_classes(sitk.GetArrayViewFromImage(label), label_values, name)
    return Case(array, classes, geometry_of(image), {"index": list(index), "size": list(size)})


def probabilities_image(probs: np.ndarray, geometry: dict[str, list[float]]) -> sitk.Image:
    """A (K, z, y, x) probability array as a vector image on its preprocessed grid."""
    image = sitk.GetImageFromArray(np.moveaxis(probs.astype(np.float32), 0, -1), isVector=True)
    image.SetSpacing(geometry["spacing"])
    image.SetOrigin(geometry["origin"])
    image.SetDirection(geometry["direction"])
    return image


def to_original(probs: np.ndarray, geometry: dict[str, list[float]], reference: sitk.Image, label_values: Sequence[int]) -> sitk.Image:
    """The prediction as a uint8 label map on the original image's grid.

    The class probabilities (K, z, y, x) on the preprocessed grid are resampled linearly
    onto ``reference`` (the original image: its size, spacing, origin and direction),
    then the most probable class is taken and mapped back to its voxel label value.
    Resampling probabilities rather than the arg-max keeps boundaries smooth where the
    original grid is finer. Outside the crop every probability is 0, so background wins.
    """
    moved = sitk.Resample(probabilities_image(probs, geometry), reference, sitk.Transform(), sitk.sitkLinear, 0.0)
    classes = np.argmax(sitk.GetArrayViewFromImage(moved), axis=-1) if moved.GetNumberOfComponentsPerPixel() > 1 else None
    if classes is None:  # one class only: everything is that class
        classes = np.zeros(sitk.GetArrayViewFromImage(moved).shape, dtype=np.int64)
    values = np.asarray(label_values, dtype=np.uint8)[classes]
    out = sitk.GetImageFromArray(values)
    out.CopyInformation(reference)
    return out


def pad_to(array: np.ndarray, shape: Sequence[int], value: float = 0.0) -> np.ndarray:
    """Pad the trailing spatial axes of ``array`` at their end up to at least ``shape``."""
    spatial = array.shape[-len(shape) :]
    extra = [max(0, int(p) - int(s)) for s, p in zip(spatial, shape)]
    if not any(extra):
        return array
    widths = [(0, 0)] * (array.ndim - len(shape)) + [(0, e) for e in extra]
    return np.pad(array, widths, constant_values=value)


def label_values_of(class_names: Sequence[str]) -> list[int]:
    """The voxel label values a case study trains on: the indices of its class names,
    except those named "unused" (BraTS's 3 in the 2017+ convention)."""
    return [value for value, name in enumerate(class_names) if name != "unused"]


def _read(path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from exc


def preprocess_stage(
    dataset_dir,
    plan_path,
    cfg: dict[str, Any],
    *,
    class_names: Sequence[str],
    cases_out,
    plan_out,
) -> dict[str, Any]:
    """The preprocess_seg rule: every case to ``cases_out/<id>.npy`` (image) and
    ``<id>_label.npy`` (class indices), and the segmentation plan (``plan_out``): the
    fingerprint plan's spacing and intensity scheme, the label values, and each case's
    preprocessed grid, from which predictions are mapped back."""
    root = Path(dataset_dir)
    plan = read_json(plan_path)
    spacing = plan["spacing"] if cfg.get("spacing", "auto") == "auto" else cfg.get("spacing")
    manifest = read_manifest(root / "manifest.tsv")
    if cfg.get("spacing", "auto") == "auto":
        # the fingerprint reads spacings along each file's own axes; cases are resampled
        # after they are turned to LPS, so the plan's spacing is permuted the same way
        header = sitk.ImageFileReader()
        header.SetFileName(str(root / manifest["image"].iloc[0]))
        header.ReadImageInformation()
        spacing = canonical_spacing(spacing, header.GetDirection())
    values = label_values_of(class_names)
    # written beside the output and renamed at the end: a case that fails half-way
    # leaves no folder of some cases to be mistaken for the whole
    out = Path(cases_out)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        cases = _preprocess_rows(root, manifest, plan, spacing, values, cfg, partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    shapes = np.array([c["shape"] for c in cases.values()], dtype=np.float64)
    seg_plan = {
        "spacing": [float(s) for s in (spacing or plan["median_spacing"])],
        "spacing_array_order": [float(s) for s in (spacing or plan["median_spacing"])][::-1],
        "intensity": plan["intensity"],
        "label_values": values,
        "class_names": [class_names[v] for v in values],
        "channel_names": plan.get("channel_names", []),
        "median_shape": [float(s) for s in np.median(shapes, axis=0)],
        "cases": cases,
    }
    write_json(plan_out, seg_plan)
    log.info("preprocessed %d cases at spacing %s, median shape %s", len(cases), seg_plan["spacing"], seg_plan["median_shape"])
    return seg_plan


def _preprocess_rows(root: Path, manifest, plan, spacing, values, cfg, out: Path) -> dict[str, Any]:
    """Preprocess every manifest row into ``out``; each case's grid and crop, by id."""
    has_roi = "roi" in manifest.columns
    cases: dict[str, Any] = {}
    for row in tqdm(manifest.itertuples(index=False), total=len(manifest), desc="preprocess", unit="case"):
        image = _read(root / row.image)
        label = _read(root / row.mask) if row.mask else None
        roi = _read(root / row.roi) if has_roi and row.roi else None
        for other, rel in ((label, row.mask), (roi, row.roi if has_roi else "")):
            if other is not None:  # a label on another grid would silently shift every voxel
                check_same_geometry(image, other, str(root / row.image), str(root / rel))
        case = preprocess_case(
            image,
            label,
            roi,
            spacing=spacing,
            intensity=plan["intensity"],
            label_values=values,
            crop_margin=int(cfg.get("crop_margin", 2)),
            name=str(root / (row.mask or row.image)),
        )
        np.save(out / f"{row.image_id}.npy", case.image)
        if case.label is not None:
            np.save(out / f"{row.image_id}_label.npy", case.label)
        cases[row.image_id] = {"shape": list(case.image.shape[1:]), "has_label": case.label is not None, **case.geometry, "crop": case.crop}
    return cases
