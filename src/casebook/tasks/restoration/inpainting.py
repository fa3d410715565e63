"""Missing regions (reconstruction of damaged parts, inpainting): a square hole of each
size in the study is cut from every central axial slice of one channel, centred on a
random voxel of the object (above the slice's mean, away from the edges), and filled by
biharmonic inpainting (scikit-image): the input a network refines and the baseline it
must beat. The hole's box is kept with the pair, so that every method is scored inside
it, and the known pixels are pasted back around it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from skimage.restoration import inpaint_biharmonic
from tqdm.auto import tqdm

from casebook import provenance
from casebook.layout import read_manifest
from casebook.tasks.restoration.data import SlicePairs
from casebook.tasks.restoration.simulate import SliceError, channel_volume, label_slices, publish_pairs, with_masks


def axial_slices(path: Path, image_id: str, n: int, channel: int) -> list[np.ndarray]:
    """The ``n`` central axial slices of one channel of a 3D image; an error naming the
    image when it has no such channel or too few slices."""
    array = channel_volume(path, image_id, channel, "inpainting axial slices")
    if array.shape[0] < n:
        raise SliceError(f"{image_id} ({path}): {array.shape[0]} axial slices, fewer than the {n} asked for (restoration.slices)")
    first = (array.shape[0] - n) // 2
    return [array[z] for z in range(first, first + n)]


def place_hole(image: np.ndarray, side: int, rng: np.random.Generator, image_id: str = "image") -> tuple[int, int, int, int]:
    """A ``side`` x ``side`` box (row, column, height, width) inside ``image`` whose
    centre is a random pixel of the object (above the image's mean): a hole in the
    empty background would be trivial to fill. An error naming the image when the hole
    does not fit in it."""
    rows, cols = image.shape
    if side >= min(rows, cols):
        raise SliceError(f"{image_id}: a hole of {side} pixels does not fit in its {rows} x {cols} slices (restoration.holes)")
    half = side // 2
    inside = np.zeros(image.shape, bool)
    inside[half : rows - (side - half) + 1, half : cols - (side - half) + 1] = True
    candidates = np.argwhere(inside & (image > image.mean()))
    if not len(candidates):
        candidates = np.argwhere(inside)  # a blank slice: anywhere the hole fits
    r, c = candidates[rng.integers(len(candidates))]
    return int(r - half), int(c - half), side, side


def cut_and_fill(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``image`` with ``box`` removed and filled by biharmonic inpainting from its edges."""
    r, c, h, w = box
    mask = np.zeros(image.shape, bool)
    mask[r : r + h, c : c + w] = True
    damaged = np.where(mask, 0.0, image)
    return inpaint_biharmonic(damaged, mask)


def missing_region_pairs(slices: list[tuple[str, str, np.ndarray]], holes: list[int], seed: int) -> SlicePairs:
    """Every (patient, image id, slice) with a hole of every size; each slice and size has
    its own random stream (from ``seed`` and its position), as the dose simulation does."""
    noisy, reference, level, patients, ids, regions = [], [], [], [], [], []
    for index, (patient, image_id, image) in enumerate(tqdm(slices, desc="missing-region simulation", unit="slice")):
        for h_index, side in enumerate(holes):
            box = place_hole(image, int(side), np.random.default_rng([seed, index, h_index]), image_id)
            noisy.append(cut_and_fill(image, box))
            reference.append(image)
            level.append(float(side))
            patients.append(patient)
            ids.append(image_id)
            regions.append(box)
    return SlicePairs(
        np.asarray(noisy),
        np.asarray(reference),
        np.asarray(level),
        np.asarray(patients),
        np.asarray(ids),
        np.asarray(regions, dtype=np.int64),
    )


def missing_region_stage(data_dir: str, settings: dict[str, Any], seed: int, outputs: dict[str, str], wildcards=None) -> SlicePairs:
    """The simulate_missing_region rule: read the volumes, cut and fill, write the pairs."""
    started, code = provenance.now(), provenance.code_state()
    manifest = read_manifest(Path(data_dir) / "manifest.tsv")
    slices, masks = [], []
    for row in manifest.itertuples():
        images = axial_slices(Path(data_dir) / row.image, row.image_id, int(settings["slices"]), int(settings.get("channel", 0)))
        slices += [(row.patient_id, row.image_id, s) for s in images]
        masks += label_slices(data_dir, row, "axial", len(images)) or [None] * len(images)
    pairs = with_masks(missing_region_pairs(slices, [int(h) for h in settings["holes"]], seed), masks, len(settings["holes"]))
    return publish_pairs(
        pairs, outputs, rule="simulate_missing_region", inputs=[data_dir], settings=settings,
        seed=seed, started=started, code=code, wildcards=wildcards,
    )  # fmt: skip
