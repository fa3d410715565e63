"""Wall-time overhead of 'snakemake --profile slurm' against a local run, on the tiny
pipeline (both default case studies, the tests' tiny config), in one run.

    .venv/bin/python benchmarks/slurm_overhead.py [--init-seconds 2]

Needs root and Debian's slurm-wlm and munge (tests/install_slurm.sh): it starts the
tests' private one-node cluster (tests/slurm_cluster.py) and stops it at the end. Both
runs use the same 2 cores; the ratio printed is SLURM wall time / local wall time.
The SLURM run keeps the production profile (slurm/config.yaml) plus the two test flags
that a cluster without slurmdbd needs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from slurm_cluster import SlurmCluster  # noqa: E402
from workflow_helpers import copy_workflow, make_tiny  # noqa: E402


def workdir(dest: Path) -> Path:
    copy_workflow(dest)
    shutil.copytree(REPO / "slurm", dest / "slurm")
    make_tiny(dest)
    return dest


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init-seconds", default="2", help="slurm-init-seconds-before-status-checks (plugin default 40)")
    args = parser.parse_args()
    if not SlurmCluster.available():
        raise SystemExit(f"cannot start a SLURM cluster here: {SlurmCluster.why_unavailable()}")
    tmp = Path(tempfile.mkdtemp(prefix="casebook-slurm-bench-"))
    base_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "MPLBACKEND": "Agg"}
    snakemake = [sys.executable, "-m", "snakemake"]
    local = timed([*snakemake, "--cores", "2"], workdir(tmp / "local"), base_env)
    with SlurmCluster(tmp / "cluster") as cluster:
        env = {**base_env, **{k: v for k, v in cluster.env.items() if k in ("SLURM_CONF", "PATH")}}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{cluster.env['PATH']}"
        flags = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", args.init_seconds]
        slurm = timed([*snakemake, "--profile", "slurm", *flags], workdir(tmp / "slurm"), env)
        jobs = len(cluster.run("squeue", "-h", "--states=all", "-o", "%i").stdout.split())
    print(f"tiny pipeline, 2 cores: local {local:.1f} s, SLURM {slurm:.1f} s ({jobs} SLURM jobs)")
    print(
        f"ratio SLURM / local: {slurm / local:.2f} (overhead {slurm - local:+.1f} s, {(slurm - local) / max(jobs, 1):.1f} s per SLURM job)"
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
