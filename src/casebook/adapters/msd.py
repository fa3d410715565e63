"""The Medical Segmentation Decathlon / nnU-Net (v1) layout::

    TaskXX_Name/dataset.json   name, modality {"0": "FLAIR", ...}, labels {"0": "background", ...},
                               training [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}],
                               test ["./imagesTs/y.nii.gz"]
    TaskXX_Name/imagesTr/  labelsTr/  imagesTs/

Multi-sequence tasks (BrainTumour, Prostate) store channels as the 4th axis; they become
vector images. Test images have no labels and are not ingested (nothing to train or
evaluate on); the case list comes from dataset.json, never from a directory listing,
so the AppleDouble ``._*`` files in the published tarballs are never read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from casebook.adapters.images import AdapterError, as_vector, check_geometry, check_labels, files_digest, read_image
from casebook.deid import pseudonym
from casebook.layout import Record, refuse_non_finite_mask

__all__ = ["find_task_root", "msd_records"]


def find_task_root(root: str | Path) -> Path:
    """The folder holding dataset.json: ``root`` itself or its single task folder."""
    root = Path(root)
    if (root / "dataset.json").is_file():
        return root
    candidates = sorted(p.parent for p in root.glob("*/dataset.json") if not p.parent.name.startswith("."))
    if len(candidates) != 1:
        found = ", ".join(str(c) for c in candidates) or "none"
        raise AdapterError(f"{root}: expected one Decathlon task folder with a dataset.json, found {found}")
    return candidates[0]


def _read_description(task_root: Path) -> dict[str, Any]:
    path = task_root / "dataset.json"
    try:
        description = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{path}: not a readable dataset.json ({exc})") from exc
    for key in ("training", "labels"):
        if key not in description:
            raise AdapterError(f"{path}: missing key {key!r}")
    return description


def msd_records(root: str | Path, *, key: bytes, name: str, task: str | None = None) -> tuple[Iterator[Record], int, dict[str, Any]]:
    """Records of a Decathlon task folder (or the folder it was extracted into).

    ``task`` (e.g. ``Task09_Spleen``, from the registry) must be the task folder's name:
    a shared folder holding another task is refused rather than ingested under this name.
    """
    task_root = find_task_root(root)
    if task and task_root.name != task:
        raise AdapterError(f"{task_root}: expected the Decathlon task folder {task}, found {task_root.name}")
    description = _read_description(task_root)
    modality = description.get("modality") or {"0": "image"}
    channel_names = [modality[k] for k in sorted(modality, key=int)]
    labels = {int(k): v for k, v in description["labels"].items()}
    cases = description["training"]
    identifiers: set[str] = set()

    def generate() -> Iterator[Record]:
        for i, case in enumerate(cases):
            if not isinstance(case, dict) or not {"image", "label"} <= set(case):
                raise AdapterError(f"{task_root / 'dataset.json'}: training entry {i} needs 'image' and 'label', got {case!r}")
            image_path = task_root / case["image"]
            label_path = task_root / case["label"]
            case_id = Path(case["image"]).name.removesuffix(".nii.gz").removesuffix(".nii")
            identifiers.add(case_id)
            image = as_vector(read_image(image_path))
            if image.GetNumberOfComponentsPerPixel() != len(channel_names):
                raise AdapterError(
                    f"case {case_id}: {image_path} has {image.GetNumberOfComponentsPerPixel()} channel(s), "
                    f"dataset.json lists {len(channel_names)} ({', '.join(channel_names)})"
                )
            label = read_image(label_path)
            check_geometry(image, label, case=case_id, what=f"label {label_path.name}")
            subject = pseudonym(f"{name}/{case_id}", key)
            # before check_labels, which would report NaN as an undeclared label value
            refuse_non_finite_mask(label, image_id=subject, source=str(label_path), what="label")
            check_labels(label, labels, case=case_id)
            yield Record(
                image_id=subject,
                patient_id=subject,
                label=None,
                image=image,
                mask=label,
                source_checksum=files_digest([image_path, label_path]),
                source=str(image_path),  # NaN / inf voxels are counted and refused (or replaced) by write_dataset
            )

    info = {"channel_names": channel_names, "labels": labels, "identifiers": identifiers}
    return generate(), len(cases), info
