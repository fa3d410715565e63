"""Thick slices simulated from thin ones (super-resolution along the slice axis): each
2D coronal slice (slice axis z against x) of a volume has every ``factor`` consecutive
z rows averaged into one thick slice (a slab, as a thick acquisition integrates), and
is brought back to the thin grid by B-spline interpolation (SimpleITK): the input that a
network refines and the baseline it must beat. The thin slice is the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from tqdm.auto import tqdm

from casebook import provenance
from casebook.layout import read_manifest
from casebook.tasks.restoration.data import SlicePairs
from casebook.tasks.restoration.simulate import SliceError, channel_volume, label_slices, publish_pairs, with_masks


def coronal_slices(path: Path, image_id: str, n: int, channel: int) -> tuple[list[np.ndarray], tuple[float, float]]:
    """The ``n`` central coronal slices (z, x) of one channel of a 3D image, and their
    pixel spacing (x, z in mm); an error naming the image when it has no such channel or
    too few coronal rows."""
    array = channel_volume(path, image_id, channel, "super-resolution along the slice axis")
    if array.shape[1] < n:
        raise SliceError(f"{image_id} ({path}): {array.shape[1]} coronal rows, fewer than the {n} slices asked for (restoration.slices)")
    first = (array.shape[1] - n) // 2
    reader = sitk.ImageFileReader()  # the header only: the pixels are read above
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    spacing = reader.GetSpacing()
    return [array[:, y, :] for y in range(first, first + n)], (float(spacing[0]), float(spacing[2]))


def thicken(image: np.ndarray, factor: int, spacing: tuple[float, float], image_id: str = "image") -> np.ndarray:
    """``image`` (z, x) averaged over every ``factor`` z rows and B-spline interpolated
    back onto its own grid; an error naming the image when ``factor`` does not divide
    its number of slices (a partial slab would be an acquisition that never happened)."""
    n_z, n_x = image.shape
    if factor < 1 or n_z % factor:
        raise SliceError(
            f"{image_id}: a slice factor of {factor} does not divide its {n_z} slices "
            f"(restoration.factors); choose factors that divide {n_z}"
        )
    thick = image.reshape(n_z // factor, factor, n_x).mean(axis=1)
    dx, dz = spacing
    source = sitk.GetImageFromArray(thick)  # SimpleITK order: (x, z)
    source.SetSpacing((dx, dz * factor))
    source.SetOrigin((0.0, dz * (factor - 1) / 2.0))  # a slab's centre
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize((n_x, n_z))
    resampler.SetOutputSpacing((dx, dz))
    resampler.SetOutputOrigin((0.0, 0.0))
    resampler.SetInterpolator(sitk.sitkBSpline)
    resampler.SetOutputPixelType(sitk.sitkFloat64)
    resampler.SetUseNearestNeighborExtrapolator(True)  # the outer half slabs: no zeros
    return sitk.GetArrayFromImage(resampler.Execute(source))


def thick_slice_pairs(slices: list[tuple[str, str, np.ndarray, tuple[float, float]]], factors: list[int]) -> SlicePairs:
    """Every (patient, image id, thin slice, spacing) at every factor."""
    noisy, reference, level, patients, ids = [], [], [], [], []
    for patient, image_id, thin, spacing in tqdm(slices, desc="thick-slice simulation", unit="slice"):
        for factor in factors:
            noisy.append(thicken(thin, int(factor), spacing, image_id))
            reference.append(thin)
            level.append(float(factor))
            patients.append(patient)
            ids.append(image_id)
    return SlicePairs(np.asarray(noisy), np.asarray(reference), np.asarray(level), np.asarray(patients), np.asarray(ids))


def thick_slice_stage(data_dir: str, settings: dict[str, Any], seed: int, outputs: dict[str, str], wildcards=None) -> SlicePairs:
    """The simulate_thick_slices rule: read the volumes, simulate, write the pairs."""
    started, code = provenance.now(), provenance.code_state()
    manifest = read_manifest(Path(data_dir) / "manifest.tsv")
    slices, masks = [], []
    for row in manifest.itertuples():
        thin, spacing = coronal_slices(Path(data_dir) / row.image, row.image_id, int(settings["slices"]), int(settings.get("channel", 0)))
        slices += [(row.patient_id, row.image_id, s, spacing) for s in thin]
        masks += label_slices(data_dir, row, "coronal", len(thin)) or [None] * len(thin)
    pairs = with_masks(thick_slice_pairs(slices, [int(f) for f in settings["factors"]]), masks, len(settings["factors"]))
    return publish_pairs(
        pairs, outputs, rule="simulate_thick_slices", inputs=[data_dir], settings=settings,
        seed=seed, started=started, code=code, wildcards=wildcards,
    )  # fmt: skip
