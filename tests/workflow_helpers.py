"""Helpers for the integration tests: a copy of the workflow in a temporary folder,
with a tiny config, run by the real Snakemake in a subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_PARTS = ("Snakefile", "workflow", "scripts", "config")


def copy_workflow(dest: Path) -> Path:
    """Copy what Snakemake needs (not results, not the venv) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part)
        else:
            shutil.copy2(src, dest / part)
    return dest


def edit_yaml(path: Path, update) -> None:
    """Load a YAML file, let ``update`` change the dict in place, write it back."""
    data = yaml.safe_load(path.read_text())
    update(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def make_tiny(workdir: Path) -> None:
    """Shrink both default case studies so that the whole DAG runs in about a minute."""

    def cxr(cs):
        cs["dataset"]["params"].update(n_patients=60, size=32)
        cs["preprocess"]["size"] = [32, 32]
        cs["train"].update(epochs=6, batch_size=16)
        cs["evaluate"]["n_bootstrap"] = 100
        cs["explain"]["images_per_class"] = 2

    def ct(cs):
        cs["dataset"]["params"].update(n_patients=40)
        cs["preprocess"]["size"] = [24, 24, 24]
        cs["train"].update(epochs=2, batch_size=8)
        cs["evaluate"]["n_bootstrap"] = 100
        cs["explain"]["images_per_class"] = 2

    edit_yaml(workdir / "config/casestudies/pneumonia_cxr.yaml", cxr)
    edit_yaml(workdir / "config/casestudies/nodule_ct.yaml", ct)


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the real Snakemake CLI in ``workdir``; output captured as text."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}")
    return done


def planned_jobs(output: str) -> dict[str, int]:
    """Job counts per rule from the 'Job stats' table that Snakemake prints."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Job stats:"):
            for row in lines[i + 3 :]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
                    break
                counts[parts[0]] = int(parts[1])
            break
    return counts
