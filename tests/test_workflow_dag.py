"""The full default DAG plans, and lints, without running anything."""

from __future__ import annotations

import re

import pytest

from workflow_helpers import copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.integration


def test_default_dag_dry_run(tmp_path):
    workdir = copy_workflow(tmp_path)
    jobs = planned_jobs(snakemake(workdir, "--dry-run").stdout)
    # two case studies; three models (two for the chest X-rays, one for the nodules)
    for rule in ("ingest", "check_geometry", "fingerprint", "figure_fingerprint", "split", "check_leakage", "preprocess", "summarize"):
        assert jobs.get(rule) == 2, (rule, jobs)
    for rule in ("train", "evaluate", "explain", "figure_training"):
        assert jobs.get(rule) == 3, (rule, jobs)
    assert "download" not in jobs and "extract" not in jobs  # the default run is offline


def test_lint_reports_only_the_documented_conda_lint(tmp_path):
    # One environment (pyproject.toml) serves every rule: see the README's "Linting" section.
    workdir = copy_workflow(tmp_path)
    done = snakemake(workdir, "--lint", check=False)
    lints = re.findall(r"^\s+\* (.+?):?$", done.stdout + done.stderr, flags=re.M)
    assert lints, "expected the documented conda lint"
    assert set(lints) == {"Specify a conda environment or container for each rule.:"} or set(lints) == {
        "Specify a conda environment or container for each rule."
    }
