"""Smoke tests of the private SLURM cluster helper (tests/slurm_cluster.py).

They check what the pipeline's SLURM integration tests rely on: batch jobs run, a (fake) GPU
can be requested and shows up in `scontrol show job`, scancel works, and stopping leaves nothing
running. Skipped unless SLURM and munge are installed (tests/install_slurm.sh) and we are root.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slurm,
    pytest.mark.skipif(not SlurmCluster.available(), reason=str(SlurmCluster.why_unavailable())),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


def test_batch_job_writes_its_output(cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "hello.txt"
    job = cluster.sbatch("--chdir", str(tmp_path), "-o", str(tmp_path / "job-%j.log"), "--wrap", f"echo hello from $SLURM_JOB_ID > {out}")
    assert cluster.wait_for(job, timeout=30) == "COMPLETED"
    assert out.read_text().strip() == f"hello from {job}"
    assert any(j["job_id"] == str(job) for j in cluster.squeue())  # still listed (MinJobAge)


@pytest.mark.parametrize("request_gpu", [["--gres=gpu:1"], ["--gpus=1"]], ids=["gres", "gpus"])
def test_gpu_job_gets_the_fake_gpu(cluster: SlurmCluster, tmp_path: Path, request_gpu) -> None:
    out = tmp_path / "gpu.txt"
    job = cluster.sbatch(*request_gpu, "-o", str(tmp_path / "job-%j.log"), "--wrap", f"echo $CUDA_VISIBLE_DEVICES > {out}")
    assert cluster.wait_for(job, timeout=30) == "COMPLETED"
    info = cluster.scontrol_show_job(job)
    # Not in info["TRES"]: without slurmdbd the GPU is not an accounted TRES.
    assert info["JOB_GRES"] == "gpu:1", info
    assert "gres:gpu:1" in info.get("TresPerNode", "") + info.get("TresPerJob", ""), info
    assert out.read_text().strip() == "0"  # slurmd exported the GPU to the job


def test_scancel_ends_a_running_job(cluster: SlurmCluster, tmp_path: Path) -> None:
    started = tmp_path / "started"
    job = cluster.sbatch("-o", str(tmp_path / "job-%j.log"), "--wrap", f"touch {started}; sleep 300")
    assert cluster.wait_for(job, timeout=30, states={"RUNNING"}) == "RUNNING"
    # Let the script fork its sleep: proctrack/linuxproc can miss a child forked at the very
    # moment of the cancel (see slurm_cluster.py); stop() cleans that up, this test should not.
    deadline = time.monotonic() + 10
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    cluster.run("scancel", str(job))
    start = time.monotonic()
    assert cluster.wait_for(job, timeout=15) in {"CANCELLED", None}
    assert time.monotonic() - start < 15
    time.sleep(0.5)  # let slurmstepd finish the kill
    assert not cluster.stray_job_pids(), "the cancelled job's processes still run"


def test_stop_ends_every_started_process(tmp_path: Path) -> None:
    # Its own cluster (next to the module's one, on other ports) so that stopping it does not
    # depend on test order; also shows that two clusters do not clash.
    c = SlurmCluster(tmp_path)
    with c:
        pids = c.pids
        assert set(pids) == {"munged", "slurmctld", "slurmd"}
        c.sbatch("-o", "/dev/null", "--wrap", "sleep 300")  # stop() must cancel it
    c.stop()  # a second stop is harmless
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists(), f"{name} (pid {pid}) still running"
    assert not c._step_sockets(), "a slurmstepd is still running"
    assert not c.stray_job_pids(), "a job process outlived the cluster"
    with pytest.raises(ProcessLookupError):
        os.kill(pids["slurmctld"], 0)
