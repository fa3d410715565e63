"""Tests for casebook.inventory: the record of where each case study's raw data came from."""

from __future__ import annotations

import json

import pytest

from casebook.inventory import inventory, inventory_stage


def test_inventory_lists_files_with_sizes_and_drops_empty_fields(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "resources/msd").mkdir(parents=True)
    (tmp_path / "resources/msd/Task09.tar").write_bytes(b"x" * 10)
    (tmp_path / "resources/msd/extracted").mkdir()
    (tmp_path / "resources/msd/extracted/a.nii.gz").write_bytes(b"y" * 3)
    spec = {
        "spleen": {"dataset": "msd_task09_spleen", "access": "open", "source": "url", "url": "https://example.org/T.tar",
                   "md5": "abc", "path": None, "generator": None, "params": {},
                   "files": ["resources/msd/Task09.tar", "resources/msd/extracted"]},
        "cxr": {"dataset": "synthetic_cxr", "access": "embedded", "source": "embedded", "generator": "cxr",
                "params": {"n_patients": 60}, "files": []},
    }  # fmt: skip
    out = inventory(spec)["casestudies"]
    assert out["spleen"]["files"] == {
        "resources/msd/Task09.tar": {"bytes": 10, "kind": "file"},
        "resources/msd/extracted": {"bytes": 3, "kind": "folder"},
    }
    assert "path" not in out["spleen"] and "generator" not in out["spleen"] and out["spleen"]["md5"] == "abc"
    assert out["cxr"]["generator"] == "cxr" and out["cxr"]["params"] == {"n_patients": 60} and out["cxr"]["files"] == {}
    inventory_stage(spec, "resources/inventory.json")
    assert json.loads((tmp_path / "resources/inventory.json").read_text())["casestudies"] == out


def test_a_missing_raw_file_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="resources/x/gone.npz: raw file of data set 'x_set' is missing"):
        inventory({"cs": {"dataset": "x_set", "files": ["resources/x/gone.npz"]}})
