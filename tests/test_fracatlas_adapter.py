"""The FracAtlas adapter on files in FracAtlas's own formats: colour JPEG radiographs in
Fractured / Non_fractured folders, dataset.csv, the COCO boxes and the official split.
Boxes land where the COCO file puts them (in pixels), file names never reach an output,
and bad annotations are refused naming the file and the annotation, leaving nothing.
Where ../shared/data holds the FracAtlas sample, its COCO boxes are checked against its
PASCAL VOC and YOLO boxes and the registry's pinned checksum."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml
from realformat import make_fracatlas

from casebook.adapters.images import AdapterError
from casebook.boxes import BOXES_FILE, read_boxes
from casebook.ingest import ingest

KEY = b"f" * 32
CLASSES = ["no fracture", "fracture"]
SHARED = Path(__file__).resolve().parents[2] / "shared/data"
ROOT = Path(__file__).resolve().parents[1]
COCO = "Annotations/COCO JSON/COCO_fracture_masks.json"


def _ingest(root: Path, out: Path, **params):
    return ingest("fracatlas", out, class_names=CLASSES, modality="XR", root=root, key=KEY, name="fracatlas", **params)


def test_radiographs_become_grey_images_with_pixel_boxes_labels_and_the_official_split(tmp_path):
    root = tmp_path / "FracAtlas"
    coco = make_fracatlas(root, n_images=8, seed=5)
    manifest = _ingest(root, tmp_path / "data")
    assert len(manifest) == 8 and manifest["label"].sum() == len(coco) > 0
    assert set(manifest.loc[manifest["label"] == 1, "source_split"]) == {"train", "test"}
    assert set(manifest.loc[manifest["label"] == 0, "source_split"].fillna("")) == {""}
    boxes = read_boxes(tmp_path / "data" / BOXES_FILE)
    assert len(boxes) == sum(len(v) for v in coco.values())
    expected = sorted((x + w / 2 - 0.5, y + h / 2 - 0.5, w, h) for v in coco.values() for x, y, w, h in v)
    assert np.allclose(sorted((*b.centre, *b.size) for b in boxes), expected)
    by_id = manifest.set_index("image_id")
    for box in boxes:
        image = sitk.ReadImage(str(tmp_path / "data" / by_id.loc[box.image_id, "image"]))
        assert image.GetNumberOfComponentsPerPixel() == 1 and image.GetSpacing() == (1.0, 1.0)
    for name in ("manifest.tsv", "dataset.json", BOXES_FILE):
        text = (tmp_path / "data" / name).read_text()
        assert "IMG000" not in text, name


def _edit_coco(root: Path, edit) -> None:
    path = root / COCO
    coco = json.loads(path.read_text())
    edit(coco)
    path.write_text(json.dumps(coco))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["annotations"][0].update(image_id=999), r"annotation 0 \(id 0\): image_id 999 is not among the file's images"),
        (lambda c: c["annotations"][0].update(bbox=[5000.0, 10.0, 8.0, 8.0]), r"annotation 0: the box centred at .* lies outside"),
        (lambda c: c["annotations"][0].update(bbox=[1.0, 2.0, 0.0, 4.0]), r"annotation 0 \(id 0\): the box has no extent"),
        (lambda c: c["annotations"][0].update(bbox="wide"), r"annotation 0 \(id 0\): bbox must be four numbers"),
        (lambda c: c.pop("images"), r"COCO_fracture_masks\.json: not a COCO annotation file"),
    ],
    ids=["missing image", "outside", "no extent", "malformed box", "no images"],
)
def test_a_bad_annotation_is_refused_naming_the_file_and_annotation_leaving_nothing(tmp_path, edit, message):
    root = tmp_path / "FracAtlas"
    make_fracatlas(root, n_images=6, seed=5)
    _edit_coco(root, edit)
    with pytest.raises(AdapterError, match=message):
        _ingest(root, tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_a_changed_annotation_file_or_a_box_on_a_normal_image_is_refused(tmp_path):
    root = tmp_path / "FracAtlas"
    coco = make_fracatlas(root, n_images=6, seed=5)
    with pytest.raises(AdapterError, match="is not the published file's"):
        _ingest(root, tmp_path / "data", coco_sha256="0" * 64)
    table = pd.read_csv(root / "dataset.csv", dtype=str)
    table.loc[table["image_id"] == sorted(coco)[0], "fractured"] = "0"
    table.to_csv(root / "dataset.csv", index=False)
    with pytest.raises(AdapterError, match=r"box\(es\) on .*which dataset.csv says is not fractured"):
        _ingest(root, tmp_path / "data")
    assert not (tmp_path / "data").exists()


@pytest.mark.skipif(not (SHARED / "fracatlas/images").is_dir(), reason="needs ../shared/data/fracatlas")
def test_the_real_fracatlas_sample_matches_its_voc_and_yolo_boxes_and_the_pinned_checksum(tmp_path):
    import xml.etree.ElementTree as ET

    registry = yaml.safe_load((ROOT / "config/datasets.yaml").read_text())["fracatlas"]
    manifest = _ingest(SHARED / "fracatlas", tmp_path / "data", **registry["adapter_params"]).set_index("image_id")
    assert len(manifest) == 6 and manifest["label"].sum() == 4
    boxes = read_boxes(tmp_path / "data" / BOXES_FILE)
    voc = {}
    for path in sorted((SHARED / "fracatlas/Annotations/PASCAL VOC").glob("*.xml")):
        tree = ET.parse(path)
        size = [float(tree.find(f"size/{k}").text) for k in ("width", "height")]
        for obj in tree.iter("bndbox"):
            lo = np.array([float(obj.find(k).text) for k in ("xmin", "ymin")])
            hi = np.array([float(obj.find(k).text) for k in ("xmax", "ymax")])
            yolo = np.array((SHARED / f"fracatlas/Annotations/YOLO/{path.stem}.txt").read_text().split()[1:3], float) * size
            voc.setdefault(path.stem, []).append(((lo + hi) / 2, hi - lo, yolo))
    assert len(boxes) == sum(len(v) for v in voc.values()) == 4
    for box in boxes:
        image = sitk.ReadImage(str(tmp_path / "data" / manifest.loc[box.image_id, "image"]))
        assert image.GetNumberOfComponentsPerPixel() == 1 and image.GetSpacing() == (1.0, 1.0)
        # the same fracture in VOC's integer corners and YOLO's centre, within a pixel or two
        matches = [(c, s, y) for v in voc.values() for c, s, y in v if np.allclose(c, box.centre, atol=1.5)]
        assert len(matches) == 1 and np.allclose(matches[0][1], box.size, atol=2.0) and np.allclose(matches[0][2], box.centre, atol=2.0)
