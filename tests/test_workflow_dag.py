"""The full default DAG plans, and lints, without running anything."""

from __future__ import annotations

import re

import pytest
import yaml
from workflow_helpers import copy_workflow, edit_yaml, planned_jobs, snakemake

pytestmark = pytest.mark.integration


def test_default_dag_dry_run(tmp_path):
    workdir = copy_workflow(tmp_path)
    jobs = planned_jobs(snakemake(workdir, "--dry-run").stdout)
    # fifteen case studies: two classifications with three models (two for the chest X-rays,
    # one for the nodules), two segmentations with two models each, four restorations
    # (low dose, thick slices, contrast, missing region) with two each, one generation with
    # two (diffusion on pixels and on latents), one federated classification, two
    # registrations (brain pairs, a cardiac cine) with one model each, three detections (nodules in CT, fractures in X-rays with three models each; masses in mammograms with two),
    # two comparisons (four arms each: CNN, ViT, pretrained CNN fine-tuned and probed; four losses or samplings)
    for rule in ("ingest", "check_geometry", "fingerprint", "figure_fingerprint", "split", "check_leakage"):
        assert jobs.get(rule) == 17, (rule, jobs)
    assert jobs.get("preprocess") == 3, jobs  # the federated study's classification cache too
    for rule in ("summarize", "preprocess_seg", "summarize_seg"):
        assert jobs.get(rule) == 2, (rule, jobs)
    # pneumonia_cxr: densenet_small on all 5 folds, resnet18 on fold 0; nodule_ct: one model
    # (7 classification fold models); the shared train rule also trains the 4 segmentation
    # models, the 4 x 2 restoration models, the two diffusion models (pixels, latents) and
    # the two registration models and the eight detectors
    assert jobs.get("train") == 7 + 4 + 8 + 2 + 2 + 8, jobs
    assert jobs.get("evaluate") == 7, jobs
    for rule in ("explain", "crossval"):  # once per model (its first fold)
        assert jobs.get(rule) == 3, (rule, jobs)
    # the shared robustness rule: once per classification model (3) and segmentation model (4)
    assert jobs.get("robustness") == 3 + 4, jobs
    for rule in ("select_model", "validation_figures"):
        assert jobs.get(rule) == 2, (rule, jobs)
    assert jobs.get("robustness_summary") == 4, jobs
    assert jobs.get("compare_models") == jobs.get("subgroups") == 1, jobs  # two models, and site/sex columns
    assert jobs.get("evaluate_seg") == 4, jobs
    assert jobs.get("figure_training") == 31, jobs
    simulations = ("simulate_dose", "simulate_thick_slices", "simulate_contrast", "simulate_missing_region")
    assert [jobs.get(rule) for rule in simulations] == [1] * 4, jobs
    assert jobs.get("evaluate_restoration") == 4, jobs
    assert jobs.get("downstream_restoration") == 2, jobs  # super-resolution and translation  # no robustness stage
    generation = ("prepare_generation", "train_judge", "sample_generation", "evaluate_generation", "utility_generation")
    assert [jobs.get(rule) for rule in generation] == [1, 1, 2, 1, 1], jobs  # two models sample, one utility study
    # federated: pooled, three sites alone, FedAvg, FedProx, FedAdam and a private FedAvg;
    # none of the classification family's usual rules
    assert [jobs.get(r) for r in ("federated_sites", "train_federated", "evaluate_federated")] == [1, 8, 1], jobs
    assert [jobs.get(r) for r in ("simulate_registration", "evaluate_registration", "cine_ejection_fraction")] == [2, 2, 1], jobs
    assert [jobs.get(r) for r in ("prepare_detection", "evaluate_detection")] == [3, 3], jobs
    # comparison: every arm with each of two seeds (its own job), one pretraining, a subset file per seed
    comparison = (
        "prepare_comparison",
        "comparison_subsets",
        "comparison_pretrain",
        "comparison_fit",
        "comparison_evaluate",
        "comparison_probe_figure",
    )
    assert [jobs.get(r) for r in comparison] == [2, 4, 1, 16, 2, 1], jobs
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


def test_slurm_profile_plans_grouped_jobs_with_config_resources(tmp_path):
    """The production profile loads and plans (no cluster needed for a dry run): small QC
    jobs share one group job, evaluation and explanation of a model share another, and
    every job carries the resources that config 'resources' gives its rule."""
    import shutil

    from workflow_helpers import REPO

    workdir = copy_workflow(tmp_path)
    shutil.copytree(REPO / "slurm", workdir / "slurm")
    out = snakemake(workdir, "--profile", "slurm", "--dry-run").stdout
    assert out.count("Group job qc") == 34  # per case study: geometry + fingerprint, split + leakage check
    # one per trained classification fold model (7): evaluation, with explanation and
    # robustness sweep for each model's first fold; and one per segmentation model (4): its
    # robustness sweep (the shared robustness rule's group)
    assert out.count("Group job inference") == 7 + 4
    blocks = {m.group(1): m.group(2) for m in re.finditer(r"rule (\w+):\n((?:    .*\n)+)", out)}
    assert "gpu=1" in blocks["train"] and "mem_mb=8000" in blocks["train"] and "runtime=240" in blocks["train"]
    # every training job, of every family (one shared rule), gets the train rule's row
    train_blocks = [m.group(1) for m in re.finditer(r"rule train:\n((?:    .*\n)+)", out)]
    assert len(train_blocks) == 7 + 4 + 2 + 2 + 2 + 2 + 2 + 2 + 3 + 3 + 2
    assert [b for b in train_blocks if "gpu=1" not in b or "mem_mb=8000" not in b] == []
    # the comparison family's fits and pretraining are training too: the train rule's row
    fits = [m.group(1) for m in re.finditer(r"rule comparison_(?:fit|pretrain):\n((?:    .*\n)+)", out)]
    assert len(fits) == 17 and [b for b in fits if "gpu=1" not in b or "mem_mb=8000" not in b] == []
    for cs in (
        "brain_tumour_mri",
        "abdomen_ct",
        "lowdose_ct",
        "mri_superres",
        "mri_translation",
        "mri_inpainting",
        "cxr_synthesis",
        "brain_registration",
        "cardiac_cine",
        "lung_nodule_detection",
        "fracture_xray",
        "mammography_detection",
    ):
        assert any(f"cs={cs}" in b for b in train_blocks), cs
    assert "mem_mb=2000" not in blocks["ingest"] and "mem_mb=4000" in blocks["ingest"]


def test_source_folds_plan_one_training_job_per_listed_fold(tmp_path):
    """LUNA16's subsets as the split (split.source_folds): 'folds: all' is every listed
    source fold, whatever k says."""
    workdir = copy_workflow(tmp_path)
    (workdir / "data/luna16").mkdir(parents=True)

    def official_folds(cs):
        cs["split"] = {"k": 5, "source_folds": {"test": ["subset9"], "folds": [f"subset{i}" for i in range(9)]}}
        cs["folds"] = "all"

    edit_yaml(workdir / "config/casestudies/luna16_detection.yaml", official_folds)
    (workdir / "luna16.yaml").write_text("casestudies: [config/casestudies/luna16_detection.yaml]\n")
    jobs = planned_jobs(snakemake(workdir, "--dry-run", "--configfile", "luna16.yaml").stdout)
    models = len(yaml.safe_load((workdir / "config/casestudies/luna16_detection.yaml").read_text())["models"])
    assert jobs.get("train") == 9 * models, jobs
