"""Provenance records written beside every model and metrics file: code version,
config values, input checksums, environment, device, seed, start and end time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from casebook.fileio import file_digest, write_json

PACKAGES = (
    "casebook", "torch", "monai", "torchio", "SimpleITK", "nibabel", "numpy", "pandas",
    "scikit-learn", "scipy", "matplotlib", "seaborn", "snakemake",
)  # fmt: skip


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
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


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cuda_available": torch.cuda.is_available(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def checksums(paths: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of every input file (folders are skipped: their files are listed elsewhere)."""
    return {str(p): f"sha256:{file_digest(p)}" for p in paths if Path(p).is_file()}


def record(
    *,
    rule: str,
    inputs: Iterable[str | Path],
    outputs: Iterable[str | Path],
    config: dict[str, Any],
    seed: int | None,
    started: str,
    device: str | None = None,
    wildcards: dict[str, str] | None = None,
    code: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A provenance record; ``started`` comes from :func:`now` and ``code`` from
    :func:`git_state`, both taken at the job's start (the code that ran, even if the
    tree changes while a long job runs)."""
    return {
        "rule": rule,
        "wildcards": dict(wildcards or {}),
        "started": started,
        "finished": now(),
        "code": code if code is not None else git_state(),
        "config": config,
        "inputs": checksums(inputs),
        "outputs": [str(p) for p in outputs],
        "seed": seed,
        "device": device,
        "device_info": device_info(),
        "environment": {"packages": package_versions(), "platform": platform.platform(), "executable": sys.executable},
        "host": platform.node(),
    }


def write_record(path: str | Path, **kwargs: Any) -> dict[str, Any]:
    rec = record(**kwargs)
    write_json(path, rec)
    return rec


# --------------------------------------------------------------------------------------
# One record per output of every job (read back by ``casebook audit``)
# --------------------------------------------------------------------------------------

RECORDS_DIR = "provenance"
CODE_GLOBS = {"package": None, "scripts": "scripts/*.py", "workflow": "workflow/**/*"}


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
    record_file = record_path(path, records_dir)
    if record_file.is_file():
        try:
            rec = json.loads(record_file.read_text())
            key = Path(path).as_posix()
            known = rec["outputs"][key]
            if rec.get("stats", {}).get(key) == stat_signature(path):
                return known
        except (ValueError, KeyError, TypeError):
            pass  # an unreadable or older record: hash the file
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


def job_record(
    *,
    rule: str,
    wildcards: dict[str, str],
    inputs: Iterable[str],
    outputs: Iterable[str],
    params: dict[str, Any],
    config: dict[str, Any],
    started: str,
    code: dict[str, Any],
    records_dir: str | Path = RECORDS_DIR,
) -> dict[str, Any]:
    """Everything needed to say how a job's outputs were made (no patient identifiers:
    inputs are named by path and checksum only, and paths carry pseudonyms)."""
    return {
        "rule": rule,
        "wildcards": dict(wildcards),
        "inputs": {str(p): input_digest(p, records_dir) for p in inputs if Path(p).exists()},
        "outputs": {str(p): path_digest(p) for p in outputs},
        # read back by input_digest: lets downstream jobs reuse these checksums
        "stats": {str(p): stat_signature(p) for p in outputs},
        "params": params,
        "config": config,
        "seed": config.get("seed"),
        "code": code,
        "environment": {
            "packages": package_versions(),
            "platform": platform.platform(),
            "executable": sys.executable,
            "device": device_info(),
        },
        "host": platform.node(),
        "started": started,
        "finished": now(),
    }


def write_job_records(record_: dict[str, Any], records_dir: str | Path = RECORDS_DIR) -> list[Path]:
    """Write the job's record once per output, so that any output finds its own."""
    written = []
    for output in record_["outputs"]:
        path = record_path(output, records_dir)
        write_json(path, {**record_, "output": output})
        written.append(path)
    return written
