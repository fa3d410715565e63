"""Tests for casebook.registry and the shipped registry config/datasets.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from casebook.download import ChecksumError, fetch
from casebook.fileio import file_digest
from casebook.registry import SCHEMA_PATH, RegistryError, load_registry, resolve

ROOT = Path(__file__).resolve().parents[1]

REGISTRY = ROOT / "config" / "datasets.yaml"
SHARED = Path("/work/shared/data/medmnist")
ZENODO = "https://zenodo.org/records/10519652/files/"


@pytest.fixture(scope="module")
def registry() -> dict:
    return load_registry(REGISTRY)


def edited_copy(tmp_path: Path, edit) -> Path:
    """Write a copy of the shipped registry with ``edit(document)`` applied."""
    document = yaml.safe_load(REGISTRY.read_text())
    edit(document)
    path = tmp_path / "datasets.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------
# The shipped registry and schema
# --------------------------------------------------------------------------------------


def test_shipped_registry_validates(registry: dict) -> None:
    assert {"pneumoniamnist", "adrenalmnist3d", "synthetic_cxr", "synthetic_nodule_ct"} <= set(registry)
    for name, entry in registry.items():
        assert entry["access"] in {"open", "registration", "embedded"}, name
        if entry["access"] == "open" and "files" in entry:
            assert all(isinstance(size, int) for size in entry["files"]), name
        if entry["access"] == "registration":
            assert entry["obtain"] and "file" not in entry and "files" not in entry, name


# md5s as in monai/apps/datasets.py (DecathlonDataset), MONAI 1.6.1
MSD_MD5 = {
    "Task01_BrainTumour": "240a19d752f0d9e9101544901065d872",
    "Task02_Heart": "06ee59366e1e5124267b774dbd654057",
    "Task03_Liver": "a90ec6c4aa7f6a3d087205e23d4e6397",
    "Task04_Hippocampus": "9d24dba78a72977dbd1d2e110310f31b",
    "Task05_Prostate": "35138f08b1efaef89d7424d2bcc928db",
    "Task06_Lung": "8afd997733c7fc0432f71255ba4e52dc",
    "Task07_Pancreas": "4f7080cfca169fa8066d17ce6eb061e4",
    "Task08_HepaticVessel": "641d79e80ec66453921d997fbf12a29c",
    "Task09_Spleen": "410d4a301da4e5b2f6f86ec3ddba524e",
    "Task10_Colon": "bad7a188931dc2f6acf72b08eb6202d0",
}


def test_every_decathlon_task_is_registered_as_monai_downloads_it(registry: dict) -> None:
    msd = {name: resolve(registry, name) for name, e in registry.items() if e["adapter"] == "msd"}
    assert len(msd) == 10
    by_task = {entry["filename"].removesuffix(".tar"): entry for entry in msd.values()}
    assert set(by_task) == set(MSD_MD5)
    for task, entry in by_task.items():
        assert entry["md5"] == MSD_MD5[task]
        assert entry["url"] == f"https://msd-for-monai.s3-us-west-2.amazonaws.com/{task}.tar"
        assert entry["task"] == "segmentation" and entry["access"] == "open"


def test_registration_only_sets_are_listed(registry: dict) -> None:
    registration = {name for name, e in registry.items() if e["access"] == "registration"}
    assert {"brats2021", "kits23", "lidc_idri", "luna16", "cbis_ddsm", "adni", "oasis3"} <= registration
    entry = resolve(registry, "brats2021")
    assert entry["url"] is None and "Synapse" in entry["obtain"]
    assert set(entry["adapter_params"]["channels"]) == {"T1", "T1c", "T2", "FLAIR"}


def test_registration_set_needs_instructions(tmp_path: Path) -> None:
    def drop(document: dict) -> None:
        del document["kits23"]["obtain"]

    with pytest.raises(RegistryError, match="kits23.*obtain"):
        load_registry(edited_copy(tmp_path, drop))


def test_file_and_files_are_exclusive(tmp_path: Path) -> None:
    def both(document: dict) -> None:
        document["pathmnist"]["file"] = dict(document["msd_task09_spleen"]["file"])

    with pytest.raises(RegistryError, match="pathmnist.*either per-size files or one file"):
        load_registry(edited_copy(tmp_path, both))


def test_default_path_is_relative_to_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert load_registry() == load_registry(REGISTRY)


def test_medmnist_entries_follow_the_zenodo_naming(registry: dict) -> None:
    for name, entry in registry.items():
        if entry["adapter"] != "medmnist":
            continue
        expected_sizes = [28, 64, 128, 224] if entry["spatial_dims"] == 2 else [28, 64]
        assert sorted(entry["files"]) == expected_sizes, name
        for size, spec in entry["files"].items():
            filename = f"{name}.npz" if size == 28 else f"{name}_{size}.npz"
            assert spec["filename"] == filename
            assert spec["url"] == f"{ZENODO}{filename}?download=1"


def test_md5s_are_distinct(registry: dict) -> None:
    # A copy-paste slip would most likely duplicate an md5 across entries.
    md5s = [spec["md5"] for entry in registry.values() for spec in entry.get("files", {}).values()]
    assert len(md5s) == len(set(md5s))


def _schema_properties(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for name, spec in node.get("properties", {}).items():
            yield name, spec
        for value in node.values():
            yield from _schema_properties(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schema_properties(value)


def test_every_schema_property_is_described() -> None:
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    properties = list(_schema_properties(schema))
    assert len(properties) > 10
    for name, spec in properties:
        assert isinstance(spec, dict) and spec.get("description"), f"property {name!r} has no description"
    assert schema["$defs"]["dataset"]["additionalProperties"] is False
    assert schema["$defs"]["file"]["additionalProperties"] is False


# --------------------------------------------------------------------------------------
# Rejected registries
# --------------------------------------------------------------------------------------


def test_unknown_key_is_rejected_naming_it(tmp_path: Path) -> None:
    path = edited_copy(tmp_path, lambda d: d["pneumoniamnist"].update(licnece="CC-BY-4.0"))
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    message = str(info.value)
    assert str(path) in message and "pneumoniamnist" in message and "licnece" in message


def test_unknown_key_in_a_file_entry_is_rejected(tmp_path: Path) -> None:
    path = edited_copy(tmp_path, lambda d: d["adrenalmnist3d"]["files"][64].update(sha1="abc"))
    with pytest.raises(RegistryError, match=r"adrenalmnist3d.*files\.64.*sha1"):
        load_registry(path)


def test_wrong_type_is_rejected_naming_the_key(tmp_path: Path) -> None:
    path = edited_copy(tmp_path, lambda d: d["adrenalmnist3d"].update(spatial_dims="three"))
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    message = str(info.value)
    assert "adrenalmnist3d" in message and "spatial_dims" in message and "'three'" in message


def test_malformed_md5_is_rejected(tmp_path: Path) -> None:
    path = edited_copy(tmp_path, lambda d: d["pneumoniamnist"]["files"][28].update(md5="28209EDA"))
    with pytest.raises(RegistryError, match=r"pneumoniamnist.*files\.28\.md5"):
        load_registry(path)


def test_open_data_set_needs_files(tmp_path: Path) -> None:
    path = edited_copy(tmp_path, lambda d: d["pneumoniamnist"].pop("files"))
    with pytest.raises(RegistryError, match=r"pneumoniamnist.*needs 'files' or 'file'"):
        load_registry(path)


def test_embedded_data_set_must_not_have_files(tmp_path: Path) -> None:
    def add_files(document: dict) -> None:
        document["synthetic_cxr"]["files"] = document["pneumoniamnist"]["files"]

    with pytest.raises(RegistryError, match=r"synthetic_cxr.*'files' is not allowed"):
        load_registry(edited_copy(tmp_path, add_files))


def test_non_numeric_size_is_rejected(tmp_path: Path) -> None:
    path = edited_copy(tmp_path, lambda d: d["pneumoniamnist"]["files"].update(big=d["pneumoniamnist"]["files"][28]))
    with pytest.raises(RegistryError, match=r"pneumoniamnist.*'big'"):
        load_registry(path)


def test_missing_and_unparseable_files(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pneumoniamnist: [unclosed\n")
    with pytest.raises(RegistryError, match="not valid YAML"):
        load_registry(bad)


# --------------------------------------------------------------------------------------
# resolve()
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size", "filename", "md5"),
    [
        ("pneumoniamnist", 28, "pneumoniamnist.npz", "28209eda62fecd6e6a2d98b1501bb15f"),
        ("pneumoniamnist", 64, "pneumoniamnist_64.npz", "8f4eceb4ccffa70c672198ea285246c6"),
        ("adrenalmnist3d", 28, "adrenalmnist3d.npz", "bbd3c5a5576322bc4cdfea780653b1ce"),
        ("adrenalmnist3d", 64, "adrenalmnist3d_64.npz", "17721accfe9fb005146a47d33bc54b2f"),
    ],
)
def test_resolve_gives_url_md5_and_metadata(registry: dict, name: str, size: int, filename: str, md5: str) -> None:
    entry = resolve(registry, name, size)
    assert entry["url"] == f"{ZENODO}{filename}?download=1"
    assert entry["filename"] == filename
    assert entry["md5"] == md5
    assert entry["size"] == size
    assert entry["adapter"] == "medmnist"
    assert entry["spatial_dims"] == (3 if name.endswith("3d") else 2)
    assert entry["licence"] == "CC-BY-4.0"
    assert "MedMNIST" in entry["citation"]


def test_resolve_default_size(registry: dict) -> None:
    assert resolve(registry, "pneumoniamnist", None)["size"] == 28


def test_resolve_unknown_size_lists_known_sizes(registry: dict) -> None:
    with pytest.raises(RegistryError, match=r"no image size 100; known sizes: 28, 64, 128, 224"):
        resolve(registry, "pneumoniamnist", 100)
    with pytest.raises(RegistryError, match=r"known sizes: 28, 64$"):
        resolve(registry, "adrenalmnist3d", 128)


def test_resolve_unknown_name_lists_known_names(registry: dict) -> None:
    with pytest.raises(RegistryError) as info:
        resolve(registry, "pneumonia", 28)
    assert "pneumoniamnist" in str(info.value) and "adrenalmnist3d" in str(info.value)


def test_resolve_embedded_generator(registry: dict) -> None:
    entry = resolve(registry, "synthetic_nodule_ct", 32)
    assert entry["adapter"] == "synthetic" and entry["access"] == "embedded"
    assert entry["spatial_dims"] == 3 and entry["size"] == 32
    assert entry["url"] is None and entry["md5"] is None and entry["filename"] is None


# --------------------------------------------------------------------------------------
# The registry against the local copies on shared storage (skipped where absent)
# --------------------------------------------------------------------------------------


@pytest.mark.skipif(not (SHARED / "adrenalmnist3d.npz").exists(), reason="no shared MedMNIST copy")
def test_shared_adrenalmnist3d_is_the_official_file(registry: dict, tmp_path: Path) -> None:
    entry = resolve(registry, "adrenalmnist3d", 28)
    assert file_digest(SHARED / "adrenalmnist3d.npz", "md5") == entry["md5"]
    dest = fetch(entry, tmp_path / entry["filename"], source="path", path=SHARED)
    assert file_digest(dest, "md5") == entry["md5"]


@pytest.mark.skipif(not (SHARED / "pneumoniamnist.npz").exists(), reason="no shared MedMNIST copy")
def test_shared_pneumoniamnist_is_not_the_official_file(registry: dict, tmp_path: Path) -> None:
    # That copy had its train split cut; the registry must not accept it as official.
    entry = resolve(registry, "pneumoniamnist", 28)
    with pytest.raises(ChecksumError, match=entry["md5"]):
        fetch(entry, tmp_path / "out" / entry["filename"], source="path", path=SHARED)
    assert list((tmp_path / "out").iterdir()) == []
