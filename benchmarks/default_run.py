"""Wall time of the default run (the whole DAG on the embedded synthetic data), of a
no-op rerun, and of the report, in a fresh copy of the workflow.

    .venv/bin/python benchmarks/default_run.py [--cores 2] [--keep]

The ratio printed is the no-op rerun's time against the full run's, from the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cores", default="2")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy and print its path")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="casebook-default-run-"))
    for part in ("Snakefile", "workflow", "scripts", "config"):
        (shutil.copytree if (REPO / part).is_dir() else shutil.copy2)(REPO / part, tmp / part)
    snakemake = [sys.executable, "-m", "snakemake", "--cores", args.cores]
    full = timed(snakemake, tmp)
    noop = timed(snakemake, tmp)
    report = timed([sys.executable, "-m", "snakemake", "--report", "results/report.html"], tmp)
    print(f"default run      {full:8.1f} s")
    print(f"no-op rerun      {noop:8.1f} s   (ratio to default run {noop / full:.3f})")
    print(f"report           {report:8.1f} s")
    for metrics in sorted(tmp.glob("results/*/evaluation/*/fold_*/metrics.json")):
        m = json.loads(metrics.read_text())
        print(f"{metrics.relative_to(tmp / 'results')}: AUC {m['auc']:.3f} ({m['auc_ci_low']:.3f}-{m['auc_ci_high']:.3f})")
    if args.keep:
        print(f"kept: {tmp}")
    else:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
