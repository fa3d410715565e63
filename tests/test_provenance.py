"""Tests for casebook.provenance: the record written beside every model and metrics file."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from casebook import provenance


@pytest.fixture
def inputs(tmp_path: Path) -> list[Path]:
    a = tmp_path / "images.npy"
    a.write_bytes(b"\x93NUMPY fake array bytes")
    b = tmp_path / "splits.json"
    b.write_text('{"test": []}\n')
    folder = tmp_path / "dataset"
    folder.mkdir()
    return [a, b, folder]


def _parse(stamp: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(stamp)
    assert parsed.tzinfo is not None, "timestamps are timezone-aware"
    return parsed


def test_record_contents(tmp_path: Path, inputs: list[Path], monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # not a git repository
    started = provenance.now()
    rec = provenance.record(
        rule="train",
        inputs=inputs,
        outputs=[tmp_path / "model.pt"],
        config={"lr": 0.01, "network": {"name": "resnet18"}},
        seed=42,
        started=started,
        device="cpu",
        wildcards={"casestudy": "cxr", "fold": "0"},
    )
    assert rec["rule"] == "train"
    assert rec["wildcards"] == {"casestudy": "cxr", "fold": "0"}
    assert rec["seed"] == 42 and rec["device"] == "cpu"
    assert rec["config"] == {"lr": 0.01, "network": {"name": "resnet18"}}
    assert rec["outputs"] == [str(tmp_path / "model.pt")]

    # code version: the keys are there even outside a repository
    assert set(rec["code"]) == {"commit", "dirty"}
    assert rec["code"] == {"commit": None, "dirty": None}

    # sha256 of every input file; folders skipped
    assert rec["inputs"] == {
        str(p): "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs[:2]
    }

    packages = rec["environment"]["packages"]
    for name in ("torch", "monai", "torchio", "numpy", "SimpleITK", "scikit-learn", "snakemake"):
        assert packages[name] == metadata.version(name)
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", packages["python"])
    assert "cuda_available" in rec["device_info"]

    assert rec["started"] == started
    assert _parse(rec["started"]) <= _parse(rec["finished"])
    assert _parse(rec["finished"]) - _parse(rec["started"]) < dt.timedelta(minutes=5)


def test_write_record_is_valid_sorted_json(tmp_path: Path, inputs: list[Path], monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "logs" / "provenance.json"
    rec = provenance.write_record(
        out, rule="evaluate", inputs=inputs, outputs=[], config={"b": 1, "a": 2}, seed=None, started=provenance.now()
    )
    text = out.read_text()
    assert json.loads(text) == json.loads(json.dumps(rec))
    keys = list(json.loads(text))
    assert keys == sorted(keys)
    assert json.loads(text)["seed"] is None


def test_checksums_change_with_content(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"one")
    first = provenance.checksums([path])
    path.write_bytes(b"two")
    assert provenance.checksums([path]) != first
    assert provenance.checksums([tmp_path / "missing.bin"]) == {}


def test_package_versions_of_an_absent_package() -> None:
    versions = provenance.package_versions(["numpy", "no-such-package-casebook"])
    assert versions["numpy"] == metadata.version("numpy")
    assert versions["no-such-package-casebook"] == "not installed"
    assert "python" in versions


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_state_in_a_scratch_repository(tmp_path: Path) -> None:
    # a throw-away repository under tmp_path, never the project's own
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (repo / "a.txt").write_text("1\n")
    git("add", "a.txt")
    git("commit", "-q", "-m", "first")
    head = git("rev-parse", "HEAD")

    clean = provenance.git_state(repo)
    assert clean == {"commit": head, "dirty": False}
    assert re.fullmatch(r"[0-9a-f]{40}", clean["commit"])
    (repo / "untracked.txt").write_text("ignored by the dirty check\n")
    assert provenance.git_state(repo)["dirty"] is False
    (repo / "a.txt").write_text("2\n")
    assert provenance.git_state(repo) == {"commit": head, "dirty": True}


def test_git_state_outside_a_repository(tmp_path: Path) -> None:
    assert provenance.git_state(tmp_path) == {"commit": None, "dirty": None}


# --------------------------------------------------------------------------------------
# Checksums of inputs reused from the record of the job that made them
# --------------------------------------------------------------------------------------


def _record_outputs(outputs: list[str], records_dir: Path) -> dict:
    rec = provenance.job_record(
        rule="make", wildcards={}, inputs=[], outputs=outputs, params={}, config={},
        started=provenance.now(), code={}, records_dir=records_dir,
    )  # fmt: skip
    provenance.write_job_records(rec, records_dir)
    return rec


def test_an_untouched_input_reuses_the_checksum_of_its_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("out").mkdir()
    Path("out/a.bin").write_bytes(b"payload")
    rec = _record_outputs(["out/a.bin"], Path("prov"))
    assert rec["outputs"]["out/a.bin"] == provenance.path_digest("out/a.bin")
    # a recorded value the file could never hash to shows that it was reused, not recomputed
    record_file = provenance.record_path("out/a.bin", "prov")
    data = json.loads(record_file.read_text())
    data["outputs"]["out/a.bin"] = "sha256:reused"
    record_file.write_text(json.dumps(data))
    assert provenance.input_digest("out/a.bin", "prov") == "sha256:reused"


def test_a_rewritten_input_is_hashed_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("out").mkdir()
    target = Path("out/a.bin")
    target.write_bytes(b"payload")
    _record_outputs(["out/a.bin"], Path("prov"))
    mtime = target.stat().st_mtime_ns
    target.write_bytes(b"PAYLOAD")  # same size: only the modification time tells
    os.utime(target, ns=(target.stat().st_atime_ns, mtime + 1_000_000))
    assert provenance.input_digest("out/a.bin", "prov") == provenance.path_digest("out/a.bin")
    assert provenance.input_digest("out/a.bin", "prov") != _sha("payload")


def test_a_folder_input_with_a_new_file_is_hashed_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("data/images").mkdir(parents=True)
    Path("data/images/a.nii.gz").write_bytes(b"a")
    rec = _record_outputs(["data"], Path("prov"))
    assert provenance.input_digest("data", "prov") == rec["outputs"]["data"]
    # Snakemake's own marker, written after the job, does not count as a change
    Path("data/.snakemake_timestamp").touch()
    assert provenance.stat_signature("data") == rec["stats"]["data"]
    Path("data/images/b.nii.gz").write_bytes(b"b")
    assert provenance.input_digest("data", "prov") != rec["outputs"]["data"]
    assert provenance.input_digest("data", "prov") == provenance.path_digest("data")


def test_an_input_without_a_record_is_hashed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("raw.csv").write_text("x\n")
    assert provenance.input_digest("raw.csv", "prov") == _sha("x\n")


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
