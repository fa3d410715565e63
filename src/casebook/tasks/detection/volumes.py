"""Rule prepare_detection: every volume resampled, windowed and padded for the
detectors, with its boxes as voxel targets.

Each image is resampled (SimpleITK, linear) to ``detection.spacing`` keeping its origin
and direction, its intensities windowed to [0, 1], and padded at the far end of each
axis to a multiple of ``detection.pad_to`` (so that the voxel-to-world mapping is
unchanged). A box becomes its centre and size in voxels of that grid, in array-axis
order (z, y, x). The output is a folder: one ``.npy`` per volume, read memory-mapped
(a LUNA16 scan is hundreds of MB: training reads the patches it crops, not whole
volumes), and ``index.npz`` with the ids, grids and voxel boxes; world boxes stay in the
data set's ``boxes.tsv``, the truth every candidate is scored against.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from tqdm.auto import tqdm

from casebook import provenance
from casebook.boxes import BOXES_FILE, Box, boxes_of, read_boxes
from casebook.layout import read_manifest

log = logging.getLogger(__name__)


@dataclass
class Volumes:
    """Prepared volumes (each (*shape), float32 in [0, 1]) with their grids (origin,
    spacing in SimpleITK's x, y, z order, direction) and voxel boxes: (n, 2 ndim + 1)
    rows of centre, size (array-axis order) and excluded."""

    ids: list[str]
    patients: list[str]
    images: list[np.ndarray]
    boxes: list[np.ndarray]
    origin: np.ndarray
    spacing: np.ndarray
    direction: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def ndim(self) -> int:
        return self.images[0].ndim

    def to_world(self, i: int, voxel: np.ndarray) -> np.ndarray:
        """World mm (x, y, z) of a voxel position (array-axis order) of volume ``i``."""
        index_xyz = np.asarray(voxel, float)[::-1]
        direction = self.direction[i].reshape(self.ndim, self.ndim)
        return self.origin[i] + direction @ (index_xyz * self.spacing[i])

    def to_index(self, i: int, point) -> np.ndarray:
        """Continuous voxel index (x, y[, z]) of a world point in volume ``i`` (the inverse
        of :meth:`to_world`, in SimpleITK's index order)."""
        direction = self.direction[i].reshape(self.ndim, self.ndim)
        return direction.T @ (np.asarray(point, float) - self.origin[i]) / self.spacing[i]

    def size_to_world(self, i: int, size: np.ndarray) -> np.ndarray:
        """A size in voxels (array-axis order) as mm along x, y, z (a permuted or flipped
        grid's axes mapped through its direction)."""
        direction = self.direction[i].reshape(self.ndim, self.ndim)
        return np.abs(direction) @ (np.asarray(size, float)[::-1] * self.spacing[i])


def voxel_box(box: Box, image: sitk.Image) -> np.ndarray:
    """A world box as (centre, size, excluded) in voxels of ``image``, array-axis order."""
    ndim = image.GetDimension()
    direction = np.array(image.GetDirection()).reshape(ndim, ndim)
    index = np.array(image.TransformPhysicalPointToContinuousIndex(tuple(float(c) for c in box.centre)))
    size = np.abs(direction.T @ np.array(box.size)) / np.array(image.GetSpacing())
    return np.concatenate([index[::-1], size[::-1], [float(box.excluded)]])


def _resampled(image: sitk.Image, spacing: list[float] | None) -> sitk.Image:
    if not spacing:
        return image
    new_spacing = tuple(float(s) for s in spacing)
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(image.GetSize(), image.GetSpacing(), new_spacing)]
    return sitk.Resample(
        image,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        image.GetOrigin(),
        new_spacing,
        image.GetDirection(),
        float(sitk.GetArrayViewFromImage(image).min()),
        sitk.sitkFloat32,
    )


def _windowed(array: np.ndarray, window: list[float]) -> np.ndarray:
    low, high = float(window[0]), float(window[1])
    if high <= low:
        raise ValueError(f"detection.window {list(window)}: its upper end must exceed its lower end")
    return np.clip((array.astype(np.float32) - low) / (high - low), 0.0, 1.0)


def _padded(array: np.ndarray, multiple: int) -> np.ndarray:
    pad = [(0, (-n) % multiple) for n in array.shape]
    return np.pad(array, pad, constant_values=0.0)


INDEX = "index.npz"


def prepare_volumes(data_dir: str | Path, settings: dict[str, Any], out_dir: str | Path) -> int:
    """Write every image of a detection data set into ``out_dir`` (one ``image_<i>.npy``
    each, then ``index.npz``), one volume in memory at a time; return the number of
    boxes. Written into a sibling folder first and renamed, so a failure leaves none."""
    root, out_dir = Path(data_dir), Path(out_dir)
    if not (root / BOXES_FILE).is_file():
        raise ValueError(f"{root}: a detection case study needs a data set with boxes ({BOXES_FILE}); this one has none")
    manifest = read_manifest(root / "manifest.tsv")
    by_image = boxes_of(read_boxes(root / BOXES_FILE))
    index: dict[str, Any] = {"ids": [], "patients": [], "origin": [], "spacing": [], "direction": []}
    n_boxes = 0
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for i, row in enumerate(tqdm(list(manifest.itertuples(index=False)), desc="prepare volumes", unit="vol")):
            image = sitk.ReadImage(str(root / row.image))
            if image.GetNumberOfComponentsPerPixel() > 1:
                image = sitk.VectorIndexSelectionCast(image, int(settings.get("channel", 0)))
            image = _resampled(image, settings.get("spacing"))
            np.save(tmp / f"image_{i}.npy", _padded(_windowed(sitk.GetArrayFromImage(image), settings["window"]), int(settings["pad_to"])))
            boxes = [voxel_box(b, image) for b in by_image.get(row.image_id, [])]
            index[f"boxes_{i}"] = np.array(boxes, np.float32).reshape(len(boxes), 2 * image.GetDimension() + 1)
            n_boxes += len(boxes)
            index["ids"].append(row.image_id)
            index["patients"].append(row.patient_id)
            index["origin"].append(image.GetOrigin())
            index["spacing"].append(image.GetSpacing())
            index["direction"].append(image.GetDirection())
        np.savez(tmp / INDEX, **{k: np.asarray(v) for k, v in index.items()})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return n_boxes


def load_volumes(folder: str | Path, ids: list[str] | None = None) -> Volumes:
    """The prepared volumes of ``ids`` (default all), in that order; images memory-mapped."""
    folder = Path(folder)
    with np.load(folder / INDEX) as data:
        all_ids = [str(v) for v in data["ids"]]
        wanted = all_ids if ids is None else [str(v) for v in ids]
        missing = sorted(set(wanted) - set(all_ids))
        if missing:
            raise ValueError(f"{folder}: no prepared volume for {missing[:5]}")
        pick = [all_ids.index(v) for v in wanted]
        return Volumes(
            ids=wanted,
            patients=[str(data["patients"][i]) for i in pick],
            images=[np.load(folder / f"image_{i}.npy", mmap_mode="r") for i in pick],
            boxes=[data[f"boxes_{i}"] for i in pick],
            origin=data["origin"][pick].astype(float),
            spacing=data["spacing"][pick].astype(float),
            direction=data["direction"][pick].astype(float),
        )


def prepare_stage(data_dir: str, settings: dict[str, Any], outputs: dict[str, str], wildcards=None) -> None:
    started, code = provenance.now(), provenance.code_state()
    n_boxes = prepare_volumes(data_dir, settings, outputs["volumes"])
    log.info("%d volumes, %d boxes prepared", len(load_volumes(outputs["volumes"])), n_boxes)
    provenance.write_record(
        outputs["provenance"],
        rule="prepare_detection",
        inputs=[data_dir],
        outputs=[outputs["volumes"]],
        params={"detection": settings},
        started=started,
        code=code,
        wildcards=wildcards,
    )
