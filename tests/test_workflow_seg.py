"""Integration test of both segmentation case studies (brain tumour MRI, abdominal CT) on
tiny synthetic volumes, through the real Snakemake: every output, predictions on each
input's own grid, the report, and a rerun that does nothing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from workflow_helpers import SEGMENTATION_CASESTUDIES, copy_workflow, edit_yaml, make_tiny_segmentation, planned_jobs, snakemake

from casebook.layout import geometry_mismatches

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("seg") / "wf")
    make_tiny_segmentation(workdir)
    edit_yaml(workdir / "config/config.yaml", lambda c: c.update(casestudies=list(SEGMENTATION_CASESTUDIES)))
    # the run prints its plan (the 'Job stats' table) before it starts: no dry run needed
    run = snakemake(workdir)
    return workdir, run


def test_both_case_studies_train_and_evaluate_every_model(seg_run):
    workdir, run = seg_run
    jobs = planned_jobs(run.stdout + run.stderr)
    # the shared train and robustness rules (workflow/rules/train.smk, robustness.smk)
    # run the segmentation models too
    assert jobs["train"] == 4 and jobs["evaluate_seg"] == 4 and jobs["summarize_seg"] == 2
    assert jobs["robustness"] == 4 and jobs["robustness_summary"] == 2
    for cs, models, regions in (
        ("brain_tumour_mri", ("unet", "segresnet"), {"whole_tumour", "tumour_core", "enhancing_tumour"}),
        ("abdomen_ct", ("unet", "dynunet"), {"liver", "kidney", "spleen", "liver_lesion", "kidney_lesion"}),
    ):
        results = workdir / "results" / cs
        for model in models:
            metrics = json.loads((results / f"evaluation/{model}/fold_0/metrics.json").read_text())
            assert set(metrics["regions"]) == regions and metrics["task"] == "segmentation"
            for region in regions:
                dice = metrics["regions"][region]["dice"]
                assert 0.0 <= dice["ci_low"] <= dice["mean"] <= dice["ci_high"] <= 1.0
            assert metrics["volume"]["region"] in regions and metrics["volume"]["n"] == metrics["n_test_cases"]
            card = json.loads((results / f"models/{model}/fold_0/metadata.json").read_text())
            assert card["task"] == "segmentation" and np.prod(card["input"]["patch_size"]) <= 4096
            history = pd.read_csv(results / f"models/{model}/fold_0/history.tsv", sep="\t")
            assert list(history["epoch"]) == [1, 2] and history["val_dice"].between(0, 1).all()
            for figure in (
                f"evaluation/{model}/fold_0/overlays.png",
                f"evaluation/{model}/fold_0/bland_altman.png",
                f"figures/{model}/fold_0/training_curves.png",
            ):
                assert (results / figure).stat().st_size > 10_000, figure
        summary = pd.read_csv(results / "summary.tsv", sep="\t")
        assert len(summary) == 2 * len(regions) and summary["wilcoxon_p_vs_first"].notna().any()
        for figure in ("figures/dice_boxplot.png", "figures/model_comparison.png"):
            assert (results / figure).stat().st_size > 10_000


def test_predictions_lie_on_each_input_grid_with_its_label_values(seg_run):
    workdir, _ = seg_run
    for cs, values in (("brain_tumour_mri", {0, 1, 2, 4}), ("abdomen_ct", {0, 1, 2, 3, 4, 5})):
        results = workdir / "results" / cs
        test_ids = json.loads((results / "split/splits.json").read_text())["test"]
        predictions = results / "evaluation/unet/fold_0/predictions"
        assert sorted(p.name for p in predictions.glob("*.nii.gz")) == sorted(f"{i}.nii.gz" for i in test_ids)
        per_case = pd.read_csv(results / "evaluation/unet/fold_0/per_case.tsv", sep="\t")
        assert sorted(per_case["case_id"].unique()) == sorted(test_ids)
        for case_id in test_ids:
            image = sitk.ReadImage(str(results / f"data/images/{case_id}.nii.gz"))
            prediction = sitk.ReadImage(str(predictions / f"{case_id}.nii.gz"))
            assert geometry_mismatches(image, prediction) == []
            assert set(np.unique(sitk.GetArrayViewFromImage(prediction)).tolist()) <= values


def test_report_has_the_segmentation_figures_and_a_rerun_does_nothing(seg_run):
    workdir, _ = seg_run
    snakemake(workdir, "--report", "results/report.html")
    report = (workdir / "results/report.html").read_text(errors="replace")
    for name in ("overlays.png", "bland_altman.png", "dice_boxplot.png", "model_comparison.png"):
        assert name in report
    assert "Nothing to be done" in snakemake(workdir, "--dry-run").stdout


def test_robustness_curves_of_every_segmentation_model(seg_run):
    workdir, _ = seg_run
    for cs, models in (("brain_tumour_mri", ("unet", "segresnet")), ("abdomen_ct", ("unet", "dynunet"))):
        for model in models:
            table = pd.read_csv(workdir / f"results/{cs}/robustness/{model}/fold_0/robustness.tsv", sep="\t")
            # the clean point, then the one configured severity, of the one perturbation left on
            assert list(table["perturbation"]) == ["blur", "blur"] and list(table["severity"]) == [0.0, 2.0]
            assert table["dice"].between(0, 1).all()
        assert (workdir / f"results/{cs}/figures/robustness.png").stat().st_size > 0
