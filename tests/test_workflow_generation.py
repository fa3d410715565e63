"""Integration test of the generation family (synthetic chest X-rays) through the real
Snakemake on a tiny config: every output, the canary of the memorization check, the
utility arms with their paired comparisons, the report, a rerun that does nothing, what
a sampling setting reruns, and the leakage guard of the utility study."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from workflow_helpers import copy_workflow, edit_yaml, planned_jobs, snakemake

pytestmark = pytest.mark.integration

CASESTUDY = "config/casestudies/cxr_synthesis.yaml"


def make_tiny_generation(workdir) -> None:
    """cxr_synthesis only: 40 patients at 16 px, two epochs (the latent model's
    autoencoder too), samplers of 3 and 5 steps, the utility study of the pixel model."""

    def shrink(cs):
        cs["dataset"]["params"].update(n_patients=40, size=16)
        cs["split"].update(k=3, test_fraction=0.25)
        cs["generation"].update(
            size=16, samplers=[{"sampler": "ddim", "steps": 3}, {"sampler": "ddim", "steps": 5}], n_per_class=8,
            judge={"epochs": 2, "batch_size": 32}, n_bootstrap=50, n_bootstrap_fd=20,
            utility={"fractions": [0.5, 1.0], "repeats": 1, "sampler": "ddim_5", "models": ["ddpm"]},
        )  # fmt: skip
        cs["train"].update(epochs=2, batch_size=16)
        cs["models"]["ddpm"]["network"]["kwargs"] = {"channels": [8, 16]}
        ldm = cs["models"]["ldm"]
        ldm["network"].update(kwargs={"channels": [8, 16]}, autoencoder={"epochs": 2, "kwargs": {"channels": [8, 16]}})
        ldm["train"] = {"epochs": 2}

    edit_yaml(workdir / CASESTUDY, shrink)
    edit_yaml(workdir / "config/config.yaml", lambda c: c.update(casestudies=[CASESTUDY]))


@pytest.fixture(scope="module")
def generation_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("generation") / "wf")
    make_tiny_generation(workdir)
    snakemake(workdir)
    return workdir


def test_samples_are_measured_and_the_canary_is_flagged(generation_run):
    results = generation_run / "results/cxr_synthesis"
    metrics = json.loads((results / "evaluation/metrics.json").read_text())
    assert metrics["fd_label"] == "FD (casebook judge features)"
    assert metrics["memorization"]["canary"]["planted_flagged"] is True
    table = pd.read_csv(results / "evaluation/samplers.tsv", sep="\t")
    assert list(zip(table["model"], table["sampler"])) == [("ddpm", "ddim_3"), ("ddpm", "ddim_5"), ("ldm", "ddim_3"), ("ldm", "ddim_5")]
    assert (table["n_samples"] == 16).all()
    assert (table["fd_ci_low"] <= table["fd"]).all() and (table["fd"] <= table["fd_ci_high"]).all()
    assert table[["precision", "recall", "judge_accuracy"]].apply(lambda c: c.between(0, 1)).all().all()
    memo = pd.read_csv(results / "evaluation/memorization.tsv", sep="\t")
    assert len(memo) == 64 and memo["nearest_train_image"].str.startswith("cxr_p").all()
    timing = pd.read_csv(results / "samples/ddpm/timing.tsv", sep="\t")
    assert (timing["images_per_second"] > 0).all()
    for figure in ("sample_grid", "nearest_neighbours", "sampler_steps"):
        assert (results / f"figures/{figure}.png").stat().st_size > 10_000, figure
    card = json.loads((results / "models/ddpm/fold_0/metadata.json").read_text())
    splits = json.loads((results / "split/splits.json").read_text())
    assert set(card["data"]["train_image_ids"]) == set(splits["folds"][0]["train"])
    # the latent model: its autoencoder trained first, on the same images, then frozen
    latent = json.loads((results / "models/ldm/fold_0/metadata.json").read_text())
    assert latent["autoencoder"]["shape"] == [3, 8, 8] and latent["autoencoder"]["scale"] > 0
    assert latent["data"]["train_image_ids"] == card["data"]["train_image_ids"]
    history = pd.read_csv(results / "models/ldm/fold_0/autoencoder/history.tsv", sep="\t")
    assert list(history["epoch"]) == [1, 2] and history["val_l1"].notna().all()
    assert not (results / "utility/ldm").exists()  # generation.utility.models: the pixel model only


def test_utility_arms_are_tested_on_real_images_with_paired_comparisons(generation_run):
    results = generation_run / "results/cxr_synthesis"
    utility = json.loads((results / "utility/ddpm/utility.json").read_text())
    arms = pd.DataFrame(utility["arms"])
    assert sorted(set(zip(arms["arm"], arms["fraction"]))) == [
        ("real + synthetic", 0.5), ("real + synthetic", 1.0), ("real only", 0.5), ("real only", 1.0), ("synthetic only", 0.0)
    ]  # fmt: skip
    assert (arms.loc[arms["arm"] == "synthetic only", "n_real"] == 0).all()
    assert (arms.loc[arms["arm"] == "real + synthetic", "n_synthetic"] == 16).all()
    half = arms[(arms["arm"] == "real only") & (arms["fraction"] == 0.5)]["n_real"].item()
    assert half < arms[(arms["arm"] == "real only") & (arms["fraction"] == 1.0)]["n_real"].item()
    for c in utility["real_plus_synthetic_minus_real"]:
        assert c["method"] == "paired bootstrap over patients" and c["ci_low"] <= c["difference"] <= c["ci_high"]
    assert (results / "figures/ddpm/utility_curve.png").stat().st_size > 10_000


def test_report_has_the_generation_figures_and_a_rerun_does_nothing(generation_run):
    snakemake(generation_run, "--report", "results/report.html")
    report = (generation_run / "results/report.html").read_text(errors="replace")
    for figure in ("sample_grid.png", "nearest_neighbours.png", "sampler_steps.png", "utility_curve.png"):
        assert figure in report, figure
    assert "Nothing to be done" in snakemake(generation_run, "--dry-run").stdout


def test_a_sampling_setting_resamples_without_retraining(generation_run):
    path = generation_run / CASESTUDY
    before = path.read_bytes()
    try:
        edit_yaml(path, lambda cs: cs["generation"].update(n_per_class=6))
        jobs = planned_jobs(snakemake(generation_run, "--dry-run").stdout)
        # both models resample; the utility study is the pixel model's only
        assert jobs == {"sample_generation": 2, "evaluate_generation": 1, "utility_generation": 1, "all": 1}
    finally:
        path.write_bytes(before)


def test_a_generator_trained_on_a_test_image_is_refused_by_the_utility_study(generation_run):
    results = generation_run / "results/cxr_synthesis"
    card_path = results / "models/ddpm/fold_0/metadata.json"
    before = card_path.read_bytes()
    splits = json.loads((results / "split/splits.json").read_text())
    card = json.loads(before)
    card["data"]["train_image_ids"].append(splits["test"][0])
    try:
        card_path.write_text(json.dumps(card))
        run = snakemake(generation_run, "--forcerun", "utility_generation", "results/cxr_synthesis/utility/ddpm/utility.json", check=False)
        assert run.returncode != 0
        log = (generation_run / "logs/cxr_synthesis/utility_generation/ddpm.log").read_text()
        assert "metadata.json" in log and "validation or test image" in log and splits["test"][0] in log
        assert not (results / "utility/ddpm/utility.json").exists()
    finally:
        card_path.write_bytes(before)
