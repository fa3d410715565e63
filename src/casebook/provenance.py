"""Provenance records written beside every model and metrics file: code version,
config values, input checksums, environment, device, seed, start and end time.
"""

from __future__ import annotations

import datetime as dt
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
