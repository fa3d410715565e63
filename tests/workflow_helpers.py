"""Helpers for the integration tests: a copy of the workflow in a temporary folder,
with a tiny config, run by the real Snakemake in a subprocess."""

from __future__ import annotations

import json
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


SEGMENTATION_CASESTUDIES = ("config/casestudies/brain_tumour_mri.yaml", "config/casestudies/abdomen_ct.yaml")
CLASSIFICATION_CASESTUDIES = ("config/casestudies/pneumonia_cxr.yaml", "config/casestudies/nodule_ct.yaml")


def make_tiny(workdir: Path, *, segmentation: bool = False) -> None:
    """Shrink the default case studies so that the whole DAG runs in about a minute.

    The classification case studies only, and the segmentation ones too (shrunk) when
    ``segmentation`` is set: tests of the classification DAG should not pay for 3D
    training, nor for other families (each has its own integration test)."""

    def cxr(cs):
        cs["dataset"]["params"].update(n_patients=60, size=32)
        cs["preprocess"]["size"] = [32, 32]
        cs["train"].update(epochs=6, batch_size=16)
        cs["evaluate"]["n_bootstrap"] = 100
        cs["split"]["k"] = 3
        cs["folds"] = [0, 1]  # cross-validation: two fold jobs of densenet_small
        cheap_validation(cs, mask_size=8)

    def ct(cs):
        cs["dataset"]["params"].update(n_patients=40)
        cs["preprocess"]["size"] = [24, 24, 24]
        cs["train"].update(epochs=2, batch_size=8)
        cs["evaluate"]["n_bootstrap"] = 100
        cheap_validation(cs, mask_size=12)

    edit_yaml(workdir / "config/casestudies/pneumonia_cxr.yaml", cxr)
    edit_yaml(workdir / "config/casestudies/nodule_ct.yaml", ct)
    kept = CLASSIFICATION_CASESTUDIES + (SEGMENTATION_CASESTUDIES if segmentation else ())
    if segmentation:
        make_tiny_segmentation(workdir)
    edit_yaml(workdir / "config/config.yaml", lambda c: c.update(casestudies=[p for p in c["casestudies"] if p in kept]))


def cheap_validation(cs: dict, *, mask_size: int) -> None:
    """Explanations of a few images with few samples, and a two-level robustness sweep of
    three perturbations: every method and figure still runs, in seconds."""
    cs["explain"] = {
        "images_per_class": 2,
        "max_images": 8,
        "deletion_steps": 5,
        "occlusion": {"mask_size": mask_size, "overlap": 0.0},
        "smoothgrad": {"samples": 2},
        "integrated_gradients": {"steps": 4},
    }
    cs["robustness"] = {
        "perturbations": {
            "noise": [0.5, 2.0], "blur": [], "bias_field": [], "motion": [1.0], "ghosting": [],
            "spike": [], "gamma": [], "downsampling": [2.0],
        }
    }  # fmt: skip


def make_tiny_segmentation(workdir: Path) -> None:
    """Shrink both segmentation case studies: 8 small volumes, 16^3 patches, 2 epochs."""

    def shrink(cs, size, spacing):
        cs["dataset"]["params"].update(n_patients=8, size=size, spacing=spacing)
        cs["split"].update(k=3, test_fraction=0.25)
        cs["segmentation"].update(max_patch_voxels=4096, samples_per_volume=2)
        cs["train"].update(epochs=2, batch_size=2)
        cs["evaluate"]["n_bootstrap"] = 50
        cs["robustness"] = {"perturbations": {name: [] for name in cs["robustness"]["perturbations"]} | {"blur": [2.0]}}

    edit_yaml(workdir / "config/casestudies/brain_tumour_mri.yaml", lambda cs: shrink(cs, [32, 32, 24], [6.0, 6.0, 7.0]))
    edit_yaml(workdir / "config/casestudies/abdomen_ct.yaml", lambda cs: shrink(cs, [32, 32, 16], [10.0, 10.0, 15.0]))


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


def audited_rules(workdir: Path, target: str) -> set[str]:
    """The rules of every step in ``casebook audit``'s lineage of ``target`` (the real CLI)."""
    cmd = [sys.executable, "-m", "casebook.cli", "audit", target, "--format", "json", "--no-stale-check"]
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rules, stack = set(), [json.loads(done.stdout)["lineage"]]
    while stack:
        step = stack.pop()
        rules.add(step["rule"])
        stack += step["inputs"]
    return rules
