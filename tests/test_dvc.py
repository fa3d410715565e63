"""DVC for real: the project's dvc.yaml reproduces the tiny pipeline, a second repro does
nothing, metrics and plots read the pipeline's files, and a push to a folder remote lets a
fresh clone pull every artifact back byte for byte and pass ``casebook audit``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from shared_run import configure_tiny_run
from workflow_helpers import REPO, copy_workflow, edit_yaml

# with the other readers of the shared run on one pytest-xdist worker (tests/conftest.py)
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("tiny_run")]

METRIC = "results/pneumonia_cxr/evaluation/densenet_small/fold_0/metrics.json"
FIGURE = "results/nodule_ct/evaluation/densenet_small/fold_0/roc.png"
# what dvc.yaml needs beside the workflow: its dependencies and DVC's own files
DVC_PARTS = ("dvc.yaml", ".dvcignore", ".dvc/config", ".gitignore", "pyproject.toml", "constraints.txt", "src/casebook")


def _env() -> dict[str, str]:
    # the stages call 'snakemake' from PATH: the virtualenv running the tests
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", "MPLBACKEND": "Agg"}


def run(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=1200)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}")
    return done


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "dvc", *args, check=check)


def git(cwd: Path, *args: str) -> str:
    return run(cwd, "git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args).stdout


def tracked_outputs(repo: Path) -> list[str]:
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return [next(iter(out)) if isinstance(out, dict) else out for stage in stages.values() for out in stage["outs"]]


def files_under(root: Path, out: str) -> dict[str, bytes]:
    path = root / out
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def without_segmentation(repo: Path) -> None:
    """Drop the segmentation, restoration, generation, federated, registration, detection and comparison case studies' artifacts from dvc.yaml, as
    make_tiny drops them from the config: DVC's mechanics are the same for every case
    study."""
    seg = (
        "results/brain_tumour_mri",
        "results/abdomen_ct",
        "results/lowdose_ct",
        "results/mri_superres",
        "results/mri_translation",
        "results/mri_inpainting",
        "results/cxr_synthesis",
        "results/cxr_federated",
        "results/brain_registration",
        "results/cardiac_cine",
        "results/lung_nodule_detection",
        "results/fracture_xray",
        "results/mammography_detection",
        "results/cxr_comparison",
        "results/cxr_prevalence",
    )

    def drop(dvc_yaml):
        stage = dvc_yaml["stages"]["casebook"]
        stage["outs"] = [o for o in stage["outs"] if not str(next(iter(o)) if isinstance(o, dict) else o).startswith(seg)]
        dvc_yaml["metrics"] = [m for m in dvc_yaml["metrics"] if not m.startswith(seg)]
        dvc_yaml["plots"] = [p for p in dvc_yaml["plots"] if not any(str(k).startswith(seg) for k in next(iter(p.values())).get("y", {}))]

    edit_yaml(repo / "dvc.yaml", drop)


#: what a run leaves beside the workflow: copied from the session's shared run
RUN_PARTS = ("results", "resources", "provenance", "logs", ".snakemake")


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, tiny_run):
    """A git repository of the project with the config of the session's shared run
    (tests/shared_run.py) and that run's outputs, reproduced by 'dvc repro' (no lock yet):
    DVC runs both stages, whose Snakemake finds the work done (modification times kept)
    and writes the report. Training the tiny pipeline again here cost about 80 s and
    tested nothing of DVC's."""
    repo = copy_workflow(tmp_path_factory.mktemp("dvc") / "repo")
    for part in DVC_PARTS:
        src, dest = REPO / part, repo / part
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest)
    configure_tiny_run(repo)
    without_segmentation(repo)
    for part in RUN_PARTS:
        if (tiny_run / part).exists():
            shutil.copytree(tiny_run / part, repo / part, symlinks=True, dirs_exist_ok=True)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tiny casebook")
    first = dvc(repo, "repro")
    return repo, first


def test_repro_from_clean_runs_both_stages_and_writes_the_lock(reproduced):
    repo, first = reproduced
    assert "Running stage 'raw_data'" in first.stdout and "Running stage 'casebook'" in first.stdout
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"raw_data", "casebook"}
    for out in tracked_outputs(repo):
        assert (repo / out).exists(), out
    assert (repo / "resources/inventory.json").is_file()
    assert (repo / "results/report.html").stat().st_size > 0


def test_a_second_repro_does_nothing(reproduced):
    repo, _ = reproduced
    before = {p: p.stat().st_mtime_ns for p in (repo / "results").rglob("*") if p.is_file()}
    second = dvc(repo, "repro")
    assert "Running stage" not in second.stdout
    assert "didn't change" in second.stdout
    after = {p: p.stat().st_mtime_ns for p in (repo / "results").rglob("*") if p.is_file()}
    assert after == before
    assert "up to date" in dvc(repo, "status").stdout.lower()


def test_metrics_show_reads_the_pipelines_metrics(reproduced):
    repo, _ = reproduced
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    data = shown[""]["data"][METRIC]["data"]
    assert data["auc"] == json.loads((repo / METRIC).read_text())["auc"]
    assert len(shown[""]["data"]) == 3  # three models of the default run


def test_plots_show_renders_the_roc_and_training_curves(reproduced):
    repo, _ = reproduced
    dvc(repo, "plots", "show", "-o", "dvc_plots")
    html = (repo / "dvc_plots/index.html").read_text()
    for title in ("ROC curves on the held-out test sets", "Validation AUC per epoch", "Training loss per epoch"):
        assert title in html
    assert '"fpr"' in html and '"val_auc"' in html


def test_push_then_a_fresh_clone_pulls_every_artifact_byte_for_byte_and_passes_the_audit(reproduced, tmp_path):
    repo, _ = reproduced
    remote = tmp_path / "remote"
    dvc(repo, "remote", "add", "--default", "store", str(remote))
    dvc(repo, "push")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "dvc.lock and remote")
    assert "dvc.lock" in git(repo, "ls-files")

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    assert not (clone / "results/report.html").exists()
    dvc(clone, "pull")
    for out in tracked_outputs(repo):
        original, pulled = files_under(repo, out), files_under(clone, out)
        assert pulled.keys() == original.keys(), out
        assert [k for k in original if pulled[k] != original[k]] == [], out

    for path in (METRIC, FIGURE):
        audit = run(clone, sys.executable, "-m", "casebook.cli", "audit", path, check=False)
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert "missing" not in audit.stdout and "modified" not in audit.stdout

    # a tampered metrics file: DVC's diff shows the change and the audit names the file
    tampered = json.loads((clone / METRIC).read_text())
    tampered["auc"] = 0.5
    (clone / METRIC).write_text(json.dumps(tampered, indent=2))
    diff = json.loads(dvc(clone, "metrics", "diff", "--json").stdout)
    assert diff[METRIC]["auc"]["new"] == 0.5
    audit = run(clone, sys.executable, "-m", "casebook.cli", "audit", METRIC, "--no-stale-check", check=False)
    assert audit.returncode != 0 and METRIC in audit.stdout + audit.stderr
