"""The simulate_registration rule: the pairs a registration study registers.

From each ingested volume, ``slices`` central axial slices of one channel are taken
(intensities scaled per volume and channel, the 1st and 99th percentiles to 0 and 1).
``registration.pairing``:

* ``known`` (default): each slice is deformed by its own random field
  (:func:`fields.random_field`) into the fixed image, its label map and brain mask with
  it (nearest neighbour); the true field is kept. The fixed image may come from another
  channel (``fixed_channel``: a multi-modal pair, where mutual information is needed).
* ``atlas``: every image's slice is registered to the same slice of one atlas image, a
  training image (``registration.atlas``, else fold 0's first).
* ``pairwise``: each image to the next one of its part (each fold's validation images,
  and the test images), so that no pair joins a training patient to a held-out one.
* ``cine``: each patient's images are the frames of a cine (manifest column ``frame``);
  the end-diastolic frame is registered to every other frame, and its labels warped to
  a frame track the ventricle there (:mod:`.cine`).

Inter-patient pairs have no true field (NaN). ``pairs.npz`` keeps the patient and image
id of each moving image, so the split's parts and the patient bootstrap apply.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from tqdm.auto import tqdm

from casebook import provenance
from casebook.fileio import atomic_path, read_json
from casebook.layout import read_manifest
from casebook.tasks.registration.fields import random_field, warp_array

#: The deformation drawn when the case study sets none (mm and degrees).
DEFORMATION = {"max_displacement_mm": 6.0, "smoothness_mm": 12.0, "rotation_degrees": 5.0, "translation_mm": 4.0}


class PairError(ValueError):
    """An image that cannot make the pairs the case study asks for."""


@dataclass
class Pairs:
    """Registration pairs, one row per pair: images (N, rows, columns) in [0, 1],
    label maps and the fixed brain mask on the same grid, the true field (N, 2, rows,
    columns; pixels, :mod:`.fields` convention; NaN when unknown), the pixel spacing (N,
    2; mm, rows and columns), the patient and image of each (moving) image, and where
    the slice lies."""

    moving: np.ndarray
    fixed: np.ndarray
    moving_label: np.ndarray
    fixed_label: np.ndarray
    fixed_roi: np.ndarray
    true_ddf: np.ndarray
    spacing: np.ndarray
    patient: np.ndarray
    image_id: np.ndarray
    #: the slice index of each pair, its thickness (mm) and, for a cine, the fixed frame (else -1)
    slice: np.ndarray
    thickness: np.ndarray
    frame: np.ndarray

    def __len__(self) -> int:
        return len(self.patient)

    def subset(self, keep: np.ndarray) -> "Pairs":
        return Pairs(**{name: value[keep] for name, value in vars(self).items()})


def _volume(path: Path, image_id: str, channel: int, key: str) -> tuple[np.ndarray, tuple[float, float], float]:
    """One channel of a 3D image (z, y, x), its in-plane spacing (rows, columns; mm) and
    its slice thickness (mm)."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float64)  # z, y, x (, channel)
    if array.ndim == 4:
        if not 0 <= channel < array.shape[3]:
            raise PairError(f"{image_id} ({path}): no channel {channel} (registration.{key}); the image has {array.shape[3]}")
        array = array[..., channel]
    if array.ndim != 3:
        raise PairError(f"{image_id} ({path}): registration pairs need a 3D image, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise PairError(f"{image_id} ({path}): non-finite voxels in channel {channel}")
    spacing = image.GetSpacing()
    return array, (float(spacing[1]), float(spacing[0])), float(spacing[2])


def _scaled(volume: np.ndarray) -> np.ndarray:
    low, high = np.percentile(volume, [1.0, 99.0])
    return np.clip((volume - low) / max(high - low, 1e-6), 0.0, 1.0)


def _label_volume(data_dir: Path, row: Any, column: str, shape: tuple[int, ...], purpose: str) -> np.ndarray:
    rel = getattr(row, column, "")
    if not isinstance(rel, str) or not rel:
        raise PairError(f"{row.image_id}: no {column} in the manifest; registration needs one ({purpose})")
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / rel)))
    if array.shape != shape:
        raise PairError(f"{row.image_id} ({data_dir / rel}): {column} of shape {array.shape} is not on the image's grid {shape}")
    return array.astype(np.uint8)


def _resized(slice_: np.ndarray, size: int | None, order: int) -> np.ndarray:
    if size is None or slice_.shape == (size, size):
        return slice_
    return ndimage.zoom(slice_, (size / slice_.shape[0], size / slice_.shape[1]), order=order, grid_mode=True, mode="nearest")


def central(n_slices: int, wanted: int, image_id: str) -> range:
    if n_slices < wanted:
        raise PairError(f"{image_id}: {n_slices} axial slices, fewer than the {wanted} asked for (registration.slices)")
    first = (n_slices - wanted) // 2
    return range(first, first + wanted)


def _extent(path: Path) -> np.ndarray:
    """The in-plane world extent of an image, [[x min, x max], [y min, y max]] (mm)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    corners = [reader.GetOrigin()[:2], np.add(reader.GetOrigin()[:2], np.multiply(reader.GetSize()[:2], reader.GetSpacing()[:2]))]
    return np.sort(np.array(corners, dtype=np.float64).T, axis=1)


def image_slices(data_dir: Path, row: Any, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """One manifest row's central slices: the moving channel, the fixed channel, the label
    map and brain mask, resampled to ``size`` when it is set, and their spacing."""
    channel = int(settings.get("channel", 0))
    fixed_channel = settings.get("fixed_channel")
    fixed_channel = channel if fixed_channel is None else int(fixed_channel)
    moving_vol, spacing, thickness = _volume(data_dir / row.image, row.image_id, channel, "channel")
    extent = _extent(data_dir / row.image)  # for inter-patient pairs: do the two overlap in space
    fixed_vol = moving_vol if fixed_channel == channel else _volume(data_dir / row.image, row.image_id, fixed_channel, "fixed_channel")[0]
    moving_vol, fixed_vol = _scaled(moving_vol), _scaled(fixed_vol)
    labels = _label_volume(data_dir, row, "mask", moving_vol.shape, "the warped labels are scored")
    # the field error is taken inside the brain (or body) mask, else inside the labels
    has_roi = isinstance(getattr(row, "roi", ""), str) and getattr(row, "roi", "")
    roi = _label_volume(data_dir, row, "roi", moving_vol.shape, "") if has_roi else (labels > 0).astype(np.uint8)
    size = settings.get("size")
    size = None if size is None else int(size)
    out = []
    for z in central(moving_vol.shape[0], int(settings.get("slices", 4)), row.image_id):
        shape = moving_vol[z].shape
        out.append(
            {
                "image": _resized(moving_vol[z], size, 1).astype(np.float32),
                "other_channel": _resized(fixed_vol[z], size, 1).astype(np.float32),
                "label": _resized(labels[z], size, 0),
                "roi": _resized(roi[z], size, 0),
                "spacing": np.asarray(spacing if size is None else (spacing[0] * shape[0] / size, spacing[1] * shape[1] / size)),
                "slice": z,
                "thickness": thickness,
                "frame": int(getattr(row, "frame", -1) if str(getattr(row, "frame", "")).strip() else -1),
                "patient": row.patient_id,
                "image_id": row.image_id,
                "file": data_dir / row.image,
                "extent": extent,
            }
        )
    return out


def _where(moving: dict[str, Any], frame: int) -> dict[str, Any]:
    return {key: moving[key] for key in ("spacing", "patient", "image_id", "slice", "thickness")} | {"frame": frame}


def cine_pairs(slices: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each cine's end-diastolic frame (frame 0) to every other frame, slice by slice:
    the ED labels warped to a frame track the ventricle there. The manifest's ``frame``
    column orders a patient's images; a cine whose frames are not 0 to n - 1 once each is
    refused, naming the patient."""
    cines: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for image in slices.values():
        first = image[0]
        if first["frame"] < 0:
            raise PairError(f"{first['image_id']}: no 'frame' in the manifest; registration.pairing cine needs one per image")
        frames = cines.setdefault(first["patient"], {})
        if first["frame"] in frames:
            raise PairError(
                f"patient {first['patient']}: frame {first['frame']} twice ({frames[first['frame']][0]['image_id']}, {first['image_id']})"
            )
        frames[first["frame"]] = image
    out = []
    for patient, frames in sorted(cines.items()):
        if sorted(frames) != list(range(len(frames))) or len(frames) < 2:
            raise PairError(f"patient {patient}: cine frames {sorted(frames)}; need 0 (end diastole) to n - 1, each once")
        for f in range(1, len(frames)):
            out += [patient_pair(ed, other) for ed, other in zip(frames[0], frames[f])]
    return out


def known_pair(moving: dict[str, Any], deformation: dict[str, float], seed: int) -> dict[str, Any]:
    """A slice and its copy deformed by a random field (the other channel's copy, for a
    multi-modal pair), with the field."""
    # each pair its own stream: the same image gets the same field whatever else is ingested
    rng = np.random.default_rng([seed, zlib.crc32(str(moving["image_id"]).encode()), moving["slice"]])
    ddf = random_field(moving["image"].shape, tuple(moving["spacing"]), rng, **deformation)
    return {
        "moving": moving["image"],
        "fixed": warp_array(moving["other_channel"], ddf),
        "moving_label": moving["label"],
        "fixed_label": warp_array(moving["label"], ddf, labels=True),
        "fixed_roi": warp_array(moving["roi"], ddf, labels=True),
        "true_ddf": ddf,
        **_where(moving, frame=-1),
    }


def patient_pair(moving: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """Two patients' slices (the same central slice of each): no true field. Refused when
    their grids differ or their in-plane world extents do not overlap."""
    who = f"{moving['image_id']} ({moving['file']}) and {fixed['image_id']} ({fixed['file']})"
    if moving["image"].shape != fixed["image"].shape or not np.allclose(moving["spacing"], fixed["spacing"]):
        raise PairError(f"{who}: slices of {moving['image'].shape} and {fixed['image'].shape} pixels; set registration.size")
    a, b = moving["extent"], fixed["extent"]
    if np.any(np.minimum(a[:, 1], b[:, 1]) <= np.maximum(a[:, 0], b[:, 0])):
        raise PairError(f"{who}: their physical extents {a.tolist()} and {b.tolist()} mm do not overlap")
    return {
        "moving": moving["image"],
        "fixed": fixed["other_channel"],
        "moving_label": moving["label"],
        "fixed_label": fixed["label"],
        "fixed_roi": fixed["roi"],
        "true_ddf": np.full((2, *moving["image"].shape), np.nan, np.float32),
        **_where(moving, frame=fixed["frame"]),
    }


def pairing_groups(splits: dict[str, Any]) -> list[list[str]]:
    """The groups pairs are made within: each fold's validation images, and the test
    images, so that no pair joins a training image to a validation or test one."""
    return [sorted(fold["val"]) for fold in splits["folds"]] + [sorted(splits["test"])]


def atlas_of(splits: dict[str, Any], settings: dict[str, Any]) -> str:
    """The atlas image: ``registration.atlas``, else the first training image of fold 0;
    a test image is refused."""
    atlas = settings.get("atlas") or sorted(splits["folds"][0]["train"])[0]
    if atlas in splits["test"]:
        raise PairError(f"registration.atlas {atlas!r} is a test image: an atlas must come from the training patients")
    return atlas


def make_pairs(
    slices: dict[str, list[dict[str, Any]]], settings: dict[str, Any], splits: dict[str, Any] | None, seed: int
) -> list[dict[str, Any]]:
    """The pairs of ``registration.pairing``: ``known`` (each slice and its deformed copy),
    ``atlas`` (every other image's slice to the atlas image's same slice) or ``pairwise``
    (each image to the next one of its group, :func:`pairing_groups`)."""
    pairing = settings.get("pairing", "known")
    if pairing == "cine":
        return cine_pairs(slices)
    if pairing == "known":
        deformation = {**DEFORMATION, **(settings.get("deformation") or {})}
        return [known_pair(s, deformation, seed) for image in slices.values() for s in image]
    if splits is None:
        raise PairError(f"registration.pairing {pairing!r} needs the split (patients are paired within their part)")
    if pairing == "atlas":
        atlas = atlas_of(splits, settings)
        if atlas not in slices:
            raise PairError(f"registration.atlas {atlas!r} is not an image of the data set")
        return [patient_pair(s, a) for image_id, image in slices.items() if image_id != atlas for s, a in zip(image, slices[atlas])]
    if pairing == "pairwise":
        out = []
        for group in pairing_groups(splits):
            for i, image_id in enumerate(group):
                partner = group[(i + 1) % len(group)]
                if partner != image_id:
                    out += [patient_pair(s, f) for s, f in zip(slices[image_id], slices[partner])]
        return out
    raise PairError(f"unknown registration.pairing {pairing!r}; choose known, atlas, pairwise or cine")


def simulate_pairs(data_dir: str | Path, settings: dict[str, Any], seed: int, splits: dict[str, Any] | None = None) -> Pairs:
    """Every manifest row's central slices, paired as ``registration.pairing`` says."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir / "manifest.tsv")
    slices = {
        row.image_id: image_slices(data_dir, row, settings)
        for row in tqdm(list(manifest.itertuples()), desc="registration slices", unit="image")
    }
    rows = make_pairs(slices, settings, splits, seed)
    shapes = {r["moving"].shape for r in rows}
    if len(shapes) > 1:
        raise PairError(f"slices of different sizes {sorted(shapes)}: set registration.size to resample them to one square size")
    return Pairs(**{name: np.stack([r[name] for r in rows]) for name in Pairs.__dataclass_fields__})


def save_pairs(pairs: Pairs, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # np.savez would add '.npz' to a path without it
            np.savez_compressed(
                handle,
                **{k: (v.astype(np.float32) if v.dtype.kind == "f" and k != "spacing" else v) for k, v in vars(pairs).items()},
            )


def load_pairs(path: str | Path, image_ids=None) -> Pairs:
    """The pairs of ``pairs.npz``, of the given images only (all when None)."""
    with np.load(path) as data:
        pairs = Pairs(**{name: data[name] for name in Pairs.__dataclass_fields__})
    return pairs if image_ids is None else pairs.subset(np.isin(pairs.image_id, list(image_ids)))


def simulate_stage(data_dir: str, splits: str, settings: dict[str, Any], seed: int, outputs: dict[str, str], wildcards=None) -> Pairs:
    """The rule: make the pairs, write ``outputs['pairs']`` and its record."""
    started, code = provenance.now(), provenance.code_state()
    pairs = simulate_pairs(data_dir, settings, seed, read_json(splits))
    save_pairs(pairs, outputs["pairs"])
    provenance.write_record(
        outputs["provenance"],
        rule="simulate_registration",
        inputs=[data_dir, splits],
        outputs=[outputs["pairs"]],
        params={"registration": settings},
        seed=seed,
        started=started,
        code=code,
        wildcards=wildcards,
    )
    return pairs
