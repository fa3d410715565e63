"""Training and test pairs of a restoration study: 2D slices, each degraded at every
level of the study (a dose, :mod:`.dose`; a slice-thickness factor, :mod:`.thick_slices`;
a source channel, :mod:`.translation`; a hole size, :mod:`.inpainting`) beside its
reference and, where the images have label maps, the reference's label slice (for the
downstream segmentation), with the patient kept so that splits and bootstrap CIs work
on patients."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from casebook.tasks.restoration.dose import Scanner, low_dose_slice, reference_slice


def to_network(hu: np.ndarray, window) -> np.ndarray:
    """The networks' scale: HU centred on the display window, in window widths (not
    clipped). On (HU + 1000) / 2000 instead, the residual U-Net lost 0.5 dB where it
    gains 4.6 here, and RED-CNN gained 0.6 dB against 4.9."""
    low, high = (float(v) for v in window)
    return ((np.asarray(hu, dtype=np.float32) - (low + high) / 2.0) / (high - low)).astype(np.float32)


def from_network(x: np.ndarray, window) -> np.ndarray:
    low, high = (float(v) for v in window)
    return np.asarray(x, dtype=np.float64) * (high - low) + (low + high) / 2.0


def region_masks(regions: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean masks of ``shape``, one per region (row, column, height, width), true inside it."""
    masks = np.zeros((len(regions), *shape), bool)
    for mask, (r, c, h, w) in zip(masks, np.asarray(regions)):
        mask[r : r + h, c : c + w] = True
    return masks


@dataclass
class SlicePairs:
    """``noisy[i]`` is slice ``i`` degraded at level ``level[i]`` (the dose, or the slice
    thickness factor), ``reference[i]`` its reference (same grid and units), of patient
    ``patient[i]`` (and image ``image_id[i]``, where known)."""

    noisy: np.ndarray
    reference: np.ndarray
    level: np.ndarray
    patient: np.ndarray
    image_id: np.ndarray | None = None
    #: per pair, the box (row, column, height, width) of a missing region, where the
    #: degradation removed one: the methods are scored inside it
    region: np.ndarray | None = None
    #: per pair, the label map's slice on the reference's grid, where the images have one
    mask: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.noisy)

    def at_level(self, level: float) -> SlicePairs:
        keep = np.isclose(self.level, level)
        ids = None if self.image_id is None else self.image_id[keep]
        region = None if self.region is None else self.region[keep]
        mask = None if self.mask is None else self.mask[keep]
        return SlicePairs(self.noisy[keep], self.reference[keep], self.level[keep], self.patient[keep], ids, region, mask)


def simulate_pairs(
    slices: Iterable[tuple[str, np.ndarray, float]], doses: Sequence[float], scanner: Scanner, *, seed: int = 0, progress: bool = False
) -> SlicePairs:
    """Every (patient, HU slice, in-plane spacing in mm) at every dose. Each slice has its
    own random stream (from ``seed`` and its position), so a pair does not change when
    other slices are added or removed after it."""
    noisy, reference, dose_of, patients = [], [], [], []
    for index, (patient, hu, spacing) in enumerate(tqdm(list(slices), desc="low-dose simulation", disable=not progress)):
        ref = reference_slice(hu, spacing, scanner)
        for d_index, dose in enumerate(doses):
            rng = np.random.default_rng([seed, index, d_index])
            noisy.append(low_dose_slice(hu, float(dose), spacing, scanner, rng))
            reference.append(ref)
            dose_of.append(float(dose))
            patients.append(patient)
    return SlicePairs(np.asarray(noisy), np.asarray(reference), np.asarray(dose_of), np.asarray(patients))
