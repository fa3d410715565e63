"""`snakemake --profile slurm` on a real one-node SLURM cluster (tests/slurm_cluster.py).

The shared local run's outputs are copied in, less the chest X-ray DenseNet's first fold
(its model and evaluation): the profile (slurm/config.yaml) runs that training job and
the grouped inference job through sbatch, with only two test flags on the command line:
squeue as the status command (there is no slurmdbd, so sacct fails) and a short wait
before the first status check. (Every rule's plan under the profile, groups and
resources, is checked by a dry run of the whole DAG in tests/test_workflow_dag.py;
running every job of the tiny DAG here cost about 4 minutes of sbatch round trips, the
data side's jobs about 40 s more, and tested nothing more.) A training job is cancelled mid-run with scancel; the profile's retry resubmits
it with more memory, it resumes from its checkpoint, and the metrics are byte for byte
those of a local run of the same config.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from shared_run import CXR_EPOCHS, configure_tiny_run
from slurm_cluster import SlurmCluster
from workflow_helpers import REPO, copy_workflow

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slurm,
    pytest.mark.xdist_group("tiny_run"),  # with the other readers of the shared run (tests/conftest.py)
    pytest.mark.skipif(not SlurmCluster.available(), reason=str(SlurmCluster.why_unavailable())),
]

RUN = "pneumonia_cxr/models/densenet_small/fold_0"
TRAIN_COMMENT = "rule_train_wildcards_pneumonia_cxr_densenet_small_0"  # sbatch --comment of that job
TRAIN_LOG = "logs/pneumonia_cxr/train/densenet_small/fold_0.log"
# the shared local run's (tests/shared_run.py): 10, long enough to cancel the job mid-run
# (about a second per epoch)
EPOCHS = CXR_EPOCHS
CANCEL_AFTER_EPOCH = 3
# test-only settings, on the command line so that slurm/config.yaml stays production-ready
TEST_FLAGS = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2")
#: the branch run on the cluster: the first fold's evaluation, and what it needs
EVALUATION = "results/pneumonia_cxr/evaluation/densenet_small/fold_0"
TARGETS = (f"{EVALUATION}/metrics.json", f"{EVALUATION}/predictions.tsv")


#: what the shared run left beside the workflow, and what of it the cluster makes again
RUN_PARTS = ("results", "resources", "provenance", "logs", ".snakemake")
REDONE = (f"results/{RUN}", EVALUATION, f"provenance/results/{RUN}", f"provenance/{EVALUATION}")


def prepare(dest: Path, local_run: Path) -> Path:
    """The config and outputs (modification times kept) of the session's shared local
    run, with the SLURM profile, less the first fold's model and evaluation."""
    workdir = copy_workflow(dest)
    shutil.copytree(REPO / "slurm", workdir / "slurm")
    configure_tiny_run(workdir)
    for part in RUN_PARTS:
        if (local_run / part).exists():
            shutil.copytree(local_run / part, workdir / part, symlinks=True, dirs_exist_ok=True)
    for path in REDONE:
        shutil.rmtree(workdir / path, ignore_errors=True)
    (workdir / TRAIN_LOG).unlink(missing_ok=True)
    return workdir


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


@pytest.fixture
def local_run(tiny_run):
    """The uninterrupted local run of the same config: the session's shared run."""
    return tiny_run


def train_jobs(cluster: SlurmCluster) -> list[dict[str, str]]:
    """The training jobs this cluster has seen, oldest first (the comment names the rule)."""
    out = cluster.run("squeue", "-h", "--states=all", "-o", "%i|%k|%T").stdout
    jobs = [dict(zip(("id", "comment", "state"), line.split("|"))) for line in out.splitlines() if line.strip()]
    return sorted((j for j in jobs if j["comment"] == TRAIN_COMMENT), key=lambda j: int(j["id"]))


def last_epoch(log: Path) -> int:
    epochs = re.findall(r"INFO epoch (\d+):", log.read_text(errors="replace")) if log.is_file() else []
    return max(map(int, epochs), default=0)


def test_profile_runs_the_pipeline_through_sbatch_and_a_cancelled_training_job_resumes(cluster, local_run, tmp_path):
    workdir = prepare(tmp_path / "cluster_run", local_run)
    env = {**cluster.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{cluster.env['PATH']}", "MPLBACKEND": "Agg"}
    console = tmp_path / "snakemake.out"
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", *TEST_FLAGS, *TARGETS]
    with open(console, "w") as out:
        # its own session: on failure the whole group goes (Snakemake and its local jobs)
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            # wait until the training job is running and past a few epochs, then cancel it
            # a hang guard, not a speed check: generous for a loaded machine
            deadline = time.monotonic() + 900
            while not (train_jobs(cluster) and last_epoch(workdir / TRAIN_LOG) >= CANCEL_AFTER_EPOCH):
                assert proc.poll() is None, console.read_text()[-5000:]
                assert time.monotonic() < deadline, console.read_text()[-5000:] + cluster.log_tails()
                time.sleep(0.5)
            first = train_jobs(cluster)[0]
            first_info = cluster.scontrol_show_job(int(first["id"]))
            cluster.run("scancel", first["id"])
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = console.read_text()
    assert proc.returncode == 0, text[-6000:] + cluster.log_tails()

    # every job went through sbatch: Snakemake names the SLURM job ids, SLURM kept their logs
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", text)
    assert len(submitted) >= 3, text[-4000:]  # the training, its retry, the grouped inference
    slurm_logs = {p.stem for p in (workdir / "logs/slurm").rglob("*.log")}
    assert set(submitted) <= slurm_logs

    # the training job asked for the (fake) GPU that config 'resources' gives it
    assert "gpu:1" in first_info.get("TresPerJob", "") + first_info.get("TresPerNode", "") + first_info.get("JOB_GRES", "")

    # cancelled, resubmitted by the profile's retries with 1.5x the memory, resumed from its checkpoint
    jobs = train_jobs(cluster)
    assert [j["state"] for j in jobs] == ["CANCELLED", "COMPLETED"], jobs
    second_info = cluster.scontrol_show_job(int(jobs[1]["id"]))
    assert first_info["MinMemoryNode"] == "8000M" and second_info["MinMemoryNode"] == "12000M"
    resumed = re.search(r"resuming from \S+ after epoch (\d+)", (workdir / TRAIN_LOG).read_text())
    assert resumed and int(resumed.group(1)) >= CANCEL_AFTER_EPOCH

    # the interrupted cluster run ends exactly where the uninterrupted local run did
    for path in TARGETS:
        assert (workdir / path).read_bytes() == (local_run / path).read_bytes(), path
    assert "Group job inference" in text or "group inference" in text.lower(), text[-3000:]
    history = [pd.read_csv(run / f"results/{RUN}/history.tsv", sep="\t").drop(columns="seconds") for run in (workdir, local_run)]
    pd.testing.assert_frame_equal(*history, check_exact=True)
