"""Tests for casebook.provenance: one record format, beside models and metrics and per output."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import types
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


KEYS = {
    "format", "version", "rule", "wildcards", "output", "outputs", "stats", "inputs", "params", "config", "seed",
    "device", "code", "environment", "host", "started", "finished",
}  # fmt: skip


def test_record_contents(tmp_path: Path, inputs: list[Path], monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # not a git repository
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    started = provenance.now()
    rec = provenance.record(
        rule="train",
        inputs=[*inputs, tmp_path / "absent.bin"],
        outputs=[model, tmp_path / "history.tsv"],
        params={"lr": 0.01, "network": {"name": "resnet18"}},
        config={"seed": 42, "device": "auto"},
        seed=42,
        started=started,
        device="cpu",
        wildcards={"casestudy": "cxr", "fold": "0"},
    )
    assert set(rec) == KEYS
    assert rec["format"] == provenance.FORMAT == "casebook-provenance" and rec["version"] == provenance.VERSION == 2
    assert rec["rule"] == "train" and rec["output"] is None
    assert rec["wildcards"] == {"casestudy": "cxr", "fold": "0"}
    assert rec["seed"] == 42 and rec["device"] == "cpu"
    assert rec["params"] == {"lr": 0.01, "network": {"name": "resnet18"}}
    assert rec["config"] == {"seed": 42, "device": "auto"}
    # outputs with checksums (null: not there when the record was made) and stat signatures
    assert rec["outputs"] == {str(model): _sha("weights"), str(tmp_path / "history.tsv"): None}
    assert rec["stats"] == {str(model): provenance.stat_signature(model)}

    # code version and hashes: the keys are there even outside a repository
    assert rec["code"]["commit"] is None and rec["code"]["dirty"] is None
    assert rec["code"]["hashes"].keys() == {"package", "scripts", "workflow"}

    # a checksum of every input that exists: sha256 of a file, tree-sha256 of a folder
    assert rec["inputs"] == {
        **{str(p): "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs[:2]},
        str(inputs[2]): provenance.path_digest(inputs[2]),
    }
    assert rec["inputs"][str(inputs[2])].startswith("tree-sha256:")

    packages = rec["environment"]["packages"]
    for name in ("torch", "monai", "torchio", "numpy", "SimpleITK", "scikit-learn", "snakemake"):
        assert packages[name] == metadata.version(name)
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", packages["python"])
    assert {"platform", "executable", "device"} <= set(rec["environment"])
    assert "cuda_available" in rec["environment"]["device"]

    assert rec["started"] == started
    assert _parse(rec["started"]) <= _parse(rec["finished"])
    assert _parse(rec["finished"]) - _parse(rec["started"]) < dt.timedelta(minutes=5)


def test_record_keeps_the_code_state_taken_at_the_start(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = {"commit": "abc", "dirty": False, "hashes": {"package": "p", "scripts": "s", "workflow": "w"}}
    rec = provenance.record(rule="r", inputs=[], outputs=[], started=provenance.now(), code=code)
    assert rec["code"] == code
    assert provenance.code_state(tmp_path) == {"commit": None, "dirty": None, "hashes": provenance.code_fingerprint(tmp_path)}


def test_write_record_is_valid_sorted_json(tmp_path: Path, inputs: list[Path], monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "logs" / "provenance.json"
    rec = provenance.write_record(
        out, rule="evaluate", inputs=inputs, outputs=[], params={"b": 1, "a": 2}, seed=None, started=provenance.now()
    )
    text = out.read_text()
    assert json.loads(text) == json.loads(json.dumps(rec))
    keys = list(json.loads(text))
    assert keys == sorted(keys)
    assert json.loads(text)["seed"] is None
    assert provenance.read_record(out) == json.loads(text)


def test_the_record_beside_outputs_and_the_per_output_records_share_one_format(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("out").mkdir()
    Path("out/a.bin").write_bytes(b"a")
    Path("out/b.bin").write_bytes(b"b")
    rec = provenance.write_record(
        "out/provenance.json", rule="train", inputs=[], outputs=["out/a.bin", "out/b.bin"], started=provenance.now()
    )
    written = provenance.write_job_records(rec, "prov")
    assert written == [Path("prov/out/a.bin.json"), Path("prov/out/b.bin.json")]
    beside = provenance.read_record("out/provenance.json")
    for output, path in zip(["out/a.bin", "out/b.bin"], written):
        per_output = provenance.read_record(path)
        assert set(per_output) == set(beside) == KEYS
        assert per_output == {**beside, "output": output}


def test_device_info_never_imports_torch(monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    info = provenance.device_info()
    assert info["torch_loaded"] is False and info["cuda_available"] is None and "torch" not in sys.modules
    assert info["cpu_count"] == os.cpu_count()


def test_device_info_describes_a_loaded_torch(monkeypatch) -> None:
    fake = types.SimpleNamespace(
        cuda=types.SimpleNamespace(is_available=lambda: True, get_device_name=lambda i: "Fake GPU"),
        version=types.SimpleNamespace(cuda="12.8"),
        backends=types.SimpleNamespace(cudnn=types.SimpleNamespace(version=lambda: 91000)),
        get_num_threads=lambda: 3,
    )
    monkeypatch.setitem(sys.modules, "torch", fake)
    info = provenance.device_info()
    assert info["torch_loaded"] is True and info["torch_threads"] == 3
    assert (info["cuda_available"], info["gpu"], info["cuda"], info["cudnn"]) == (True, "Fake GPU", "12.8", 91000)


# --------------------------------------------------------------------------------------
# Reading records: the current format, the records from before it, and newer ones
# --------------------------------------------------------------------------------------


def _version_1_stage_record() -> dict:
    return {
        "rule": "train", "wildcards": {"cs": "cxr"}, "started": "2026-01-01T00:00:00+00:00",
        "finished": "2026-01-01T00:01:00+00:00", "code": {"commit": "abc", "dirty": False},
        "config": {"model": {"lr": 0.1}, "fold": 0}, "inputs": {"a.npy": "sha256:aa"}, "outputs": ["model.pt"],
        "seed": 42, "device": "cpu", "device_info": {"cuda_available": False, "torch_threads": 2},
        "environment": {"packages": {"python": "3.11.7"}, "platform": "Linux", "executable": "/bin/python"},
        "host": "node1",
    }  # fmt: skip


def _version_1_job_record() -> dict:
    return {
        "rule": "make", "wildcards": {}, "inputs": {"a.npy": "sha256:aa"}, "outputs": {"out.bin": "sha256:bb"},
        "stats": {"out.bin": "1:2"}, "params": {"x": 1}, "config": {"seed": 42, "device": "auto", "registry": "r"},
        "seed": 42, "code": {"commit": "abc", "dirty": True, "hashes": {"package": "p"}},
        "environment": {"packages": {"python": "3.11.7"}, "platform": "Linux", "executable": "/bin/python",
                        "device": {"cuda_available": False}},
        "host": "node1", "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:01:00+00:00",
        "output": "out.bin",
    }  # fmt: skip


def test_a_version_1_stage_record_reads_in_the_current_layout(tmp_path: Path) -> None:
    path = tmp_path / "provenance.json"
    path.write_text(json.dumps(_version_1_stage_record()))
    rec = provenance.read_record(path)
    assert set(rec) == KEYS and rec["format"] == "casebook-provenance" and rec["version"] == 1
    assert rec["outputs"] == {"model.pt": None} and rec["output"] is None and rec["stats"] == {}
    assert rec["params"] == {"model": {"lr": 0.1}, "fold": 0} and rec["config"] == {}
    assert rec["environment"]["device"] == {"cuda_available": False, "torch_threads": 2}
    assert rec["code"] == {"commit": "abc", "dirty": False, "hashes": {}}
    assert (rec["seed"], rec["device"], rec["host"], rec["inputs"]) == (42, "cpu", "node1", {"a.npy": "sha256:aa"})


def test_a_version_1_job_record_reads_in_the_current_layout(tmp_path: Path) -> None:
    path = tmp_path / "out.bin.json"
    path.write_text(json.dumps(_version_1_job_record()))
    rec = provenance.read_record(path)
    assert set(rec) == KEYS and rec["version"] == 1 and rec["device"] is None
    old = _version_1_job_record()
    assert {k: rec[k] for k in old} == old  # nothing it said is lost


def test_a_record_of_a_newer_version_or_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"format": "casebook-provenance", "version": 99}))
    with pytest.raises(ValueError, match="newer"):
        provenance.read_record(path)
    path.write_text(json.dumps({"format": "something-else", "version": 1}))
    with pytest.raises(ValueError, match="something-else"):
        provenance.read_record(path)
    assert provenance.read_record(tmp_path / "none.json") is None


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
    rec = provenance.record(rule="make", inputs=[], outputs=outputs, started=provenance.now(), code={}, records_dir=records_dir)
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


def test_an_unreadable_or_newer_record_makes_the_input_hashed_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a.bin").write_bytes(b"payload")
    record_file = provenance.record_path("a.bin", "prov")
    record_file.parent.mkdir(parents=True)
    for text in ("not json", json.dumps({"format": "casebook-provenance", "version": 99, "outputs": {"a.bin": "sha256:x"}})):
        record_file.write_text(text)
        assert provenance.input_digest("a.bin", "prov") == _sha("payload")


# --------------------------------------------------------------------------------------
# The per-output records written by casebook.scripting.logged
# --------------------------------------------------------------------------------------

JOB = """
import json, sys
from pathlib import Path
from types import SimpleNamespace
from casebook.scripting import logged

class Named(list):  # what Snakemake's input, output, params and wildcards offer
    def __init__(self, **items):
        super().__init__(items.values())
        self._items = items

    def items(self):
        return self._items.items()

sm = SimpleNamespace(
    rule="make", threads=1, log=["job.log"], input=Named(raw="raw.csv", gone="absent.csv"),
    output=Named(a="out/a.txt", b="out/b.txt"), params=Named(x=1), wildcards=Named(cs="demo"),
    config={"seed": 7, "device": "cpu", "registry": "config/datasets.yaml", "other": "not recorded"},
)
with logged(sm):
    Path("out").mkdir()
    Path("out/a.txt").write_text("a")
    Path("out/b.txt").write_text("b")
print(json.dumps({"torch": "torch" in sys.modules}))
"""


def test_logged_writes_one_record_per_output_in_the_same_format_without_importing_torch(tmp_path):
    Path(tmp_path / "raw.csv").write_text("x\n")
    done = subprocess.run([sys.executable, "-c", JOB], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + (tmp_path / "job.log").read_text()
    assert json.loads(done.stdout) == {"torch": False}
    for output in ("out/a.txt", "out/b.txt"):
        rec = provenance.read_record(tmp_path / "provenance" / f"{output}.json")
        assert set(rec) == KEYS and rec["format"] == "casebook-provenance" and rec["version"] == 2
        assert rec["rule"] == "make" and rec["output"] == output and rec["wildcards"] == {"cs": "demo"}
        assert rec["outputs"] == {"out/a.txt": _sha("a"), "out/b.txt": _sha("b")}
        assert rec["inputs"] == {"raw.csv": _sha("x\n")}
        assert rec["params"] == {"x": 1} and rec["seed"] == 7
        assert rec["config"] == {"seed": 7, "device": "cpu", "registry": "config/datasets.yaml"}
        assert rec["code"]["hashes"].keys() == {"package", "scripts", "workflow"}
        assert rec["environment"]["device"]["torch_loaded"] is False
        assert (tmp_path / "provenance" / f"{output}.rst").is_file()
