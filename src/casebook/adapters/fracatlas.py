"""FracAtlas as it ships (Abedeen et al., Sci Data 2023; figshare, CC BY 4.0): 4,083
musculoskeletal radiographs as JPEG files, 717 of them fractured, with the fractures'
boxes in COCO format::

    <root>/images/Fractured/IMG0000019.jpg ...   <root>/images/Non_fractured/...
    <root>/dataset.csv                 image_id,hand,leg,hip,shoulder,...,fractured,...
    <root>/Annotations/COCO JSON/COCO_fracture_masks.json
    <root>/Utilities/Fracture Split/{train,valid,test}.csv   (the fractured images only)

Each radiograph becomes one 2D grey image (the JPEG's channels averaged), labelled by
``dataset.csv``'s ``fractured`` column, with a box per COCO annotation. The JPEGs carry
no pixel spacing: the image's grid is its pixels (spacing 1, origin 0), so boxes and
every size are in pixels, not mm. A COCO box ``[x, y, w, h]`` has its edges on pixel
boundaries and ITK puts pixel centres at whole indices: its centre is ``(x + w/2 - 1/2,
y + h/2 - 1/2)``. The official split is the source split of the fractured images
(``train``, ``valid``, ``test``; none for the others). FracAtlas names no patient: each
image is its own patient, so views of one study may fall on both sides of a split (its
``multiscan`` flag marks such images but does not link them). Image names are replaced
by keyed-hash pseudonyms. With ``coco_sha256`` (the registry pins it), the annotation
file is checked first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import SimpleITK as sitk

from casebook.adapters.images import AdapterError, files_digest, read_image
from casebook.boxes import Box, centre_outside
from casebook.deid import pseudonym
from casebook.fileio import file_digest
from casebook.layout import Record

__all__ = ["fracatlas_records", "read_coco_boxes"]

COCO_FILE = "Annotations/COCO JSON/COCO_fracture_masks.json"
SPLIT_FOLDER = "Utilities/Fracture Split"
FOLDERS = ("Fractured", "Non_fractured")


def read_coco_boxes(path: Path) -> dict[str, list[tuple[int, tuple[float, float], tuple[float, float]]]]:
    """COCO boxes by image file name: (annotation index, centre, size) in pixel-centre
    coordinates; a malformed file, an annotation of an image the file does not list, or a
    box of no extent is refused naming the file and the annotation."""
    try:
        coco = json.loads(path.read_text())
        images = {int(im["id"]): str(im["file_name"]) for im in coco["images"]}
        annotations = list(coco["annotations"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AdapterError(f"{path}: not a COCO annotation file ({type(exc).__name__}: {exc})") from exc
    out: dict[str, list] = {}
    for index, ann in enumerate(annotations):
        where = f"{path}, annotation {index} (id {ann.get('id')})"
        if ann.get("image_id") not in images:
            raise AdapterError(f"{where}: image_id {ann.get('image_id')!r} is not among the file's images")
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            raise AdapterError(f"{where}: bbox must be four numbers [x, y, width, height], got {ann.get('bbox')!r}") from None
        if not (w > 0 and h > 0):
            raise AdapterError(f"{where}: the box has no extent ({w:g} x {h:g} pixels)")
        out.setdefault(images[ann["image_id"]], []).append((index, (x + w / 2 - 0.5, y + h / 2 - 0.5), (w, h)))
    return out


def _read_table(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise AdapterError(f"{path}: cannot read the table ({exc})") from exc
    missing = {"image_id", "fractured"} - set(table.columns)
    if missing:
        raise AdapterError(f"{path}: missing column(s) {', '.join(sorted(missing))} (FracAtlas's dataset.csv has image_id and fractured)")
    bad = table.index[~table["fractured"].isin(["0", "1"])]
    if len(bad):
        raise AdapterError(f"{path}, line {bad[0] + 2}: fractured must be 0 or 1, got {table['fractured'][bad[0]]!r}")
    twice = table.index[table["image_id"].duplicated()]
    if len(twice):
        raise AdapterError(f"{path}, line {twice[0] + 2}: {table['image_id'][twice[0]]} has a row already")
    return table.set_index("image_id")


def _official_split(root: Path) -> dict[str, str]:
    """File name -> train, valid or test, from the split's CSV files (where present)."""
    split = {}
    for name in ("train", "valid", "test"):
        path = root / SPLIT_FOLDER / f"{name}.csv"
        if not path.is_file():
            continue
        try:
            split.update(dict.fromkeys(pd.read_csv(path, dtype=str)["image_id"], name))
        except (pd.errors.ParserError, KeyError) as exc:
            raise AdapterError(f"{path}: not a FracAtlas split table (a column image_id): {type(exc).__name__}: {exc}") from exc
    return split


def grey_pixels(image: sitk.Image) -> sitk.Image:
    """A radiograph's one channel (a JPEG saved in colour has its channels averaged) on
    its pixel grid: SimpleITK reads the JPEG's print resolution (often 96 dpi, 0.26 mm)
    as a spacing, which says nothing of the detector's pixels."""
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = np.rint(array.astype(np.float32).mean(axis=-1)).astype(np.uint8)
    return sitk.GetImageFromArray(array)  # spacing 1, origin 0, identity direction


def fracatlas_records(
    root: str | Path, *, key: bytes, name: str, coco_sha256: str | None = None
) -> tuple[Iterator[Record], int, dict[str, Any]]:
    """Records of every radiograph under ``root/images``, labelled, with its boxes."""
    root = Path(root)
    files = sorted(p for folder in FOLDERS for p in (root / "images" / folder).glob("*.jpg") if not p.name.startswith("._"))
    if not files:
        raise AdapterError(f"{root}: no radiograph under images/{{{','.join(FOLDERS)}}}/*.jpg (FracAtlas's layout)")
    coco_path = root / COCO_FILE
    if not coco_path.is_file():
        raise AdapterError(f"{root}: no {COCO_FILE}")
    if coco_sha256 and file_digest(coco_path) != coco_sha256:
        raise AdapterError(f"{coco_path}: sha256 {file_digest(coco_path)} is not the published file's {coco_sha256}")
    boxes = read_coco_boxes(coco_path)
    table = _read_table(root / "dataset.csv")
    by_name = {p.name: p for p in files}
    for path in files:
        if path.name not in table.index:
            raise AdapterError(f"{root / 'dataset.csv'}: no row for {path}")
    split = _official_split(root)

    def boxes_of(file_name: str, image_id: str, image: sitk.Image) -> list[Box]:
        out = []
        for index, centre, size in boxes.get(file_name, []):
            box = Box(image_id, "fracture", centre, size)
            if centre_outside(box, image):
                raise AdapterError(f"{coco_path}, annotation {index}: the box centred at {centre} lies outside {by_name[file_name]}")
            out.append(box)
        return out

    def records() -> Iterator[Record]:
        for path in files:
            image_id = pseudonym(path.stem, key, prefix="xr")
            image = grey_pixels(read_image(path))
            label = int(table.loc[path.name, "fractured"])
            found = boxes_of(path.name, image_id, image)
            if label == 0 and found:
                raise AdapterError(f"{coco_path}: {len(found)} box(es) on {path}, which dataset.csv says is not fractured")
            yield Record(
                image_id=image_id,
                patient_id=image_id,
                label=label,
                image=image,
                source_split=split.get(path.name, ""),
                source_checksum=files_digest([path]),
                source=str(path),
                boxes=found,
            )

    return records(), len(files), {"identifiers": {p.stem for p in files}}
