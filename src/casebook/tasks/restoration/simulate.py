"""The simulate_dose rule: every image's central axial slices at every dose level of the
case study, with their full-dose references, in one ``pairs.npz`` (image and patient ids
kept, so that the split's parts and the patient bootstrap apply)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from casebook import provenance
from casebook.fileio import atomic_path
from casebook.layout import read_manifest
from casebook.tasks.restoration.data import SlicePairs, simulate_pairs
from casebook.tasks.restoration.dose import Scanner


class SliceError(ValueError):
    """An image that cannot be projected as the case study asks."""


def central_slices(path: Path, image_id: str, n: int) -> tuple[list[np.ndarray], float]:
    """The ``n`` central axial slices (HU) of a CT volume and its in-plane spacing (mm);
    an error naming the image when its axial grid is not square and isotropic, or it has
    fewer slices."""
    image = sitk.ReadImage(str(path))
    volume = sitk.GetArrayFromImage(image).astype(np.float64)  # z, y, x
    spacing = image.GetSpacing()
    if volume.ndim != 3 or volume.shape[1] != volume.shape[2] or not np.isclose(spacing[0], spacing[1]):
        raise SliceError(
            f"{image_id} ({path}): a dose simulation needs square axial slices with square pixels, "
            f"got {volume.shape[2]} x {volume.shape[1]} pixels of {spacing[0]:g} x {spacing[1]:g} mm"
        )
    if volume.shape[0] < n:
        raise SliceError(f"{image_id} ({path}): {volume.shape[0]} axial slices, fewer than the {n} asked for (restoration.slices)")
    first = (volume.shape[0] - n) // 2
    return [volume[z] for z in range(first, first + n)], float(spacing[0])


def simulate_stage(data_dir: str, settings: dict[str, Any], seed: int, outputs: dict[str, str], wildcards=None) -> SlicePairs:
    """Read the ingested volumes, simulate, write ``outputs['pairs']`` and its record."""
    started, code = provenance.now(), provenance.code_state()
    manifest = read_manifest(Path(data_dir) / "manifest.tsv")
    slices, image_ids, masks = [], [], []
    for row in manifest.itertuples():
        hus, spacing = central_slices(Path(data_dir) / row.image, row.image_id, int(settings["slices"]))
        slices += [(row.patient_id, hu, spacing) for hu in hus]
        image_ids += [row.image_id] * len(hus)
        masks += label_slices(data_dir, row, "axial", len(hus)) or [None] * len(hus)
    scanner = Scanner(n_angles=int(settings["n_angles"]), photons=float(settings["photons"]))
    pairs = simulate_pairs(slices, [float(d) for d in settings["doses"]], scanner, seed=seed, progress=True)
    pairs.image_id = np.repeat(np.asarray(image_ids), len(settings["doses"]))
    with_masks(pairs, masks, len(settings["doses"]))
    return publish_pairs(
        pairs,
        outputs,
        rule="simulate_dose",
        inputs=[data_dir],
        settings=settings,
        seed=seed,
        started=started,
        code=code,
        wildcards=wildcards,
    )


def channel_volume(path: Path, image_id: str, channel: int, purpose: str) -> np.ndarray:
    """One channel of a (possibly multi-channel) 3D image, z, y, x; an error naming the
    image when it has no such channel or is not 3D (``purpose``: what needs it)."""
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float64)  # z, y, x (, channel)
    if array.ndim == 4:
        if not 0 <= channel < array.shape[3]:
            raise SliceError(f"{image_id} ({path}): no channel {channel} (restoration.channel); the image has {array.shape[3]}")
        array = array[..., channel]
    if array.ndim != 3:
        raise SliceError(f"{image_id} ({path}): {purpose} needs a 3D image, got shape {array.shape}")
    return array


def label_slices(data_dir: str | Path, row: Any, plane: str, n: int) -> list[np.ndarray] | None:
    """The ``n`` central axial (or coronal) slices of a manifest row's label map, taken
    as its image's are; None when the row has no label map."""
    mask = getattr(row, "mask", None)
    if not isinstance(mask, str) or not mask:
        return None
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(data_dir) / mask)))  # z, y, x
    axis = {"axial": 0, "coronal": 1}[plane]
    first = (array.shape[axis] - n) // 2
    return [np.take(array, i, axis=axis).astype(np.uint8) for i in range(first, first + n)]


def with_masks(pairs: SlicePairs, masks: list[np.ndarray | None], per_slice: int) -> SlicePairs:
    """``pairs`` (each slice's ``per_slice`` pairs in a row) with each slice's label map,
    when every slice has one."""
    if masks and all(m is not None for m in masks):
        pairs.mask = np.repeat(np.stack(masks), per_slice, axis=0)
    return pairs


def publish_pairs(
    pairs: SlicePairs, outputs: dict[str, str], *, rule: str, inputs: list[str], settings: dict[str, Any], **record: Any
) -> SlicePairs:
    """What every degradation's rule ends with: ``pairs.npz`` (float32 images, levels,
    patients and image ids, and the missing regions where there are any) and the rule's
    record (``record``: seed, started, code, wildcards)."""
    regions = {} if pairs.region is None else {"region": pairs.region}
    if pairs.mask is not None:
        regions["mask"] = pairs.mask.astype(np.uint8)
    with atomic_path(outputs["pairs"]) as tmp:
        with open(tmp, "wb") as handle:  # np.savez would add '.npz' to a path without it
            np.savez_compressed(
                handle, noisy=pairs.noisy.astype(np.float32), reference=pairs.reference.astype(np.float32),
                level=pairs.level, patient=pairs.patient, image_id=np.asarray(pairs.image_id), **regions,
            )  # fmt: skip
    provenance.write_record(
        outputs["provenance"], rule=rule, inputs=inputs, outputs=[outputs["pairs"]], params={"restoration": settings}, **record
    )
    return pairs


def load_pairs(path: str | Path, image_ids=None) -> SlicePairs:
    """The pairs of ``pairs.npz``, of the given images only (all when None)."""
    with np.load(path) as data:
        keep = np.ones(len(data["level"]), bool) if image_ids is None else np.isin(data["image_id"], list(image_ids))
        return SlicePairs(
            data["noisy"][keep].astype(np.float64),
            data["reference"][keep].astype(np.float64),
            data["level"][keep],
            data["patient"][keep],
            data["image_id"][keep],
            data["region"][keep] if "region" in data else None,
            data["mask"][keep] if "mask" in data else None,
        )
