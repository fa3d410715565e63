"""Integration test of the restoration family (low-dose CT denoising) through the real
Snakemake on a tiny config: every output, the metrics' structure and intervals, test
slices from test patients only, the report, a rerun that does nothing, and a clear error
for volumes whose axial slices cannot be projected."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from workflow_helpers import copy_workflow, edit_yaml, planned_jobs, snakemake

pytestmark = pytest.mark.integration

CASESTUDY = "config/casestudies/lowdose_ct.yaml"
METHODS = {"low-dose input", "gaussian", "nlm", "redcnn", "unet"}


def make_tiny_restoration(workdir, size=(48, 48, 8)) -> None:
    """lowdose_ct only: 8 small volumes, one slice each at two doses, two epochs."""

    def shrink(cs):
        cs["dataset"]["params"].update(n_patients=8, size=list(size))
        cs["split"].update(k=3, test_fraction=0.25)
        cs["restoration"].update(doses=[0.25, 0.1], slices=1, n_angles=90, n_bootstrap=50)
        cs["train"].update(epochs=2, batch_size=4)
        cs["models"]["unet"]["network"]["kwargs"] = {"features": [8, 8, 16, 32, 64, 8]}

    edit_yaml(workdir / CASESTUDY, shrink)
    edit_yaml(workdir / "config/config.yaml", lambda c: c.update(casestudies=[CASESTUDY]))


@pytest.fixture(scope="module")
def restoration_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("restoration") / "wf")
    make_tiny_restoration(workdir)
    snakemake(workdir)
    return workdir


def test_every_method_is_scored_at_every_dose_with_intervals(restoration_run):
    results = restoration_run / "results/lowdose_ct"
    metrics = json.loads((results / "evaluation/metrics.json").read_text())
    assert metrics["task"] == "restoration" and metrics["window_hu"] == [-160, 240]
    assert set(metrics["doses"]) == {"0.25", "0.1"}
    for dose in metrics["doses"].values():
        assert set(dose["methods"]) == METHODS and dose["best_baseline"] in {"gaussian", "nlm"}
        for scores in dose["methods"].values():
            for metric in ("psnr", "ssim"):
                s = scores[metric]
                assert s["ci_low"] <= s["mean"] <= s["ci_high"], (metric, s)
        for model in ("redcnn", "unet"):
            against = dose["comparisons"][model]
            assert set(against) == {"low-dose input", dose["best_baseline"]}
            assert against["low-dose input"]["psnr"]["method"] == "paired bootstrap over patients"
    # lower dose, noisier input
    assert (
        metrics["doses"]["0.1"]["methods"]["low-dose input"]["psnr"]["mean"]
        < metrics["doses"]["0.25"]["methods"]["low-dose input"]["psnr"]["mean"]
    )
    for figure in ("figures/denoising_panels.png", "figures/metrics_vs_dose.png"):
        assert (results / figure).stat().st_size > 10_000, figure
    for model in ("redcnn", "unet"):
        card = json.loads((results / f"models/{model}/fold_0/metadata.json").read_text())
        assert card["task"] == "restoration" and card["metrics"]["best_epoch"] in (1, 2)
        history = pd.read_csv(results / f"models/{model}/fold_0/history.tsv", sep="\t")
        assert list(history["epoch"]) == [1, 2] and history["val_psnr"].notna().all()
        assert (results / f"figures/{model}/fold_0/training_curves.png").stat().st_size > 10_000


def test_test_slices_come_from_test_patients_only(restoration_run):
    results = restoration_run / "results/lowdose_ct"
    manifest = pd.read_csv(results / "data/manifest.tsv", sep="\t", dtype=str)
    splits = json.loads((results / "split/splits.json").read_text())
    test_patients = set(manifest.set_index("image_id").loc[splits["test"], "patient_id"])
    table = pd.read_csv(results / "evaluation/per_image.tsv", sep="\t", dtype={"patient_id": str})
    assert set(table["patient_id"]) == test_patients and set(table["image_id"]) == set(splits["test"])
    # one slice per test volume, two doses, five methods
    assert len(table) == len(splits["test"]) * 2 * len(METHODS)


def test_report_has_the_restoration_figures_and_a_rerun_does_nothing(restoration_run):
    snakemake(restoration_run, "--report", "results/report.html")
    report = (restoration_run / "results/report.html").read_text(errors="replace")
    assert "denoising_panels.png" in report and "metrics_vs_dose.png" in report
    assert "Nothing to be done" in snakemake(restoration_run, "--dry-run").stdout


def test_an_evaluation_setting_reruns_the_evaluation_only(restoration_run):
    path = restoration_run / CASESTUDY
    before = path.read_bytes()
    try:
        edit_yaml(path, lambda cs: cs["restoration"].update(n_bootstrap=60))
        assert planned_jobs(snakemake(restoration_run, "--dry-run").stdout) == {"evaluate_restoration": 1, "all": 1}
        edit_yaml(path, lambda cs: cs["restoration"].update(n_bootstrap=50, window=[-200, 300]))
        jobs = planned_jobs(snakemake(restoration_run, "--dry-run").stdout)
        assert jobs.get("train") == 2 and "simulate_dose" not in jobs  # the window scales the networks' input
    finally:
        path.write_bytes(before)


def test_volumes_with_non_square_slices_are_refused_naming_the_image(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    make_tiny_restoration(workdir, size=(48, 40, 8))
    run = snakemake(workdir, "results/lowdose_ct/dose/pairs.npz", check=False)
    assert run.returncode != 0
    log = (workdir / "logs/lowdose_ct/simulate_dose.log").read_text()
    assert "abdomen_p0000" in log and "square axial slices" in log and "48 x 40 pixels" in log
    assert not (workdir / "results/lowdose_ct/dose/pairs.npz").exists()
