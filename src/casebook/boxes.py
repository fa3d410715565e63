"""Boxes in the canonical layout: ``boxes.tsv`` beside the manifest, one row per finding.

A box is axis-aligned in world coordinates (millimetres, the image's own physical
space, SimpleITK's x, y, z order): its centre and its full size along each axis. 2D
data sets leave the z columns empty. ``class`` names what was found (``nodule``,
``fracture``, ``mass``); ``finding`` carries what the source says of it, where it says
anything (malignancy, ``ground-glass``); ``excluded`` marks findings that count neither
as hits nor as false positives (LUNA16's irrelevant findings, nodules under 3 mm).

Boxes are written by :func:`casebook.layout.write_dataset` from each record's
``boxes`` and checked there and by the geometry check: a box of an image the manifest
lacks, a centre outside its image, or a malformed row is refused, naming the file and
the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

BOX_COLUMNS = [
    "image_id",
    "class",
    "centre_x",
    "centre_y",
    "centre_z",
    "size_x",
    "size_y",
    "size_z",
    "excluded",
    "finding",
]
BOXES_FILE = "boxes.tsv"


class BoxError(ValueError):
    """A boxes table that does not describe the images beside it."""


@dataclass(frozen=True)
class Box:
    """One finding: centre and full size (mm, world x, y, z; z None in 2D)."""

    image_id: str
    cls: str
    centre: tuple[float, ...]
    size: tuple[float, ...]
    excluded: bool = False
    finding: str = ""

    @property
    def diameter(self) -> float:
        """The largest size (mm): the radius of a hit is half of it (LUNA16)."""
        return float(max(self.size))

    def row(self) -> dict[str, Any]:
        pad = (None,) * (3 - len(self.centre))
        cx, cy, cz = (*self.centre, *pad)
        sx, sy, sz = (*self.size, *pad)
        return {
            "image_id": self.image_id,
            "class": self.cls,
            "centre_x": cx,
            "centre_y": cy,
            "centre_z": cz,
            "size_x": sx,
            "size_y": sy,
            "size_z": sz,
            "excluded": int(self.excluded),
            "finding": self.finding,
        }


def boxes_frame(boxes: Iterable[Box]) -> pd.DataFrame:
    return pd.DataFrame([b.row() for b in boxes], columns=BOX_COLUMNS)


def _row_box(row: pd.Series, where: str) -> Box:
    """One table row as a Box; a missing or non-numeric coordinate is refused."""
    dims = 2 if pd.isna(row["centre_z"]) and pd.isna(row["size_z"]) else 3
    axes = "xyz"[:dims]
    try:
        centre = tuple(float(row[f"centre_{a}"]) for a in axes)
        size = tuple(float(row[f"size_{a}"]) for a in axes)
    except (TypeError, ValueError):
        raise BoxError(f"{where}: a centre or size is not a number") from None
    if not all(np.isfinite(centre + size)):
        raise BoxError(f"{where}: a centre or size is missing or not finite")
    if min(size) <= 0:
        raise BoxError(f"{where}: sizes must be positive, got {size}")
    if str(row["excluded"]) not in ("0", "1"):
        raise BoxError(f"{where}: 'excluded' must be 0 or 1, got {row['excluded']!r}")
    return Box(str(row["image_id"]), str(row["class"]), centre, size, str(row["excluded"]) == "1", str(row["finding"]))


def read_boxes(path: str | Path) -> list[Box]:
    """The boxes of a ``boxes.tsv``; a missing column or malformed row is refused naming
    the file and the row (the header is line 1)."""
    path = Path(path)
    if not path.is_file():
        raise BoxError(f"{path}: boxes table not found")
    table = pd.read_csv(path, sep="\t", dtype={"image_id": str, "class": str, "finding": str, "excluded": str}, keep_default_na=False)
    missing = [c for c in BOX_COLUMNS if c not in table.columns]
    if missing:
        raise BoxError(f"{path}: missing column(s) {', '.join(missing)}")
    for col in BOX_COLUMNS[2:8]:  # empty z cells (2D) become NaN, whatever dtype pandas read
        table[col] = pd.to_numeric(table[col].astype(str).replace("", "nan"), errors="coerce")
    return [_row_box(row, f"{path} row {line}") for line, (_, row) in enumerate(table.iterrows(), start=2)]


def centre_outside(box: Box, image: Any) -> bool:
    """Whether the box's centre lies outside the image's extent (half a voxel beyond the
    first and last voxel centres). ``image``: a SimpleITK image or a header reader."""
    if len(box.centre) != image.GetDimension():
        return True
    direction = np.array(image.GetDirection()).reshape(image.GetDimension(), -1)
    index = direction.T @ (np.array(box.centre) - np.array(image.GetOrigin())) / np.array(image.GetSpacing())
    return bool(np.any(index < -0.5) or np.any(index > np.array(image.GetSize()) - 0.5))


def box_problems(boxes: Iterable[Box], headers: dict[str, Any], where: str, *, first_row: int | None = None) -> list[str]:
    """Boxes that refer to an image not in ``headers`` (image id -> SimpleITK image or
    header reader), of another dimension than it, or whose centre lies outside it. Each is
    named as ``box <n>``, or as the table's ``row <n>`` when ``first_row`` (the first box's
    line) is given."""
    problems = []
    for number, box in enumerate(boxes, start=1):
        name = f"box {number}" if first_row is None else f"row {number + first_row - 1}"
        if box.image_id not in headers:
            problems.append(f"{where}: {name} ({box.cls}) refers to image {box.image_id!r}, which the data set lacks")
        elif len(box.centre) != headers[box.image_id].GetDimension():
            problems.append(
                f"{where}: {name} ({box.cls}) is {len(box.centre)}D, image {box.image_id} {headers[box.image_id].GetDimension()}D"
            )
        elif centre_outside(box, headers[box.image_id]):
            problems.append(f"{where}: {name} ({box.cls}) of image {box.image_id} has its centre {box.centre} mm outside the image")
    return problems


def boxes_of(boxes: Iterable[Box]) -> dict[str, list[Box]]:
    """Boxes grouped by image id, in table order."""
    out: dict[str, list[Box]] = {}
    for box in boxes:
        out.setdefault(box.image_id, []).append(box)
    return out


__all__ = ["BOX_COLUMNS", "BOXES_FILE", "Box", "BoxError", "box_problems", "boxes_frame", "boxes_of", "centre_outside", "read_boxes"]
