"""Contrast translation pairs (one MRI sequence into another): the central axial slices
of two channels of each multi-channel image, which share one grid by construction (the
canonical layout stacks a case's sequences only when their geometry matches). The
network's input is the source slice histogram-matched (SimpleITK) to the target
sequence's intensities over the development patients (never a test patient): the
classical translation, and the baseline every model must beat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from casebook import provenance
from casebook.fileio import read_json
from casebook.layout import read_manifest
from casebook.tasks.restoration.data import SlicePairs
from casebook.tasks.restoration.simulate import SliceError, label_slices, publish_pairs, with_masks


def channel_slices(path: Path, image_id: str, n: int, source: int, target: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``n`` central axial (source, target) slices; an error naming the image when it
    is not a multi-channel 3D image with both channels, or has too few slices."""
    if source == target:
        raise SliceError(f"{image_id}: the source and target channel are both {source} (restoration.source_channel, restoration.channel)")
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float64)  # z, y, x, channel
    if array.ndim != 4:
        raise SliceError(f"{image_id} ({path}): a contrast translation needs a multi-channel 3D image, got shape {array.shape}")
    missing = [c for c in (source, target) if not 0 <= c < array.shape[3]]
    if missing:
        raise SliceError(f"{image_id} ({path}): no channel {missing[0]}; the image has {array.shape[3]}")
    if array.shape[0] < n:
        raise SliceError(f"{image_id} ({path}): {array.shape[0]} axial slices, fewer than the {n} asked for (restoration.slices)")
    first = (array.shape[0] - n) // 2
    return [(array[z, :, :, source], array[z, :, :, target]) for z in range(first, first + n)]


def histogram_match(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``image`` with its intensity histogram matched to ``reference``'s (SimpleITK;
    voxels below each image's mean, the background, are left out of the match)."""
    matcher = sitk.HistogramMatchingImageFilter()
    matcher.SetNumberOfHistogramLevels(256)
    matcher.SetNumberOfMatchPoints(16)
    matcher.ThresholdAtMeanIntensityOn()
    source = sitk.GetImageFromArray(image.astype(np.float64))
    return sitk.GetArrayFromImage(matcher.Execute(source, sitk.GetImageFromArray(reference.astype(np.float64))))


def contrast_stage(data_dir: str, splits: str, settings: dict[str, Any], seed: int, outputs: dict[str, str], wildcards=None) -> SlicePairs:
    """The simulate_contrast rule: the pairs, with the histogram reference built from the
    target slices of every image outside the test split."""
    started, code = provenance.now(), provenance.code_state()
    manifest = read_manifest(Path(data_dir) / "manifest.tsv")
    test = set(read_json(splits)["test"])
    source, target = int(settings["source_channel"]), int(settings["channel"])
    n = int(settings["slices"])
    slices = {
        row.image_id: (row.patient_id, channel_slices(Path(data_dir) / row.image, row.image_id, n, source, target))
        for row in manifest.itertuples()
    }
    masks = [m for row in manifest.itertuples() for m in (label_slices(data_dir, row, "axial", n) or [None] * n)]
    development = [t for image_id, (_, pairs) in slices.items() if image_id not in test for _, t in pairs]
    if not development:
        raise SliceError(f"{splits}: every image is in the test split; the histogram reference needs development images")
    reference = np.concatenate(development, axis=0)  # one tall image of every development target slice
    noisy, targets, patients, ids = [], [], [], []
    for image_id, (patient, pairs) in slices.items():
        for s, t in pairs:
            noisy.append(histogram_match(s, reference))
            targets.append(t)
            patients.append(patient)
            ids.append(image_id)
    pairs = SlicePairs(np.asarray(noisy), np.asarray(targets), np.full(len(noisy), float(source)), np.asarray(patients), np.asarray(ids))
    with_masks(pairs, masks, 1)
    return publish_pairs(
        pairs, outputs, rule="simulate_contrast", inputs=[data_dir, splits], settings=settings,
        seed=seed, started=started, code=code, wildcards=wildcards,
    )  # fmt: skip
