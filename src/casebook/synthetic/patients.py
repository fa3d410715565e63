"""What the synthetic generators share: per-patient labels and image counts, the record
of one generated image, and, for the segmentation generators, argument checks and the
records of generated volumes (one per subject, on an LPS grid)."""

from __future__ import annotations

import hashlib
from typing import Callable, Iterator

import numpy as np
import SimpleITK as sitk

from casebook.layout import Record

#: Direction cosines of an axis-aligned LPS grid (SimpleITK's flattened 3x3).
IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def assign_patient_labels(n_patients: int, prevalence: float, rng: np.random.Generator) -> np.ndarray:
    """Labels for ``n_patients``: exactly ``round(prevalence * n)`` ones, shuffled by ``rng``."""
    if n_patients < 0:
        raise ValueError(f"n_patients must be >= 0, got {n_patients}")
    if not 0.0 <= prevalence <= 1.0:
        raise ValueError(f"prevalence must lie in [0, 1], got {prevalence}")
    n_pos = int(round(prevalence * n_patients))
    labels = np.zeros(n_patients, dtype=np.int64)
    labels[:n_pos] = 1
    return rng.permutation(labels)


def images_for_patient(images_per_patient: tuple[int, int], rng: np.random.Generator) -> int:
    """Number of images of one patient, uniform over the inclusive range."""
    lo, hi = (int(v) for v in images_per_patient)
    if not 1 <= lo <= hi:
        raise ValueError(f"images_per_patient must be (lo, hi) with 1 <= lo <= hi, got {images_per_patient}")
    return int(rng.integers(lo, hi + 1))


def array_checksum(*arrays: np.ndarray) -> str:
    """Short content hash, stored as ``source_checksum`` (synthetic data has no source file)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def synthetic_record(image_id: str, patient_id: str, label: int, image: np.ndarray, mask: np.ndarray, spacing) -> Record:
    """A generated image as a Record; its content hash stands in for a source checksum."""
    return Record(
        image_id=image_id,
        patient_id=patient_id,
        label=label,
        image=image,
        spacing=spacing,
        mask=mask.astype(np.uint8),
        source_checksum=array_checksum(image),
    )


def checked_geometry(size, spacing) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """``size`` (voxels) and ``spacing`` (mm), x, y, z, as ints and floats; else ValueError."""
    if len(size) != 3 or len(spacing) != 3:
        raise ValueError(f"size and spacing must have 3 entries (x, y, z), got {size} and {spacing}")
    size = tuple(int(n) for n in size)
    spacing = tuple(float(s) for s in spacing)
    if min(size) < 8 or min(spacing) <= 0:
        raise ValueError(f"size must be >= 8 voxels and spacing > 0 along every axis, got {size} and {spacing}")
    return size, spacing


def checked_fraction(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return float(value)


def volume_images(image_czyx: np.ndarray, label: np.ndarray, roi: np.ndarray, spacing, origin):
    """SimpleITK images on one grid: the (vector) image, the label map and the roi (None
    when ``roi`` is)."""
    if image_czyx.shape[0] == 1:
        image = sitk.GetImageFromArray(image_czyx[0])
    else:
        image = sitk.GetImageFromArray(np.moveaxis(image_czyx, 0, -1), isVector=True)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(origin)
    image.SetDirection(IDENTITY_DIRECTION)
    masks = []
    for array in (label, roi):
        mask = None if array is None else sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.uint8))
        if mask is not None:
            mask.CopyInformation(image)
        masks.append(mask)
    return image, masks[0], masks[1]


def subject_volumes(
    prefix: str,
    stream: int,
    *,
    n_patients: int,
    seed: int,
    spacing: tuple[float, float, float],
    render: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]],
) -> Iterator[Record]:
    """One Record per subject ``<prefix>_p0003``: ``render(rng)`` gives the image (C, Z, Y,
    X), label map, roi and origin. Subject i draws from ``default_rng([seed, stream, i])``,
    so it is the same whatever ``n_patients`` is (``stream`` keeps generators apart)."""
    if n_patients < 0:
        raise ValueError(f"n_patients must be >= 0, got {n_patients}")
    for index in range(n_patients):
        image, label, roi, origin = render(np.random.default_rng([seed, stream, index]))
        subject = f"{prefix}_p{index:04d}"
        sitk_image, sitk_label, sitk_roi = volume_images(image, label, roi, spacing, origin)
        yield Record(
            image_id=subject,
            patient_id=subject,
            label=None,
            image=sitk_image,
            spacing=spacing,
            mask=sitk_label,
            origin=origin,
            direction=IDENTITY_DIRECTION,
            roi=sitk_roi,
            source_checksum=array_checksum(image, label),
        )
