"""What both synthetic generators share: per-patient labels and image counts, and the
record of one generated image."""

from __future__ import annotations

import hashlib

import numpy as np

from casebook.layout import Record


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


def array_checksum(array: np.ndarray) -> str:
    """Short content hash, stored as ``source_checksum`` (synthetic data has no source file)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


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
