"""Provenance: one record format for everything the pipeline makes.

Two kinds of file carry it, with the same keys and the same meaning, both built by
:func:`record` (and read back, whatever their age, by :func:`read_record`):

* ``provenance/<output>.json``: one per output of every job, written by
  :func:`casebook.scripting.logged` (via :func:`write_job_records`); ``output`` names
  the file it describes. ``casebook audit`` walks these.
* the ``provenance.json`` that train and evaluate rules declare beside a model or its
  metrics, written by the stage itself (:func:`write_record`); ``output`` is null: it
  describes every file of ``outputs``.

Keys (format ``casebook-provenance``, version 2):

- ``format``: always ``"casebook-provenance"``: says what the file is.
- ``version``: the layout's version (2; records from before it, without ``format``, read as 1).
- ``rule``: the Snakemake rule (or stage) that made the outputs.
- ``wildcards``: the job's wildcards (``{}`` when it has none).
- ``output``: the output this record file describes; null in a record beside several outputs.
- ``outputs``: every output of the job, path to checksum (``sha256:`` file, ``tree-sha256:`` folder; null if absent).
- ``stats``: size and mtime signature per output, so that downstream jobs reuse the checksums (:func:`input_digest`).
- ``inputs``: every input that existed, path to checksum (same forms as ``outputs``).
- ``params``: the job's settings (rule params; for a stage record, what the stage was given: model, evaluate, preprocess settings, fold).
- ``config``: the workflow config values every job reads (``seed``, ``device``, ``registry``; ``{}`` where the writer had none).
- ``seed``: the random seed the job ran with (null if none).
- ``device``: the device the job computed on (e.g. ``"cpu"``, ``"cuda:0"``); null where the writer did not choose one.
- ``code``: ``commit`` (git HEAD, null outside a repository), ``dirty`` (tracked files differ from it), ``hashes`` (sha256 of the ``package``, ``scripts`` and ``workflow`` code), all taken when the job started.
- ``environment``: ``packages`` (versions, python included), ``platform``, ``executable``, ``device`` (:func:`device_info`: CPUs, and torch threads, CUDA, GPU when the job loaded torch).
- ``host``: the machine's name.
- ``started``: when the job started (ISO 8601, UTC).
- ``finished``: when the record was made, after the outputs were written (ISO 8601, UTC).

No patient identifiers: inputs are named by path and checksum only, and paths carry
pseudonyms. Nothing here imports torch: a job that never used it does not pay for it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from casebook.fileio import file_digest, write_json

FORMAT = "casebook-provenance"
VERSION = 2
RECORDS_DIR = "provenance"

PACKAGES = (
    "casebook", "torch", "monai", "torchio", "SimpleITK", "nibabel", "numpy", "pandas",
    "scikit-learn", "scipy", "matplotlib", "seaborn", "snakemake",
)  # fmt: skip


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Installed versions, read from package metadata (nothing is imported)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_state(cwd: str | Path = ".") -> dict[str, Any]:
    """The commit and whether the work tree differs from it (None outside a git repo)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def code_state(root: str | Path = ".") -> dict[str, Any]:
    """The record's ``code``: git commit and dirty flag, and hashes of the code
    (:func:`code_fingerprint`). Take it when a job starts: the code that ran, even if
    files change while a long job runs."""
    return {**git_state(root), "hashes": code_fingerprint(root)}


def device_info() -> dict[str, Any]:
    """What the job ran on: CPUs, and, when the job loaded torch, its threads, CUDA and
    GPU. torch is never imported here (a job that did not need it must not pay seconds
    for it); ``torch_loaded`` says whether the job had it."""
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "machine": platform.machine()}
    torch = sys.modules.get("torch")
    if torch is None:
        return {**info, "torch_loaded": False, "cuda_available": None, "torch_threads": None}
    info.update(torch_loaded=True, cuda_available=torch.cuda.is_available(), torch_threads=torch.get_num_threads())
    if info["cuda_available"]:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def environment() -> dict[str, Any]:
    """The record's ``environment``."""
    return {"packages": package_versions(), "platform": platform.platform(), "executable": sys.executable, "device": device_info()}


def checksums(paths: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of every file of ``paths`` (folders are skipped), e.g. for a resume key."""
    return {str(p): f"sha256:{file_digest(p)}" for p in paths if Path(p).is_file()}


# --------------------------------------------------------------------------------------
# Checksums of files, folders and code; where records live
# --------------------------------------------------------------------------------------


def _tree_files(path: Path) -> list[Path]:
    """A folder's files, sorted, without Snakemake's marker in directory outputs
    (``.snakemake_timestamp``, written after the job: not part of the data)."""
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name != ".snakemake_timestamp")


def path_digest(path: str | Path) -> str:
    """sha256 of a file, or of a folder's tree (relative names and contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return f"sha256:{file_digest(path)}"
    digest = hashlib.sha256()
    for item in _tree_files(path):
        digest.update(str(item.relative_to(path)).encode() + b"\0" + file_digest(item).encode() + b"\0")
    return f"tree-sha256:{digest.hexdigest()}"


def stat_signature(path: str | Path) -> str:
    """Size and modification time of a file, or of every file of a folder: cheap to
    take, and it changes whenever a file is rewritten, so a checksum taken with the same
    signature can be reused (as make, Snakemake and DVC trust mtimes)."""
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    digest = hashlib.sha256()
    for item in _tree_files(path):
        st = item.stat()
        digest.update(f"{item.relative_to(path)}\0{st.st_size}:{st.st_mtime_ns}\0".encode())
    return f"tree:{digest.hexdigest()}"


def input_digest(path: str | Path, records_dir: str | Path = RECORDS_DIR) -> str:
    """The checksum of an input, reused from the record of the job that made it when
    the file is untouched since (same stat signature): hashing a large data folder once
    per downstream job cost more than some jobs. ``casebook audit`` always rehashes."""
    try:
        rec = read_record(record_path(path, records_dir))
        key = Path(path).as_posix()
        if rec is not None and rec["outputs"].get(key) and rec["stats"].get(key) == stat_signature(path):
            return rec["outputs"][key]
    except (ValueError, KeyError, TypeError, AttributeError):
        pass  # an unreadable record: hash the file
    return path_digest(path)


def code_fingerprint(root: str | Path = ".") -> dict[str, str]:
    """Hashes of the code that makes results: the casebook package, the rule scripts and
    the workflow (rules, schemas, report captions), each over sorted names and contents.

    Unlike the git commit, these change with uncommitted edits too, so an audit can tell
    that a result was made by code that is no longer there.
    """
    import casebook

    root = Path(root)
    sets = {
        "package": sorted(Path(casebook.__file__).parent.rglob("*.py")),
        "scripts": sorted(root.glob("scripts/*.py")),
        "workflow": sorted(p for p in [root / "Snakefile", *root.glob("workflow/**/*")] if p.is_file()),
    }
    out = {}
    for name, files in sets.items():
        digest = hashlib.sha256()
        base = Path(casebook.__file__).parent if name == "package" else root
        for path in files:
            digest.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes() + b"\0")
        out[name] = digest.hexdigest()
    return out


def record_path(output: str | Path, records_dir: str | Path = RECORDS_DIR) -> Path:
    """Where the record of ``output`` (a path relative to the working directory) lives."""
    return Path(records_dir) / f"{Path(output).as_posix().strip('/')}.json"


def summary_path(output: str | Path, records_dir: str | Path = RECORDS_DIR) -> Path:
    """Where the report's provenance summary of ``output`` lives (reStructuredText)."""
    return Path(records_dir) / f"{Path(output).as_posix().strip('/')}.rst"


# --------------------------------------------------------------------------------------
# The record: built by one function, written beside outputs or once per output
# --------------------------------------------------------------------------------------


def record(
    *,
    rule: str,
    inputs: Iterable[str | Path],
    outputs: Iterable[str | Path],
    started: str,
    params: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    seed: int | None = None,
    device: str | None = None,
    wildcards: dict[str, str] | None = None,
    code: dict[str, Any] | None = None,
    records_dir: str | Path = RECORDS_DIR,
) -> dict[str, Any]:
    """The provenance record of a job (every key is described at the top of this module).

    ``started`` comes from :func:`now` and ``code`` from :func:`code_state`, both taken at
    the job's start (taken now when ``code`` is not given). Inputs that do not exist are
    left out; an input's checksum is reused from the record of the job that made it when
    the file is untouched since (:func:`input_digest`).
    """
    outputs = [str(p) for p in outputs]
    present = [p for p in outputs if Path(p).exists()]
    return {
        "format": FORMAT,
        "version": VERSION,
        "rule": rule,
        "wildcards": dict(wildcards or {}),
        "output": None,
        "outputs": {p: path_digest(p) if p in present else None for p in outputs},
        # read back by input_digest: lets downstream jobs reuse these checksums
        "stats": {p: stat_signature(p) for p in present},
        "inputs": {str(p): input_digest(p, records_dir) for p in inputs if Path(p).exists()},
        "params": dict(params or {}),
        "config": dict(config or {}),
        "seed": seed,
        "device": None if device is None else str(device),
        "code": code if code is not None else code_state(),
        "environment": environment(),
        "host": platform.node(),
        "started": started,
        "finished": now(),
    }


def write_record(path: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Write the :func:`record` of a stage to ``path`` (the ``provenance.json`` that a
    rule declares beside a model or metrics) and return it."""
    rec = record(**kwargs)
    write_json(path, rec)
    return rec


def write_training_record(outputs: dict[str, str], card: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """What every family's train rule ends with: the model card (``outputs['card']``) and
    the record of the rule (``outputs['provenance']``) naming the model, history and card
    as its outputs; ``kwargs`` are :func:`record`'s other arguments (inputs, params, ...)."""
    write_json(outputs["card"], card)
    return write_record(outputs["provenance"], rule="train", outputs=[outputs["model"], outputs["history"], outputs["card"]], **kwargs)


def write_job_records(record_: dict[str, Any], records_dir: str | Path = RECORDS_DIR) -> list[Path]:
    """Write a job's :func:`record` once per output (``provenance/<output>.json``), so
    that any output finds its own; ``output`` names it."""
    written = []
    for output in record_["outputs"]:
        path = record_path(output, records_dir)
        write_json(path, {**record_, "output": output})
        written.append(path)
    return written


def read_record(path: str | Path) -> dict[str, Any] | None:
    """A record file in this module's layout (None when there is no such file).

    Records written before the format had a version (1: per-output records, and the
    records beside models and metrics with ``outputs`` as a list) are returned in the
    current layout, with ``version`` 1 and what they did not say as null or empty.
    A record of another format or a newer version raises :class:`ValueError`.
    """
    path = Path(path)
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    if not isinstance(rec, dict):
        raise ValueError(f"{path}: not a provenance record")
    if "format" not in rec:
        return _from_version_1(rec)
    if rec["format"] != FORMAT:
        raise ValueError(f"{path}: format {rec['format']!r} is not {FORMAT!r}")
    if not isinstance(rec.get("version"), int) or rec["version"] > VERSION:
        raise ValueError(f"{path}: record version {rec.get('version')!r} is newer than this casebook reads ({VERSION})")
    return rec


def _from_version_1(old: dict[str, Any]) -> dict[str, Any]:
    """A record from before the format had a version, in the current layout."""
    rec = dict(old)
    env = dict(rec.get("environment") or {})
    if isinstance(rec.get("outputs"), list):  # the stage record: its config was the stage's settings
        rec["outputs"] = {str(p): None for p in rec["outputs"]}
        rec["params"], rec["config"] = rec.get("config") or {}, {}
        env.setdefault("device", rec.pop("device_info", None) or {})
    rec.pop("device_info", None)
    code = dict(rec.get("code") or {})
    for key, empty in (("commit", None), ("dirty", None), ("hashes", {})):
        code.setdefault(key, empty)
    for key in ("packages", "device"):
        env.setdefault(key, {})
    for key in ("platform", "executable"):
        env.setdefault(key, None)
    rec.update(format=FORMAT, version=1, code=code, environment=env)
    defaults: dict[str, Any] = {
        "rule": None, "wildcards": {}, "output": None, "outputs": {}, "stats": {}, "inputs": {}, "params": {},
        "config": {}, "seed": None, "device": None, "host": None, "started": None, "finished": None,
    }  # fmt: skip
    for key, value in defaults.items():
        rec.setdefault(key, value)
    return rec
