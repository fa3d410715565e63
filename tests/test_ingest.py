"""Tests for casebook.ingest: the MedMNIST adapter on small generated npz files."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from casebook.fileio import read_json
from casebook.ingest import IngestError, ingest, load_medmnist, medmnist_records
from casebook.layout import read_array, read_manifest

SHARED_PNEUMONIA = Path("/work/shared/data/medmnist/pneumoniamnist.npz")
SPLITS = ("train", "val", "test")


@pytest.mark.parametrize(
    "shape, spatial_dims, counts",
    [((28, 28), 2, (5, 3, 4)), ((28, 28, 3), 2, (4, 2, 3)), ((28, 28, 28), 3, (2, 2, 2))],
    ids=["2d-gray", "2d-rgb", "3d"],
)
def test_medmnist_ingest(tmp_path, make_medmnist_npz, shape, spatial_dims, counts) -> None:
    path, arrays = make_medmnist_npz(shape=shape, counts=counts)
    out = tmp_path / "ds"
    manifest = ingest("medmnist", out, class_names=["no", "yes"], modality="test", path=path, spatial_dims=spatial_dims, name="tiny")

    assert len(manifest) == sum(counts)
    assert manifest["source_split"].value_counts().to_dict() == dict(zip(SPLITS, counts))
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    assert set(manifest["source_checksum"]) == {f"md5:{md5}"}
    # every image is its own patient: MedMNIST has no patient ids
    assert (manifest["patient_id"] == manifest["image_id"]).all()
    assert manifest["image_id"].is_unique

    read = read_manifest(out / "manifest.tsv")
    for split in SPLITS:
        part = read[read["source_split"] == split]
        np.testing.assert_array_equal(part["label"].to_numpy(), arrays[f"{split}_labels"].reshape(-1))
        # the order is the source's, and the pixels are unchanged
        for i, row in enumerate(part.itertuples(index=False)):
            assert row.image_id == f"tiny_{split}_{i}"
            array, spacing = read_array(out / row.image)
            np.testing.assert_array_equal(array, arrays[f"{split}_images"][i])
            assert spacing == (1.0,) * spatial_dims
    meta = read_json(out / "dataset.json")
    assert meta["spatial_dims"] == spatial_dims
    assert meta["n_images"] == sum(counts)


def test_medmnist_records_total_and_ids_are_zero_padded(make_medmnist_npz) -> None:
    path, _ = make_medmnist_npz(counts=(12, 3, 4))
    records, total = medmnist_records(path, spatial_dims=2, name="x")
    assert total == 19
    ids = [r.image_id for r in records]
    assert ids[:2] == ["x_train_00", "x_train_01"]
    assert ids[11] == "x_train_11"
    assert ids[12] == "x_val_0"
    assert sorted(ids[:12]) == ids[:12]  # zero padding keeps the source order when sorted


def test_truncated_npz_is_an_ingest_error_naming_the_file(make_medmnist_npz) -> None:
    path, _ = make_medmnist_npz()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError, match=path.name):
        load_medmnist(path)


def test_random_bytes_are_an_ingest_error_naming_the_file(tmp_path) -> None:
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(IngestError, match="noise.npz"):
        load_medmnist(path)


def test_corrupted_member_of_uncompressed_npz_is_an_ingest_error(make_medmnist_npz) -> None:
    path, _ = make_medmnist_npz(compressed=False)
    data = bytearray(path.read_bytes())
    # flip bytes inside the first member's pixel data: the zip CRC check must catch it
    name_len, extra_len = struct.unpack("<HH", data[26:30])
    start = 30 + name_len + extra_len + 200
    data[start : start + 16] = bytes(b ^ 0xFF for b in data[start : start + 16])
    path.write_bytes(bytes(data))
    with pytest.raises(IngestError, match=path.name):
        load_medmnist(path)


def test_corrupted_deflate_stream_is_an_ingest_error(make_medmnist_npz) -> None:
    path, _ = make_medmnist_npz(compressed=True)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[26:30])
    # 0xFF as the first byte of a deflate stream: final block of the reserved type 3
    data[30 + name_len + extra_len] = 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IngestError, match=path.name):
        load_medmnist(path)


def test_a_plain_npy_file_is_an_ingest_error(tmp_path) -> None:
    path = tmp_path / "array.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros((3, 28, 28), dtype=np.uint8))
    with pytest.raises(IngestError, match="array.npz"):
        load_medmnist(path)


def test_missing_key_is_an_ingest_error_naming_the_key(make_medmnist_npz) -> None:
    path, _ = make_medmnist_npz(drop=("val_labels",))
    with pytest.raises(IngestError, match="val_labels") as info:
        load_medmnist(path)
    assert path.name in str(info.value)


def test_images_and_labels_of_different_length_are_refused(tmp_path) -> None:
    arrays = {f"{s}_images": np.zeros((3, 28, 28), np.uint8) for s in SPLITS}
    arrays.update({f"{s}_labels": np.zeros((3, 1), np.uint8) for s in SPLITS})
    arrays["test_labels"] = np.zeros((2, 1), np.uint8)
    path = tmp_path / "mismatch.npz"
    np.savez(path, **arrays)
    with pytest.raises(IngestError, match="test_images and test_labels"):
        load_medmnist(path)


def test_missing_file_is_an_ingest_error(tmp_path) -> None:
    with pytest.raises(IngestError, match="absent.npz"):
        load_medmnist(tmp_path / "absent.npz")


def test_multi_label_data_is_refused_and_leaves_nothing(tmp_path) -> None:
    arrays = {f"{s}_images": np.zeros((2, 28, 28), np.uint8) for s in SPLITS}
    arrays.update({f"{s}_labels": np.zeros((2, 14), np.uint8) for s in SPLITS})
    path = tmp_path / "chest.npz"
    np.savez(path, **arrays)
    out = tmp_path / "ds"
    with pytest.raises(IngestError, match="multi-label"):
        ingest("medmnist", out, class_names=["a", "b"], modality="CXR", path=path, spatial_dims=2, name="chest")
    assert not out.exists()
    assert not (tmp_path / "ds.partial").exists()


def test_labels_outside_the_class_names_are_refused(tmp_path, make_medmnist_npz) -> None:
    path, _ = make_medmnist_npz(n_classes=3)
    with pytest.raises(ValueError, match="label 2"):
        ingest("medmnist", tmp_path / "ds", class_names=["a", "b"], modality="x", path=path, spatial_dims=2, name="t")
    assert not (tmp_path / "ds").exists()


def test_unknown_adapter_and_generator_are_refused(tmp_path) -> None:
    with pytest.raises(IngestError, match="no_such_adapter"):
        ingest("no_such_adapter", tmp_path / "ds", class_names=["a"], modality="x")
    with pytest.raises(IngestError, match="no_such_generator"):
        ingest("synthetic", tmp_path / "ds", class_names=["a"], modality="x", generator="no_such_generator", params={})


@pytest.mark.skipif(not SHARED_PNEUMONIA.is_file(), reason="shared PneumoniaMNIST copy not present")
def test_shared_pneumoniamnist_arrays() -> None:
    # The shared copy is not the published file (its train split was cut, see
    # config/shared_pneumoniamnist.yaml), so only val/test counts are the published ones.
    arrays = load_medmnist(SHARED_PNEUMONIA)
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        n = len(images)
        assert n > 0
        assert images.shape == (n, 28, 28)
        assert images.dtype == np.uint8
        assert labels.shape == (n, 1)
        assert set(np.unique(labels)) == {0, 1}
    assert len(arrays["val_labels"]) == 524
    assert len(arrays["test_labels"]) == 624
