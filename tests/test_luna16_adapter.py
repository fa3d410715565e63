"""The LUNA16 adapter on files in LUNA16's own formats: MetaImage scans named by series
UID in subset folders, the nodule tables in world mm (CSV, the official columns), the
irrelevant findings under the evaluation script's folder. Boxes land on the planted
nodules, the series UIDs never reach an output, and bad tables are refused naming the
file and line. Where ../shared/data holds the LIDC-IDRI slabs and their LUNA16 rows, the
real annotations are checked to land on nodule tissue in the real CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from casebook.adapters.images import AdapterError
from casebook.boxes import BOXES_FILE, read_boxes
from casebook.ingest import ingest

KEY = b"k" * 32
UIDS = [
    "1.3.6.1.4.1.14519.5.2.1.6279.6001.100000000000000000000000000001",
    "1.3.6.1.4.1.14519.5.2.1.6279.6001.100000000000000000000000000002",
]
ORIGIN, SPACING = (-180.0, -170.0, -300.0), (1.4, 1.4, 2.5)
SHARED = Path(__file__).resolve().parents[2] / "shared/data"


def _scan(path: Path, nodules: list[tuple[tuple[float, float, float], float]]) -> None:
    """A MetaImage CT (int16 HU: lung-like -850 with 40 HU nodules at the given world mm)."""
    shape = (24, 64, 64)
    image = sitk.GetImageFromArray(np.full(shape, -850, np.int16))
    image.SetOrigin(ORIGIN)
    image.SetSpacing(SPACING)
    array = sitk.GetArrayFromImage(image)
    z, y, x = np.indices(shape)
    for centre, diameter in nodules:
        index = np.array(image.TransformPhysicalPointToContinuousIndex(centre))
        mm = np.sqrt(((x - index[0]) * SPACING[0]) ** 2 + ((y - index[1]) * SPACING[1]) ** 2 + ((z - index[2]) * SPACING[2]) ** 2)
        array[mm <= diameter / 2] = 40
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(out, str(path))  # writes the .mhd header and its .raw beside it


NODULES = {UIDS[0]: [((-140.0, -120.0, -270.0), 8.0), ((-120.0, -110.0, -260.0), 5.0)], UIDS[1]: []}


def _luna16(root: Path) -> Path:
    for subset, uid in enumerate(UIDS):
        _scan(root / f"subset{subset}" / f"{uid}.mhd", NODULES[uid])
    rows = [(uid, *c, d) for uid in UIDS for c, d in NODULES[uid]]
    pd.DataFrame(rows, columns=["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]).to_csv(root / "annotations.csv", index=False)
    excluded = root / "evaluationScript/annotations/annotations_excluded.csv"
    excluded.parent.mkdir(parents=True)
    excluded.write_text(f"seriesuid,coordX,coordY,coordZ,diameter_mm\n{UIDS[1]},-150.0,-140.0,-280.0,-1\n")
    return root


def test_scans_and_tables_become_images_with_world_boxes_and_no_uid(tmp_path):
    root = _luna16(tmp_path / "luna16")
    out = tmp_path / "data"
    manifest = ingest("luna16", out, class_names=["background", "nodule"], modality="CT", root=root, key=KEY, name="luna16")
    assert len(manifest) == 2 and sorted(manifest["source_split"]) == ["subset0", "subset1"]
    boxes = read_boxes(out / BOXES_FILE)
    assert [(b.centre, b.size, b.excluded) for b in boxes if not b.excluded] == [(c, (d, d, d), False) for c, d in NODULES[UIDS[0]]]
    irrelevant = [b for b in boxes if b.excluded]
    assert len(irrelevant) == 1 and irrelevant[0].size == (10.0, 10.0, 10.0)  # no diameter (-1): the default
    by_id = manifest.set_index("image_id")
    for box in boxes:
        image = sitk.ReadImage(str(out / by_id.loc[box.image_id, "image"]))
        assert image.GetOrigin() == pytest.approx(ORIGIN) and image.GetSpacing() == pytest.approx(SPACING)
        if not box.excluded:
            assert image[image.TransformPhysicalPointToIndex(box.centre)] == 40  # on its nodule
    for name in ("manifest.tsv", "dataset.json", BOXES_FILE):
        text = (out / name).read_text()
        assert not any(uid in text or uid[-12:] in text for uid in UIDS), name


def test_a_finding_outside_its_scan_or_a_bad_row_is_refused_naming_the_line(tmp_path):
    root = _luna16(tmp_path / "luna16")
    table = root / "annotations.csv"
    rows = table.read_text().splitlines()
    table.write_text("\n".join(rows + [f"{UIDS[1]},0.0,0.0,500.0,6.0"]) + "\n")
    with pytest.raises(AdapterError, match=r"annotations\.csv, line 4: the finding at \(0\.0, 0\.0, 500\.0\) mm lies outside its scan"):
        ingest("luna16", tmp_path / "data", class_names=["background", "nodule"], modality="CT", root=root, key=KEY, name="luna16")
    assert not (tmp_path / "data").exists()
    table.write_text("\n".join(rows[:2] + [f"{UIDS[0]},abc,0.0,0.0,6.0"]) + "\n")
    with pytest.raises(AdapterError, match=r"annotations\.csv, line 3: a coordinate or the diameter is not a number"):
        ingest("luna16", tmp_path / "data", class_names=["background", "nodule"], modality="CT", root=root, key=KEY, name="luna16")
    table.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2.3,0,0,0,5\n")
    with pytest.raises(AdapterError, match="none of its series has a scan"):
        ingest("luna16", tmp_path / "data", class_names=["background", "nodule"], modality="CT", root=root, key=KEY, name="luna16")


@pytest.mark.skipif(not (SHARED / "lidc_idri/small").is_dir(), reason="needs ../shared/data/lidc_idri and luna16")
def test_real_luna16_annotations_land_on_nodules_in_the_real_lidc_ct(tmp_path):
    root = tmp_path / "luna16"
    for series in sorted((SHARED / "lidc_idri/small").glob("*/*/*")):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
        (root / "subset0").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(reader.Execute(), str(root / "subset0" / f"{series.name}.mhd"))
    rows = pd.read_csv(SHARED / "luna16/annotations_rows_LIDC-IDRI-0001_0002_0003.csv")
    rows.to_csv(root / "annotations.csv", index=False)
    # the slabs are 11 to 16 slices of whole scans: two of LIDC-IDRI-0003's nodules lie beyond
    with pytest.raises(AdapterError, match="lies outside its scan"):
        ingest("luna16", tmp_path / "refused", class_names=["background", "nodule"], modality="CT", root=root, key=KEY, name="luna16")
    rows[(rows["coordZ"] < -180) | (rows["coordZ"] > -150)].to_csv(root / "annotations.csv", index=False)  # the two inside
    out = tmp_path / "data"
    manifest = ingest("luna16", out, class_names=["background", "nodule"], modality="CT", root=root, key=KEY, name="luna16").set_index(
        "image_id"
    )
    boxes = read_boxes(out / BOXES_FILE)
    assert len(boxes) == 2
    for box in boxes:  # the annotated centre is soft tissue, not lung air
        image = sitk.ReadImage(str(out / manifest.loc[box.image_id, "image"]))
        assert image[image.TransformPhysicalPointToIndex(box.centre)] > -300, box
