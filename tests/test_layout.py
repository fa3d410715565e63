"""Tests for casebook.layout: the canonical on-disk dataset layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from casebook.fileio import read_json
from casebook.layout import MANIFEST_COLUMNS, ManifestError, Record, read_array, read_manifest, write_dataset


def _records_2d(n: int = 4) -> list[Record]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        image = rng.integers(-500, 1500, (12 + i, 10), dtype=np.int16)  # (y, x), shapes differ per image
        mask = None
        if i % 2 == 0:
            mask = np.zeros(image.shape, dtype=bool)
            mask[2:5, 3:7] = True
        records.append(
            Record(
                image_id=f"img{i:02d}",
                patient_id=f"pat{i // 2:03d}",  # two images per patient, ids with leading zeros
                label=i % 2,
                image=image,
                spacing=(0.5, 0.8),
                mask=mask,
                source_split=("train", "val", "test", "")[i % 4],
                source_checksum=f"md5:{i:032x}",
            )
        )
    return records


def test_write_dataset_round_trip_2d(tmp_path: Path) -> None:
    records = _records_2d()
    out = tmp_path / "ds"
    manifest = write_dataset(records, out, class_names=["normal", "lesion"], modality="CT", description="tiny")

    assert list(manifest.columns) == MANIFEST_COLUMNS
    on_disk = pd.read_csv(out / "manifest.tsv", sep="\t", keep_default_na=False, dtype=str)
    assert list(on_disk.columns) == MANIFEST_COLUMNS
    read = read_manifest(out / "manifest.tsv")
    assert read["image_id"].tolist() == [r.image_id for r in records]
    assert read["patient_id"].tolist() == [r.patient_id for r in records]  # "pat000" kept as text
    assert read["label"].tolist() == [r.label for r in records]
    assert read["source_split"].tolist() == [r.source_split for r in records]
    assert read["source_checksum"].tolist() == [r.source_checksum for r in records]

    for rec, row in zip(records, read.itertuples(index=False)):
        array, spacing = read_array(out / row.image)
        np.testing.assert_array_equal(array, rec.image)
        assert array.dtype == rec.image.dtype
        assert spacing == pytest.approx(rec.spacing)
        if rec.mask is None:
            assert row.mask == ""
            assert not (out / "masks" / f"{rec.image_id}.nii.gz").exists()
        else:
            mask, mask_spacing = read_array(out / row.mask)
            np.testing.assert_array_equal(mask, rec.mask.astype(np.uint8))
            assert mask_spacing == pytest.approx(rec.spacing)

    meta = read_json(out / "dataset.json")
    assert meta["class_names"] == ["normal", "lesion"]
    assert meta["spatial_dims"] == 2
    assert meta["modality"] == "CT"
    assert meta["n_images"] == 4
    assert meta["n_patients"] == 2
    assert meta["label_counts"] == {"normal": 2, "lesion": 2}
    assert not out.with_name("ds.partial").exists()


def test_write_dataset_round_trip_3d_keeps_axis_order_and_spacing(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=(4, 5, 6)).astype(np.float32)  # (z, y, x), all different
    mask = np.zeros((4, 5, 6), dtype=np.uint8)
    mask[1, 2, 3] = 1
    rec = Record("vol", "p1", 1, image, spacing=(0.7, 0.8, 2.5), mask=mask)
    out = tmp_path / "vol_ds"
    write_dataset([rec], out, class_names=["benign", "malignant"], modality="CT")

    array, spacing = read_array(out / "images" / "vol.nii.gz")
    assert array.shape == (4, 5, 6)
    np.testing.assert_array_equal(array, image)
    assert spacing == pytest.approx((0.7, 0.8, 2.5))
    read_mask, _ = read_array(out / "masks" / "vol.nii.gz")
    assert read_mask.shape == (4, 5, 6)
    assert read_mask[1, 2, 3] == 1 and read_mask.sum() == 1
    meta = read_json(out / "dataset.json")
    assert meta["spatial_dims"] == 3
    assert meta["label_counts"] == {"malignant": 1}


def test_write_dataset_rgb_image_is_a_vector_image(tmp_path: Path) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    out = tmp_path / "rgb"
    write_dataset([Record("c", "c", 0, rgb, spacing=(1.0, 1.0))], out, class_names=["a"], modality="photo")
    array, spacing = read_array(out / "images" / "c.nii.gz")
    assert array.shape == (7, 9, 3)
    np.testing.assert_array_equal(array, rgb)
    assert spacing == (1.0, 1.0)


def test_spacing_of_wrong_length_is_refused(tmp_path: Path) -> None:
    rec = Record("a", "a", 0, np.zeros((4, 4, 4), dtype=np.float32), spacing=(1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        write_dataset([rec], tmp_path / "bad", class_names=["x"], modality="CT")
    assert not (tmp_path / "bad").exists()
    assert not (tmp_path / "bad.partial").exists()


def test_failure_mid_iteration_leaves_no_output_and_no_partial(tmp_path: Path) -> None:
    def records():
        yield from _records_2d(2)
        raise RuntimeError("source went away")

    out = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="source went away"):
        write_dataset(records(), out, class_names=["a", "b"], modality="CT")
    assert not out.exists()
    assert not (tmp_path / "ds.partial").exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_previous_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    write_dataset(_records_2d(2), out, class_names=["a", "b"], modality="CT")
    before = (out / "manifest.tsv").read_text()

    def records():
        yield from _records_2d(3)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_dataset(records(), out, class_names=["a", "b"], modality="CT")
    assert (out / "manifest.tsv").read_text() == before
    assert len(read_manifest(out / "manifest.tsv")) == 2
    assert not (tmp_path / "ds.partial").exists()


def test_stale_partial_directory_is_replaced(tmp_path: Path) -> None:
    stale = tmp_path / "ds.partial"
    (stale / "images").mkdir(parents=True)
    (stale / "images" / "old.nii.gz").write_text("junk")
    write_dataset(_records_2d(2), tmp_path / "ds", class_names=["a", "b"], modality="CT")
    assert not stale.exists()
    assert not (tmp_path / "ds" / "images" / "old.nii.gz").exists()


def test_label_outside_class_names_is_refused(tmp_path: Path) -> None:
    rec = Record("a", "a", 2, np.zeros((4, 4), dtype=np.uint8), spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="label 2"):
        write_dataset([rec], tmp_path / "ds", class_names=["a", "b"], modality="CT")
    assert not (tmp_path / "ds").exists()


def test_duplicate_image_ids_are_refused(tmp_path: Path) -> None:
    image = np.zeros((4, 4), dtype=np.uint8)
    records = [Record("same", "p1", 0, image, (1.0, 1.0)), Record("same", "p2", 1, image, (1.0, 1.0))]
    with pytest.raises(ValueError, match="same"):
        write_dataset(records, tmp_path / "ds", class_names=["a", "b"], modality="CT")
    assert not (tmp_path / "ds").exists()
    assert not (tmp_path / "ds.partial").exists()


# --------------------------------------------------------------------------------------
# read_manifest
# --------------------------------------------------------------------------------------


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    write_dataset(_records_2d(4), out, class_names=["a", "b"], modality="CT")
    return out


def test_read_manifest_refuses_a_missing_image_file(dataset: Path) -> None:
    (dataset / "images" / "img02.nii.gz").unlink()
    with pytest.raises(ManifestError, match="img02.nii.gz"):
        read_manifest(dataset / "manifest.tsv")
    # without the file check it still reads
    assert len(read_manifest(dataset / "manifest.tsv", check_files=False)) == 4


def test_read_manifest_refuses_a_missing_mask_file(dataset: Path) -> None:
    (dataset / "masks" / "img00.nii.gz").unlink()
    with pytest.raises(ManifestError, match=r"masks.img00\.nii\.gz"):
        read_manifest(dataset / "manifest.tsv")


@pytest.mark.parametrize("column", ["patient_id", "label", "mask"])
def test_read_manifest_refuses_missing_columns(dataset: Path, column: str) -> None:
    path = dataset / "manifest.tsv"
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    frame.drop(columns=[column]).to_csv(path, sep="\t", index=False)
    with pytest.raises(ManifestError, match=column):
        read_manifest(path)


def test_read_manifest_refuses_duplicate_ids(dataset: Path) -> None:
    path = dataset / "manifest.tsv"
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    frame.loc[3, "image_id"] = "img01"
    frame.to_csv(path, sep="\t", index=False)
    with pytest.raises(ManifestError, match="img01"):
        read_manifest(path)


def test_read_manifest_refuses_a_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest.tsv"):
        read_manifest(tmp_path / "manifest.tsv")


def test_read_manifest_keeps_numeric_looking_ids_as_text(tmp_path: Path) -> None:
    image = np.zeros((4, 4), dtype=np.uint8)
    out = tmp_path / "ds"
    write_dataset([Record("007", "0042", 1, image, (1.0, 1.0))], out, class_names=["a", "b"], modality="CT")
    read = read_manifest(out / "manifest.tsv")
    assert read.loc[0, "image_id"] == "007"
    assert read.loc[0, "patient_id"] == "0042"
    assert read.loc[0, "mask"] == ""
    assert read["label"].dtype.kind == "i"


def test_record_attributes_become_manifest_columns(tmp_path: Path) -> None:
    records = [
        Record(image_id=f"i{k}", patient_id=f"p{k}", label=k % 2, image=np.zeros((4, 4), np.float32), spacing=(1.0, 1.0), attributes=attrs)
        for k, attrs in enumerate([{"site": "A", "sex": "F"}, {"site": "B"}])
    ]
    manifest = write_dataset(records, tmp_path / "ds", class_names=["a", "b"], modality="CXR")
    assert list(manifest.columns) == MANIFEST_COLUMNS + ["sex", "site"]
    on_disk = read_manifest(tmp_path / "ds" / "manifest.tsv")
    assert list(on_disk["site"]) == ["A", "B"] and list(on_disk["sex"]) == ["F", ""]
    clash = Record(image_id="x", patient_id="p", label=0, image=np.zeros((4, 4), np.float32), spacing=(1.0, 1.0), attributes={"label": "1"})
    with pytest.raises(ValueError, match=r"x: attribute name\(s\) \['label'\] clash"):
        write_dataset([clash], tmp_path / "bad", class_names=["a", "b"], modality="CXR")
