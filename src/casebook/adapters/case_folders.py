"""One folder per case, as BraTS, KiTS and the DeepMedic BraTS sample ship them::

    <root>/[<split>/]<case>/{<case>_flair.nii.gz, <case>_t1.nii.gz, ..., <case>_seg.nii.gz}

File names are patterns in which ``{case}`` stands for the folder's name; the registry
says which file is which channel, the label and an optional region-of-interest mask
(a brain mask). A case folder is any folder that holds the first channel's file, so
extra nesting (train/validation/test) is allowed; with ``split_from_parent`` that parent
folder's name becomes the source split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import SimpleITK as sitk

from casebook.adapters.images import (
    AdapterError,
    check_geometry,
    check_labels,
    files_digest,
    id_from_pattern,
    read_image,
    stack_channels,
)
from casebook.deid import pseudonym
from casebook.layout import Record, refuse_non_finite_mask

__all__ = ["find_cases", "case_folder_records", "SPLIT_NAMES"]

# folder names that mean a source split, and the canonical name of each
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "validation": "val", "test": "test", "testing": "test"}


def find_cases(root: str | Path, first_channel: str) -> list[Path]:
    """Every folder under ``root`` that holds the first channel's file, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise AdapterError(f"{root}: not a folder (expected one folder per case under it)")
    cases = sorted(d for d in [root, *root.rglob("*")] if d.is_dir() and (d / first_channel.format(case=d.name)).is_file())
    if not cases:
        raise AdapterError(f"{root}: no case folder holds a file named like {first_channel!r}")
    return cases


def _patient(case: str, pattern: str | None) -> str:
    patient = id_from_pattern(case, pattern)
    if patient is None:
        raise AdapterError(f"case {case}: its folder name does not match patient_pattern {pattern!r}")
    return patient


def _roi(image: sitk.Image) -> sitk.Image:
    """A binary region of interest: every voxel above the mask's minimum (brain masks come
    as 0/1, 0/255 or -x/+y after z-scoring)."""
    array = sitk.GetArrayViewFromImage(image)
    # a constant mask (all brain) has no "above the minimum": it is all foreground
    inside = np.ones(array.shape, np.uint8) if array.min() == array.max() else (array > array.min()).astype(np.uint8)
    roi = sitk.GetImageFromArray(inside)
    roi.CopyInformation(image)
    return roi


def case_folder_records(
    root: str | Path,
    *,
    key: bytes,
    name: str,
    channels: Mapping[str, str],
    label: str | None = None,
    mask: str | None = None,
    labels: Mapping[Any, str] | None = None,
    split_from_parent: bool = False,
    patient_pattern: str | None = None,
) -> tuple[Iterator[Record], int, dict[str, Any]]:
    """Records of a folder of case folders (see the module docstring).

    ``patient_pattern`` is a regular expression whose first group (or whole match) is
    the patient within a case folder's name, where one patient has several cases
    (BraTS 2013 ``brats_2013_pat0001_1``: patient ``pat0001``, time point 1); the cases
    of one patient then share a pseudonym, so no split can separate them.
    """
    if not channels:
        raise AdapterError(f"data set {name}: adapter case_folders needs 'channels' (name: file pattern)")
    names, patterns = list(channels), list(channels.values())
    cases = find_cases(root, patterns[0])
    label_values = {int(k): v for k, v in (labels or {}).items()}
    identifiers: set[str] = set()

    def generate() -> Iterator[Record]:
        for folder in cases:
            case = folder.name
            identifiers.add(case)  # the source's case name must not reach an output either
            paths = [folder / p.format(case=case) for p in patterns]
            image = stack_channels([read_image(p) for p in paths], names=names, case=case)
            image_id = pseudonym(f"{name}/{case}", key, prefix="img")
            seg = roi = None
            if label:
                label_path = folder / label.format(case=case)
                seg = read_image(label_path)
                check_geometry(image, seg, case=case, what=f"label {label_path.name}")
                # before check_labels, which would report NaN as an undeclared label value
                refuse_non_finite_mask(seg, image_id=image_id, source=str(label_path), what="label")
                if label_values:
                    check_labels(seg, label_values, case=case)
                paths.append(label_path)
            if mask:
                mask_path = folder / mask.format(case=case)
                brain = read_image(mask_path)
                # before _roi, whose "above the minimum" would turn a NaN mask into nothing
                refuse_non_finite_mask(brain, image_id=image_id, source=str(mask_path), what="region of interest")
                roi = _roi(brain)
                check_geometry(image, roi, case=case, what=f"mask {mask_path.name}")
                paths.append(mask_path)
            yield Record(
                image_id=image_id,
                patient_id=pseudonym(f"{name}/{_patient(case, patient_pattern)}", key),
                label=None,
                image=image,
                mask=seg,
                roi=roi,
                source_split=SPLIT_NAMES.get(folder.parent.name.lower(), "") if split_from_parent else "",
                source_checksum=files_digest(paths),
                source=str(folder),  # NaN / inf voxels are counted and refused (or replaced) by write_dataset
            )

    info = {"channel_names": names, "labels": label_values, "identifiers": identifiers}
    return generate(), len(cases), info
