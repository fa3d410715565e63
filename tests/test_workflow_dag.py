"""The full default DAG plans, and lints, without running anything."""

from __future__ import annotations

import re

import pytest

from workflow_helpers import copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.integration


def test_default_dag_dry_run(tmp_path):
    workdir = copy_workflow(tmp_path)
    jobs = planned_jobs(snakemake(workdir, "--dry-run").stdout)
    for rule in ("ingest", "split", "check_leakage", "preprocess", "train", "evaluate", "explain", "summarize"):
        assert jobs.get(rule) == 2, (rule, jobs)


def test_lint_reports_only_the_documented_conda_lint(tmp_path):
    # One environment (pyproject.toml) serves every rule: see the README's "Linting" section.
    workdir = copy_workflow(tmp_path)
    done = snakemake(workdir, "--lint", check=False)
    lints = re.findall(r"^\s+\* (.+?):?$", done.stdout + done.stderr, flags=re.M)
    assert lints, "expected the documented conda lint"
    assert set(lints) == {"Specify a conda environment or container for each rule.:"} or set(lints) == {
        "Specify a conda environment or container for each rule."
    }
