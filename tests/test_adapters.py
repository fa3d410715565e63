"""Adapters for real data formats: Decathlon folders, case folders (BraTS), image folders,
and the pseudonymization they all apply."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from realformat import make_msd_task

from casebook.adapters.case_folders import case_folder_records
from casebook.adapters.image_folder import image_folder_records
from casebook.adapters.images import AdapterError
from casebook.adapters.msd import msd_records
from casebook.deid import DeidError, find_leaks, load_or_create_key, pseudonym
from casebook.ingest import ingest
from casebook.layout import read_manifest

KEY = b"0123456789abcdef0123456789abcdef"
BRATS = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats2013"


# ---- pseudonyms -------------------------------------------------------------------


def test_key_is_created_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "deid.key"
    key = load_or_create_key(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert load_or_create_key(path) == key and len(key) == 64


def test_short_key_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "deid.key"
    path.write_text("short\n")
    with pytest.raises(DeidError, match="deid.key"):
        load_or_create_key(path)


def test_pseudonyms_are_stable_keyed_and_distinct() -> None:
    assert pseudonym("MRN-1", KEY) == pseudonym("MRN-1", KEY)
    assert pseudonym("MRN-1", KEY) != pseudonym("MRN-2", KEY)
    assert pseudonym("MRN-1", KEY) != pseudonym("MRN-1", b"another key of thirty-two bytes!")
    assert "MRN" not in pseudonym("MRN-1", KEY) and pseudonym("x", KEY).startswith("sub-")


def test_find_leaks_names_file_and_value(tmp_path: Path) -> None:
    (tmp_path / "a.tsv").write_text("id\tDoe^John\n")
    (tmp_path / "b.tsv").write_text("clean\n")
    hits = find_leaks([tmp_path / "a.tsv", tmp_path / "b.tsv"], {"Doe^John", "X"})
    assert hits == [(str(tmp_path / "a.tsv"), "Doe^John")]


# ---- Decathlon ----------------------------------------------------------------------


def test_msd_task_ingests_multichannel_images_with_geometry(tmp_path: Path) -> None:
    task = make_msd_task(tmp_path / "src", n_cases=3, channels=("FLAIR", "T1w"))
    out = tmp_path / "data"
    manifest = ingest("msd", out, class_names=["background", "rim", "core"], modality="MRI", root=tmp_path / "src", key=KEY, name="toy")
    assert len(manifest) == 3 and manifest["patient_id"].str.startswith("sub-").all()
    assert not manifest["image_id"].str.contains("toy_").any()  # source case names do not survive
    image = sitk.ReadImage(str(out / manifest["image"][0]))
    assert image.GetNumberOfComponentsPerPixel() == 2 and image.GetSize() == (16, 16, 8)
    assert image.GetSpacing() == (1.0, 1.0, 2.0) and image.GetOrigin() == (-8.0, -8.0, 10.0)
    source = sitk.GetArrayFromImage(sitk.ReadImage(str(task / "imagesTr" / "toy_000.nii.gz")))  # (c, z, y, x)
    ours = sitk.GetArrayFromImage(image)  # (z, y, x, c)
    np.testing.assert_array_equal(np.moveaxis(ours, -1, 0), source)
    mask = sitk.ReadImage(str(out / manifest["mask"][0]))
    assert mask.GetSpacing() == image.GetSpacing() and set(np.unique(sitk.GetArrayFromImage(mask))) == {0, 1, 2}
    description = json.loads((out / "dataset.json").read_text())
    assert description["channel_names"] == ["FLAIR", "T1w"]
    assert description["labels"] == {"0": "background", "1": "rim", "2": "core"}
    assert read_manifest(out / "manifest.tsv")["label"].isna().all()


def test_msd_label_on_another_grid_is_refused_naming_the_case(tmp_path: Path) -> None:
    task = make_msd_task(tmp_path / "src", n_cases=2)
    label = sitk.ReadImage(str(task / "labelsTr" / "toy_001.nii.gz"))
    label.SetSpacing((1.0, 1.0, 3.0))
    sitk.WriteImage(label, str(task / "labelsTr" / "toy_001.nii.gz"))
    with pytest.raises(AdapterError, match=r"case toy_001: label toy_001.nii.gz has spacing \(1, 1, 3\)"):
        ingest("msd", tmp_path / "data", class_names=["b", "r", "c"], modality="MRI", root=task, key=KEY, name="toy")
    assert not (tmp_path / "data").exists() and not (tmp_path / "data.partial").exists()


def test_msd_undeclared_label_value_is_refused(tmp_path: Path) -> None:
    task = make_msd_task(tmp_path / "src", n_cases=1)
    description = json.loads((task / "dataset.json").read_text())
    description["labels"] = {"0": "background", "1": "rim"}
    (task / "dataset.json").write_text(json.dumps(description))
    records, _, _ = msd_records(task, key=KEY, name="toy")
    with pytest.raises(AdapterError, match=r"case toy_000: label values \[2\] are not declared"):
        list(records)


def test_msd_folder_without_dataset_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match="dataset.json"):
        msd_records(tmp_path / "empty", key=KEY, name="toy")


# ---- case folders (BraTS) -------------------------------------------------------------


def _write(array: np.ndarray, path: Path, spacing=(1.0, 1.0, 1.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def _brats_like(root: Path, cases: dict[str, str]) -> None:
    rng = np.random.default_rng(0)
    for case, split in cases.items():
        folder = root / split / case
        label = np.zeros((6, 10, 10), np.uint8)
        label[2:4, 3:6, 3:6] = 4
        _write(rng.normal(size=(6, 10, 10)).astype(np.float32), folder / f"{case}_flair.nii.gz")
        _write(rng.normal(size=(6, 10, 10)).astype(np.float32), folder / f"{case}_t1ce.nii.gz")
        _write(label, folder / f"{case}_seg.nii.gz")
        _write(np.where(rng.random((6, 10, 10)) > 0.2, 3.0, -1.0).astype(np.float32), folder / f"{case}_brain.nii.gz")


PARAMS = {
    "channels": {"FLAIR": "{case}_flair.nii.gz", "T1c": "{case}_t1ce.nii.gz"},
    "label": "{case}_seg.nii.gz",
    "mask": "{case}_brain.nii.gz",
    "labels": {0: "background", 1: "necrosis", 2: "edema", 4: "enhancing"},
    "split_from_parent": True,
}


def test_case_folders_keep_channels_splits_and_brain_mask(tmp_path: Path) -> None:
    _brats_like(tmp_path / "src", {"Pat_A": "train", "Pat_B": "validation", "Pat_C": "test"})
    out = tmp_path / "data"
    manifest = ingest(
        "case_folders", out, class_names=["bg", "n", "e", "x", "et"], modality="MRI", root=tmp_path / "src", key=KEY, name="b", **PARAMS
    )
    assert sorted(manifest["source_split"]) == ["test", "train", "val"]
    assert not manifest.to_csv().count("Pat_")
    roi = sitk.GetArrayFromImage(sitk.ReadImage(str(out / manifest["roi"][0])))
    assert set(np.unique(roi)) == {0, 1}  # "foreground = value > min", whatever the values
    image = sitk.ReadImage(str(out / manifest["image"][0]))
    assert image.GetNumberOfComponentsPerPixel() == 2


def test_case_folder_channel_on_another_grid_is_refused_naming_the_case(tmp_path: Path) -> None:
    _brats_like(tmp_path / "src", {"Pat_A": "train"})
    _write(np.zeros((6, 10, 10), np.float32), tmp_path / "src/train/Pat_A/Pat_A_t1ce.nii.gz", spacing=(1.0, 1.0, 2.0))
    records, _, _ = case_folder_records(tmp_path / "src", key=KEY, name="b", **PARAMS)
    with pytest.raises(AdapterError, match="case Pat_A: channel T1c has spacing"):
        list(records)


def test_case_folders_none_found_names_the_pattern(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(AdapterError, match="_flair.nii.gz"):
        case_folder_records(tmp_path / "src", key=KEY, name="b", **PARAMS)


@pytest.mark.skipif(not BRATS.is_dir(), reason="needs ../shared/data/brats2013")
def test_the_six_real_brats_cases_ingest(tmp_path: Path) -> None:
    import yaml

    registry = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/datasets.yaml").read_text())
    params = registry["brats2015_deepmedic_sample"]["adapter_params"]
    out = tmp_path / "data"
    manifest = ingest(
        "case_folders", out, class_names=["bg", "n", "e", "ne", "et"], modality="MRI", root=BRATS, key=KEY, name="brats", **params
    )
    assert len(manifest) == 6 and sorted(manifest["source_split"].value_counts().tolist()) == [2, 2, 2]
    image = sitk.ReadImage(str(out / manifest["image"][0]))
    assert image.GetSize() == (240, 240, 155) and image.GetNumberOfComponentsPerPixel() == 2
    labels = set()
    for rel in manifest["mask"]:
        labels |= set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(out / rel)))).tolist())
    assert labels <= {0, 1, 2, 3, 4} and 4 in labels


# ---- image folders ----------------------------------------------------------------------


def test_image_folder_takes_subjects_from_paths_and_labels_from_a_table(tmp_path: Path) -> None:
    for subject in ("OAS1", "OAS2"):
        for session in ("ses-1", "ses-2"):
            _write(np.ones((4, 5, 6), np.float32), tmp_path / f"src/sub-{subject}/{session}/anat/sub-{subject}_{session}_T1w.nii.gz")
    (tmp_path / "labels.csv").write_text("patient_id,label\nOAS1,CN\nOAS2,AD\n")
    manifest = ingest(
        "image_folder",
        tmp_path / "data",
        class_names=["CN", "AD"],
        modality="MRI",
        root=tmp_path / "src",
        key=KEY,
        name="oasis",
        pattern="**/anat/*_T1w.nii.gz",
        patient_pattern="sub-([A-Za-z0-9]+)",
        labels_csv=str(tmp_path / "labels.csv"),
    )
    assert len(manifest) == 4 and manifest["patient_id"].nunique() == 2
    assert manifest.groupby("patient_id")["label"].nunique().eq(1).all() and set(manifest["label"]) == {0, 1}
    assert not (tmp_path / "data/manifest.tsv").read_text().count("OAS")


def test_image_folder_subject_missing_from_the_table_is_named(tmp_path: Path) -> None:
    _write(np.ones((4, 5, 6), np.float32), tmp_path / "src/case9.nii.gz")
    (tmp_path / "labels.csv").write_text("patient_id,label\ncase1,0\n")
    records, _, _ = image_folder_records(
        tmp_path / "src", key=KEY, name="x", class_names=["a", "b"], labels_csv=str(tmp_path / "labels.csv")
    )
    with pytest.raises(AdapterError, match="case9.nii.gz: subject has no row"):
        list(records)


def test_find_leaks_ignores_digits_inside_checksums_and_pseudonyms(tmp_path: Path) -> None:
    (tmp_path / "m.tsv").write_text("sub-1234abcd00998877\tsha256:00ff123456aa\n")
    assert find_leaks([tmp_path / "m.tsv"], {"123456", "998877"}) == []
    (tmp_path / "m.tsv").write_text("x\t123456\n")
    assert find_leaks([tmp_path / "m.tsv"], {"123456"}) == [(str(tmp_path / "m.tsv"), "123456")]


def test_cases_of_one_patient_share_a_pseudonym(tmp_path: Path) -> None:
    _brats_like(tmp_path / "src", {"brats_pat0001_1": "train", "brats_pat0001_2": "train", "brats_pat0002_1": "train"})
    params = {**PARAMS, "patient_pattern": "(pat[0-9]+)"}
    manifest = ingest(
        "case_folders",
        tmp_path / "data",
        class_names=["bg", "n", "e", "x", "et"],
        modality="MRI",
        root=tmp_path / "src",
        key=KEY,
        name="b",
        **params,
    )
    assert manifest["image_id"].nunique() == 3 and manifest["patient_id"].nunique() == 2


def test_msd_folder_of_another_task_is_refused(tmp_path: Path) -> None:
    make_msd_task(tmp_path / "src", name="Task04_Hippocampus", n_cases=1)
    with pytest.raises(AdapterError, match="expected the Decathlon task folder Task09_Spleen, found Task04_Hippocampus"):
        msd_records(tmp_path / "src", key=KEY, name="spleen", task="Task09_Spleen")
