"""Integration test of the comparison family through the real Snakemake on a tiny
config: every arm (a ResNet, a ViT, the ResNet from a contrastive pretraining, fine-tuned
and probed) trained with the same seeds at every fraction of labelled patients, the
subsets patient-level and nested, the scores with intervals and the paired differences,
the figures and the report, the fine-tuned model's lineage back to the pretraining, a
rerun that does nothing, an evaluation setting that reruns the evaluation only; the
prevalence study's subsets; and bad settings refused by name."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from workflow_helpers import audited_rules, copy_workflow, edit_yaml, planned_jobs, snakemake

pytestmark = pytest.mark.integration

CASESTUDY = "config/casestudies/cxr_comparison.yaml"
PREVALENCE = "config/casestudies/cxr_prevalence.yaml"
RESULTS = "results/cxr_comparison"
ARMS = ["resnet", "vit", "resnet_simclr", "resnet_simclr_probe"]


def make_tiny_comparison(workdir) -> None:
    """40 patients at 16 px, two seeds, two fractions, two epochs (pretraining three)."""

    def shrink(cs):
        cs["dataset"]["params"].update(n_patients=40, images_per_patient=[1, 2], size=16)
        cs["train"].update(epochs=2, batch_size=16)
        cs["comparison"].update(size=16, n_bootstrap=50, sweep={"kind": "label_fraction", "levels": [0.3, 1.0]})
        cs["comparison"]["pretraining"]["simclr"].update(epochs=3, batch_size=32)
        cs["models"]["vit"]["network"]["kwargs"].update(patch_size=4, num_layers=1)

    edit_yaml(workdir / CASESTUDY, shrink)
    edit_yaml(workdir / PREVALENCE, lambda cs: cs["dataset"]["params"].update(n_patients=60, size=16))
    edit_yaml(workdir / "config/config.yaml", lambda c: c.update(casestudies=[CASESTUDY, PREVALENCE]))


@pytest.fixture(scope="module")
def comparison_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("comparison") / "wf")
    make_tiny_comparison(workdir)
    snakemake(
        workdir, f"{RESULTS}/comparison/metrics.json", f"{RESULTS}/figures/comparison_probe.png", f"{RESULTS}/figures/embedding_simclr.png"
    )
    return workdir


def test_every_arm_is_scored_at_every_fraction_with_intervals(comparison_run):
    metrics = json.loads((comparison_run / RESULTS / "comparison/metrics.json").read_text())
    assert metrics["kind"] == "label_fraction" and metrics["seeds"] == [0, 1] and metrics["reference"] == "resnet"
    scores = pd.DataFrame(metrics["scores"])
    assert sorted(zip(scores["model"], scores["level"])) == sorted((m, f) for m in ARMS for f in (0.3, 1.0))
    for metric in ("auc", "auprc", "sensitivity"):
        assert (scores[f"{metric}_low"] <= scores[metric]).all() and (scores[metric] <= scores[f"{metric}_high"]).all(), metric
    diffs = pd.DataFrame(metrics["differences"])
    assert sorted(set(diffs["model"])) == sorted(ARMS[1:]) and (diffs["method"] == "paired bootstrap over patients").all()
    assert set(metrics["labels_saved"]["fraction"]) == set(ARMS)
    costs = pd.DataFrame(metrics["costs"]).set_index("model")
    assert costs.loc["resnet_simclr_probe", "trainable_parameters"] < costs.loc["resnet_simclr", "trainable_parameters"]
    assert costs.loc["resnet", "macs_per_image"] == costs.loc["resnet_simclr", "macs_per_image"] > 0
    for figure in ("comparison_curves", "comparison_cost", "comparison_differences", "comparison_probe", "embedding_simclr"):
        assert (comparison_run / RESULTS / f"figures/{figure}.png").stat().st_size > 10_000, figure


def test_subsets_are_training_patients_nested_and_the_same_for_every_arm(comparison_run):
    results = comparison_run / RESULTS
    splits = json.loads((results / "split/splits.json").read_text())
    manifest = pd.read_csv(results / "data/manifest.tsv", sep="\t", dtype=str).set_index("image_id")
    train_patients = set(manifest.loc[splits["folds"][0]["train"], "patient_id"])
    subsets = {str(s): json.loads((results / f"comparison/subsets/seed_{s}.json").read_text())["subsets"] for s in (0, 1)}
    for levels in subsets.values():
        assert set(levels["0.3"]) < set(levels["1"]) == train_patients
    assert subsets["0"]["0.3"] != subsets["1"]["0.3"]
    test_ids = set(splits["test"])
    for arm in ARMS:
        for seed in (0, 1):
            preds = pd.read_csv(results / f"comparison/arms/{arm}/seed_{seed}/predictions.tsv", sep="\t", dtype={"image_id": str})
            assert set(preds["image_id"]) == test_ids and preds["prob"].between(0, 1).all()
            costs = pd.read_csv(results / f"comparison/arms/{arm}/seed_{seed}/costs.tsv", sep="\t", dtype={"level": str})
            expected = [len(set(subsets[str(seed)][level])) for level in ("0.3", "1")]
            assert costs["train_patients"].tolist() == expected, (arm, seed)


def test_the_pretraining_saw_training_patients_only_and_the_fine_tuned_model_leads_back_to_it(comparison_run):
    results = comparison_run / RESULTS
    card = json.loads((results / "comparison/pretrain/simclr/card.json").read_text())
    splits = json.loads((results / "split/splits.json").read_text())
    manifest = pd.read_csv(results / "data/manifest.tsv", sep="\t", dtype=str).set_index("image_id")
    held_out = set(manifest.loc[splits["folds"][0]["val"] + splits["test"], "patient_id"])
    assert card["patients"] and not set(card["patients"]) & held_out
    rules = audited_rules(comparison_run, f"{RESULTS}/comparison/arms/resnet_simclr/seed_0/predictions.tsv")
    assert {"comparison_fit", "comparison_pretrain", "prepare_comparison", "comparison_subsets", "split", "ingest"} <= rules


def test_report_has_the_comparison_figures_and_a_rerun_does_nothing(comparison_run):
    targets = [f"{RESULTS}/comparison/metrics.json", f"{RESULTS}/figures/comparison_probe.png", f"{RESULTS}/figures/embedding_simclr.png"]
    assert "Nothing to be done" in snakemake(comparison_run, *targets, "--dry-run").stdout
    snakemake(comparison_run, *targets, "--report", f"{RESULTS}/report.html")
    report = (comparison_run / RESULTS / "report.html").read_text(errors="replace")
    assert all(
        f"{figure}.png" in report for figure in ("comparison_curves", "comparison_cost", "comparison_differences", "embedding_simclr")
    )


def test_an_evaluation_setting_reruns_the_evaluation_only_and_a_new_seed_trains_that_seed(comparison_run):
    path = comparison_run / CASESTUDY
    before = path.read_bytes()
    targets = [f"{RESULTS}/comparison/metrics.json"]
    try:
        edit_yaml(path, lambda cs: cs["comparison"].update(n_bootstrap=60))
        jobs = planned_jobs(snakemake(comparison_run, *targets, "--dry-run").stdout)
        assert jobs == {"comparison_evaluate": 1}, jobs
        edit_yaml(path, lambda cs: cs["comparison"].update(n_bootstrap=50, seeds=[0, 1, 2]))
        jobs = planned_jobs(snakemake(comparison_run, *targets, "--dry-run").stdout)
        assert jobs == {"comparison_subsets": 1, "comparison_fit": 4, "comparison_evaluate": 1}, jobs  # the new seed's
    finally:
        path.write_bytes(before)


def test_the_prevalence_study_thins_the_positives_of_the_training_patients(comparison_run):
    snakemake(comparison_run, "results/cxr_prevalence/comparison/subsets/seed_0.json")
    doc = json.loads((comparison_run / "results/cxr_prevalence/comparison/subsets/seed_0.json").read_text())
    manifest = pd.read_csv(comparison_run / "results/cxr_prevalence/data/manifest.tsv", sep="\t", dtype=str)
    positive = set(manifest[manifest["label"] == "1"]["patient_id"])
    assert doc["kind"] == "prevalence" and list(doc["subsets"]) == ["0.05", "0.15", "0.4"]
    for level, patients in doc["subsets"].items():
        assert abs(len(set(patients) & positive) / len(patients) - float(level)) < 0.05, level
    jobs = planned_jobs(snakemake(comparison_run, "--dry-run").stdout)
    assert jobs["comparison_fit"] == 8 and "comparison_pretrain" not in jobs  # 4 arms x 2 seeds, no pretraining


def test_bad_settings_are_refused_by_name(comparison_run):
    path = comparison_run / CASESTUDY
    before = path.read_bytes()
    try:
        edit_yaml(path, lambda cs: cs["models"]["resnet_simclr"]["network"].update(init="byol"))
        done = snakemake(comparison_run, "--dry-run", check=False)
        assert done.returncode != 0
        assert (
            "model 'resnet_simclr' names network.init 'byol', which is not among its comparison.pretraining jobs ['simclr']"
            in done.stdout + done.stderr
        )
        path.write_bytes(before)
        edit_yaml(path, lambda cs: cs["comparison"].update(sweep={"kind": "label_fraction", "levels": [0.01, 1.0]}))
        done = snakemake(comparison_run, f"{RESULTS}/comparison/subsets/seed_0.json", check=False)
        assert done.returncode != 0
        assert "splits.json (fold 0, seed 0): comparison.sweep.levels: label_fraction 0.01 leaves class" in done.stdout + done.stderr
        path.write_bytes(before)
        prevalence = comparison_run / PREVALENCE
        saved = prevalence.read_bytes()
        edit_yaml(prevalence, lambda cs: cs["comparison"].update(sweep={"kind": "prevalence", "levels": [0.2, 1.0]}))
        done = snakemake(comparison_run, "--dry-run", check=False)
        prevalence.write_bytes(saved)
        assert done.returncode != 0 and "a prevalence must be below 1" in done.stdout + done.stderr
    finally:
        path.write_bytes(before)
