"""LUNA16 as it ships: CT volumes in MetaImage files named by their series UID, in ten
subsets, and nodule tables in world millimetres::

    <root>/subset0/<seriesuid>.mhd (+ .raw) ... <root>/subset9/...
    <root>/annotations.csv             seriesuid,coordX,coordY,coordZ,diameter_mm
    <root>/annotations_excluded.csv    the same columns: LUNA16's irrelevant findings
                                       (from the evaluation script; optional)

Each scan becomes one image with its boxes (``casebook.boxes``): a nodule is a cube of
its diameter centred on it, an irrelevant finding the same, marked ``excluded`` (one
without a diameter, -1 in the table, gets ``excluded_diameter_mm``). The subset is the
source split (``subset0``), so that a split can follow the official folds. The series
UID is replaced by a keyed-hash pseudonym before anything is written; LUNA16 has no
patient id, so each scan is its own patient. Tables are found at ``root`` or under
``CSVFILES/`` or ``evaluationScript/annotations/``, as the archives extract.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from casebook.adapters.image_folder import stem
from casebook.adapters.images import AdapterError, files_digest, read_image
from casebook.boxes import Box, centre_outside
from casebook.deid import pseudonym
from casebook.layout import Record

__all__ = ["luna16_records", "read_annotations"]

log = logging.getLogger(__name__)

COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
_TABLE_FOLDERS = ("", "CSVFILES", "evaluationScript/annotations")


def _find_table(root: Path, name: str) -> Path | None:
    for folder in _TABLE_FOLDERS:
        if (root / folder / name).is_file():
            return root / folder / name
    return None


def read_annotations(path: Path) -> dict[str, list[tuple[int, tuple[float, float, float], float]]]:
    """Rows of a LUNA16 table by series UID: (line, centre mm, diameter mm); a missing
    column or a value that is not a number is refused naming the file and the line."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise AdapterError(f"{path}: cannot read the annotations ({exc})") from exc
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise AdapterError(f"{path}: missing column(s) {', '.join(missing)} (LUNA16's are {', '.join(COLUMNS)})")
    rows: dict[str, list] = {}
    for line, row in enumerate(table[COLUMNS].itertuples(index=False), start=2):
        try:
            centre = (float(row.coordX), float(row.coordY), float(row.coordZ))
            diameter = float(row.diameter_mm)
        except ValueError:
            raise AdapterError(f"{path}, line {line}: a coordinate or the diameter is not a number") from None
        rows.setdefault(row.seriesuid.strip(), []).append((line, centre, diameter))
    return rows


def luna16_records(
    root: str | Path,
    *,
    key: bytes,
    name: str,
    annotations: str = "annotations.csv",
    excluded: str = "annotations_excluded.csv",
    excluded_diameter_mm: float = 10.0,
    pattern: str = "subset*/*.mhd",
) -> tuple[Iterator[Record], int, dict[str, Any]]:
    """Records of every scan matching ``pattern`` under ``root``, with its boxes.

    Annotations of series without a scan (subsets not downloaded) are left out with a
    warning that counts them; a table none of whose series has a scan is refused.
    """
    root = Path(root)
    files = sorted(p for p in root.glob(pattern) if p.is_file() and not p.name.startswith("._"))
    if not files:
        raise AdapterError(f"{root}: no scan matches {pattern!r} (LUNA16's subset*/<seriesuid>.mhd)")
    table = _find_table(root, annotations)
    if table is None:
        raise AdapterError(f"{root}: no {annotations} (at the top, or under {', '.join(f for f in _TABLE_FOLDERS if f)})")
    nodules = read_annotations(table)
    excluded_table = _find_table(root, excluded)
    irrelevant = read_annotations(excluded_table) if excluded_table else {}
    series = {stem(p): p for p in files}
    strays = sorted((lines[0][0], uid) for uid, lines in nodules.items() if uid not in series)
    if nodules and len(strays) == len(nodules):
        raise AdapterError(f"{table}: none of its series has a scan under {root} (line {strays[0][0]}: {strays[0][1]}): the wrong table?")
    if strays:  # a subset not downloaded: its scans' rows are left out, and said so
        log.warning("%s: %d of %d annotated series have no scan under %s; their rows are left out", table, len(strays), len(nodules), root)

    def boxes_of(uid: str, image_id: str, image) -> list[Box]:
        """The scan's boxes; one whose centre lies outside the scan is refused naming its
        table and line (a wrong table, or a scan cut short)."""
        out = []
        for path, rows, irrelevant_finding in ((table, nodules, False), (excluded_table, irrelevant, True)):
            for line, centre, d in rows.get(uid, []):
                d = d if d > 0 or not irrelevant_finding else excluded_diameter_mm
                if d <= 0:
                    raise AdapterError(f"{path}, line {line}: diameter_mm must be positive, got {d:g}")
                box = Box(image_id, "nodule", centre, (d, d, d), excluded=irrelevant_finding)
                if centre_outside(box, image):
                    raise AdapterError(f"{path}, line {line}: the finding at {centre} mm lies outside its scan {series[uid]}")
                out.append(box)
        return out

    def records() -> Iterator[Record]:
        for uid, path in series.items():
            image_id = pseudonym(uid, key, prefix="scan")
            image = read_image(path)
            yield Record(
                image_id=image_id,
                patient_id=image_id,
                label=None,
                image=image,
                source_split=path.parent.name,
                source_checksum=files_digest([path, path.with_suffix(".raw")] if path.with_suffix(".raw").is_file() else [path]),
                source=str(path),
                boxes=boxes_of(uid, image_id, image),
            )

    return records(), len(series), {"identifiers": set(series)}
