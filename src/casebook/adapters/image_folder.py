"""A folder of image files that SimpleITK reads (NIfTI, MetaImage .mhd, NRRD), one image
per file, as LUNA16 and BIDS-style collections (OASIS) ship them.

The subject comes from the path through a regular expression (``sub-([^_/]+)`` for
BIDS), else from the file name; image-level labels, where there are any, from a CSV of
``patient_id,label`` keyed by the source's own subject id. Both ids are replaced by
keyed-hash pseudonyms before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

from casebook.adapters.images import AdapterError, as_vector, check_geometry, files_digest, id_from_pattern, read_image
from casebook.deid import pseudonym
from casebook.layout import Record, refuse_non_finite_mask

__all__ = ["image_folder_records", "read_label_table", "stem"]

_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha", ".nrrd", ".nhdr")


def stem(path: Path) -> str:
    """The file name without its image suffix (``x.nii.gz`` -> ``x``)."""
    for suffix in _SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def read_label_table(path: str | Path, class_names: Sequence[str]) -> dict[str, int]:
    """``patient_id -> class index`` from a CSV with columns patient_id and label.

    The label may be a class index or a class name.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise AdapterError(f"{path}: cannot read the labels table ({exc})") from exc
    missing = {"patient_id", "label"} - set(table.columns)
    if missing:
        raise AdapterError(f"{path}: labels table needs columns patient_id and label (missing {sorted(missing)})")
    index = {name: i for i, name in enumerate(class_names)}
    labels = {}
    for row, (patient, label) in enumerate(zip(table["patient_id"], table["label"]), start=2):
        value = index.get(label, int(label) if label.isdigit() else None)
        if value is None or not 0 <= value < len(class_names):
            raise AdapterError(f"{path}, line {row}: label {label!r} is not one of {list(class_names)} or their index")
        labels[patient] = value
    return labels


def image_folder_records(
    root: str | Path,
    *,
    key: bytes,
    name: str,
    class_names: Sequence[str],
    pattern: str = "**/*.nii.gz",
    patient_pattern: str | None = None,
    labels_dir: str | None = None,
    labels_csv: str | None = None,
) -> tuple[Iterator[Record], int, dict[str, Any]]:
    """Records of every image matching ``pattern`` under ``root``.

    Args:
        labels_dir: a folder (relative to ``root``) of voxel label files with the same
            names as the images (segmentation).
        labels_csv: a ``patient_id,label`` table (classification); images of subjects
            missing from it are refused, naming the file.
    """
    root = Path(root)
    files = sorted(p for p in root.glob(pattern) if p.is_file() and not p.name.startswith("._"))
    if labels_dir:
        files = [p for p in files if (root / labels_dir) not in p.parents]
    if not files:
        raise AdapterError(f"{root}: no image file matches {pattern!r}")
    table = read_label_table(labels_csv, class_names) if labels_csv else None
    identifiers: set[str] = set()

    def subject_of(path: Path) -> str:
        if not patient_pattern:
            return stem(path)
        subject = id_from_pattern(str(path.relative_to(root)), patient_pattern)
        if subject is None:
            raise AdapterError(f"{path}: no subject id in its path (patient_pattern {patient_pattern!r})")
        return subject

    def generate() -> Iterator[Record]:
        for path in files:
            subject = subject_of(path)
            identifiers.add(subject)  # the source's own id must not reach an output either
            label = None
            if table is not None:
                if subject not in table:
                    raise AdapterError(f"{path}: subject has no row in {labels_csv}")
                label = table[subject]
            image = as_vector(read_image(path))
            image_id = pseudonym(f"{name}/{path.relative_to(root)}", key, prefix="img")
            seg, sources = None, [path]
            if labels_dir:
                label_path = root / labels_dir / path.name
                seg = read_image(label_path)
                check_geometry(image, seg, case=path.name, what=f"label {label_path}")
                refuse_non_finite_mask(seg, image_id=image_id, source=str(label_path), what="label")
                sources.append(label_path)
            pseudo = pseudonym(f"{name}/{subject}", key)
            yield Record(
                image_id=image_id,
                patient_id=pseudo,
                label=label,
                image=image,
                mask=seg,
                source_checksum=files_digest(sources),
                source=str(path),  # NaN / inf voxels are counted and refused (or replaced) by write_dataset
            )

    info = {"channel_names": None, "labels": None, "identifiers": identifiers}
    return generate(), len(files), info
