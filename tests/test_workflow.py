"""Integration tests: the real Snakemake runs the whole DAG on tiny synthetic data."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from shared_run import configure_tiny_run
from workflow_helpers import copy_workflow, edit_yaml, planned_jobs, snakemake

# with the other readers of the shared run on one pytest-xdist worker (tests/conftest.py)
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("tiny_run")]

CASESTUDIES = ("pneumonia_cxr", "nodule_ct")
RUN = "densenet_small/fold_0"


@pytest.fixture
def tiny(tiny_run):
    """The session's one tiny run of the default DAG (conftest.py, tests/shared_run.py),
    shared with the other modules: a test that changes it puts it back as it was."""
    return tiny_run


def expected_outputs(cs: str) -> list[str]:
    return [
        f"results/{cs}/data/manifest.tsv",
        f"results/{cs}/data/dataset.json",
        f"results/{cs}/split/splits.json",
        f"results/{cs}/split/leakage_check.json",
        f"results/{cs}/preprocess/images.npy",
        f"results/{cs}/models/{RUN}/model.pt",
        f"results/{cs}/models/{RUN}/history.tsv",
        f"results/{cs}/models/{RUN}/metadata.json",
        f"results/{cs}/models/{RUN}/provenance.json",
        f"results/{cs}/evaluation/{RUN}/predictions.tsv",
        f"results/{cs}/evaluation/{RUN}/metrics.json",
        f"results/{cs}/evaluation/{RUN}/provenance.json",
        f"results/{cs}/evaluation/{RUN}/roc.png",
        f"results/{cs}/evaluation/{RUN}/confusion.png",
        f"results/{cs}/explain/{RUN}/attributions.png",
        f"results/{cs}/explain/{RUN}/faithfulness.png",
        f"results/{cs}/explain/{RUN}/sanity.png",
        f"results/{cs}/explain/{RUN}/explain.json",
        f"results/{cs}/robustness/{RUN}/robustness.tsv",
        f"results/{cs}/robustness/{RUN}/robustness.png",
        f"results/{cs}/crossval/densenet_small/crossval.json",
        f"results/{cs}/validation/selection.json",
        f"results/{cs}/figures/fold_spread.png",
        f"results/{cs}/figures/reliability.png",
        f"results/{cs}/figures/robustness.png",
        f"results/{cs}/figures/{RUN}/training_curves.png",
        f"results/{cs}/figures/samples.png",
        f"results/{cs}/figures/split.png",
        f"results/{cs}/figures/model_comparison.png",
        f"results/{cs}/summary.html",
        f"logs/{cs}/train/{RUN}.log",
    ]


@pytest.mark.parametrize("cs", CASESTUDIES)
def test_every_expected_output_exists(tiny, cs):
    missing = [p for p in expected_outputs(cs) if not (tiny / p).is_file() or (tiny / p).stat().st_size == 0]
    assert not missing


@pytest.mark.parametrize("cs", CASESTUDIES)
def test_metrics_are_in_range_with_cis(tiny, cs):
    metrics = json.loads((tiny / f"results/{cs}/evaluation/{RUN}/metrics.json").read_text())
    for key in ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1"):
        assert 0.0 <= metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"] <= 1.0, key
    assert all(k == k.lower() and " " not in k for k in metrics)
    predictions = pd.read_csv(tiny / f"results/{cs}/evaluation/{RUN}/predictions.tsv", sep="\t")
    assert len(predictions) == metrics["n_test_images"]
    assert predictions[["prob_0", "prob_1"]].sum(axis=1).round(4).eq(1).all()


def test_cxr_model_separates_the_classes(tiny):
    # an untrained or broken network scores about 0.5 here
    metrics = json.loads((tiny / f"results/pneumonia_cxr/evaluation/{RUN}/metrics.json").read_text())
    assert metrics["auc"] > 0.75


def test_test_set_is_patient_disjoint_from_training(tiny):
    manifest = pd.read_csv(tiny / "results/pneumonia_cxr/data/manifest.tsv", sep="\t")
    splits = json.loads((tiny / "results/pneumonia_cxr/split/splits.json").read_text())
    patient = manifest.set_index("image_id")["patient_id"]
    train = set(patient[splits["folds"][0]["train"]])
    assert train.isdisjoint(patient[splits["test"]])
    assert manifest.groupby("patient_id").size().max() > 1  # several images per patient


@pytest.mark.parametrize("kind", ["models", "evaluation"])
def test_provenance_is_written_beside_models_and_metrics(tiny, kind):
    record = json.loads((tiny / f"results/pneumonia_cxr/{kind}/{RUN}/provenance.json").read_text())
    assert set(record) >= {"code", "config", "inputs", "environment", "device", "seed", "started", "finished"}
    assert {"commit", "dirty"} <= set(record["code"])
    assert record["inputs"] and all(v.startswith("sha256:") for v in record["inputs"].values())
    assert record["environment"]["packages"]["monai"] == "1.6.1"
    assert record["started"] <= record["finished"]


def test_model_card(tiny):
    card = json.loads((tiny / f"results/nodule_ct/models/{RUN}/metadata.json").read_text())
    assert card["input"]["spatial_dims"] == 3
    assert card["output"]["class_names"] == ["benign", "malignant"]
    assert "not for clinical use" in card["intended_use"]
    history = pd.read_csv(tiny / f"results/nodule_ct/models/{RUN}/history.tsv", sep="\t")
    assert list(history.columns) == ["epoch", "train_loss", "val_loss", "val_auc", "val_accuracy", "lr", "seconds"]
    assert len(history) == 2


# ---- provenance and audit -------------------------------------------------------------

METRICS = f"results/pneumonia_cxr/evaluation/{RUN}/metrics.json"


def audit(workdir, path, *args):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "casebook.cli", "audit", path, *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("cs", CASESTUDIES)
def test_every_output_of_every_rule_has_a_provenance_record(tiny, cs):
    # files inside the data folder belong to the folder, which is the ingest rule's output
    outputs = [p for p in expected_outputs(cs) if not p.startswith("logs/") and "/data/" not in p]
    outputs += [f"results/{cs}/data", f"results/{cs}/qc/plan.json"]
    for output in outputs:
        record = json.loads((tiny / "provenance" / f"{output}.json").read_text())
        assert record["output"] == output and record["outputs"][output].startswith(("sha256:", "tree-sha256:"))
        assert record["code"]["hashes"].keys() == {"package", "scripts", "workflow"} and record["seed"] == 42
        assert record["environment"]["packages"]["torch"] and record["started"] <= record["finished"]


def test_audit_traces_a_metric_back_to_the_generated_data(tiny):
    done = audit(tiny, METRICS, "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["problems"] == []
    rules, stack = set(), [report["lineage"]]
    while stack:
        step = stack.pop()
        rules.add(step["rule"])
        assert step["status"] == "ok", step["path"]
        stack += step["inputs"]
    assert {"evaluate", "train", "preprocess", "split", "check_leakage", "ingest"} <= rules
    text = audit(tiny, METRICS)
    assert text.returncode == 0 and text.stdout.splitlines()[0].startswith(METRICS)
    assert "[ingest cs=pneumonia_cxr]" in text.stdout


def test_audit_names_a_tampered_file_upstream_or_not(tiny):
    for victim in (METRICS, "results/pneumonia_cxr/preprocess/index.tsv"):
        path = tiny / victim
        original, times = path.read_bytes(), path.stat()
        try:
            path.write_bytes(original + b" ")
            done = audit(tiny, METRICS, "--no-stale-check")
        finally:  # bytes and times back, or Snakemake would see a newer input later
            path.write_bytes(original)
            os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
        assert done.returncode == 1
        assert f"{victim}: checksum differs from the record" in done.stderr
    assert audit(tiny, METRICS, "--no-stale-check").returncode == 0


def test_audit_reports_results_stale_after_a_config_or_code_change(tiny):
    config = tiny / "config/casestudies/pneumonia_cxr.yaml"
    script = tiny / "scripts/evaluate.py"
    originals = {config: config.read_text(), script: script.read_text()}
    script_times = script.stat()
    try:
        edit_yaml(config, lambda cs: cs["train"].update(lr=0.002))
        done = audit(tiny, METRICS)
        assert done.returncode == 1
        assert f"results/pneumonia_cxr/models/{RUN}/model.pt: stale: its config values changed" in done.stderr
        config.write_text(originals[config])
        script.write_text(originals[script] + "# an edit\n")
        done = audit(tiny, METRICS, "--no-stale-check")
        assert done.returncode == 1 and f"{METRICS}: stale: code changed since it was made (scripts)" in done.stderr
    finally:
        for path, text in originals.items():
            path.write_text(text)
        # Snakemake tells a changed script by its mtime: put it back too
        os.utime(script, ns=(script_times.st_atime_ns, script_times.st_mtime_ns))


def test_rerun_with_nothing_changed_does_nothing(tiny):
    done = snakemake(tiny, "--dry-run")
    assert "Nothing to be done" in done.stdout + done.stderr


def test_changed_learning_rate_reruns_only_downstream_jobs(tiny):
    path = tiny / "config/casestudies/pneumonia_cxr.yaml"
    original = path.read_text()
    try:
        edit_yaml(path, lambda cs: cs["train"].update(lr=0.002))
        jobs = planned_jobs(snakemake(tiny, "--dry-run").stdout)
    finally:
        path.write_text(original)
    # both CXR models (densenet_small on folds 0 and 1, resnet18 on fold 0) train with the
    # case study's learning rate; nothing upstream reruns
    downstream = {"crossval": 2, "explain": 2, "robustness": 2}
    per_case_study = ("summarize", "select_model", "compare_models", "subgroups", "validation_figures", "robustness_summary")
    assert jobs == {"all": 1, "train": 3, "evaluate": 3, "figure_training": 3, **downstream, **{r: 1 for r in per_case_study}}


def test_model_comparison_covers_every_model(tiny):
    summary = pd.read_csv(tiny / "results/pneumonia_cxr/summary.tsv", sep="\t")
    assert sorted(summary["model"]) == ["densenet_small", "resnet18"]
    assert summary["selected"].sum() == 1
    assert list(summary.set_index("model")["n_folds"]) == [2, 1]


def test_grad_cam_concentrates_on_the_lesions(tiny):
    # the lesion holds more CAM energy than its share of the image (MONAI's default
    # CAM post-processing flips magnitudes; a flipped map scores below 1 here)
    gradcam = json.loads((tiny / f"results/pneumonia_cxr/explain/{RUN}/explain.json").read_text())["methods"]["gradcam"]
    assert gradcam["enrichment"] > 1.0


def test_cross_validation_pools_folds_and_selects_on_validation_only(tiny):
    cv = json.loads((tiny / "results/pneumonia_cxr/crossval/densenet_small/crossval.json").read_text())
    assert cv["folds"] == [0, 1] and len(cv["per_fold"]) == 2
    splits = json.loads((tiny / "results/pneumonia_cxr/split/splits.json").read_text())
    oof = pd.read_csv(tiny / "results/pneumonia_cxr/crossval/densenet_small/predictions_oof.tsv", sep="\t", dtype={"image_id": str})
    assert sorted(oof["image_id"]) == sorted(splits["folds"][0]["val"] + splits["folds"][1]["val"])
    test = pd.read_csv(tiny / "results/pneumonia_cxr/crossval/densenet_small/predictions_test.tsv", sep="\t", dtype={"image_id": str})
    assert sorted(test["image_id"]) == sorted(splits["test"])
    assert 0.5 < cv["test"]["auc"] <= 1 and cv["test"]["auc_delong_ci_low"] <= cv["test"]["auc"]
    # the selection job read out-of-fold predictions and nothing else
    record = json.loads((tiny / "provenance/results/pneumonia_cxr/validation/selection.json.json").read_text())
    assert record["inputs"] and all(path.endswith("predictions_oof.tsv") for path in record["inputs"]), record["inputs"]


def strict_json(path):
    """JSON as other tools read it: NaN and Infinity are not JSON."""

    def refuse(constant):
        raise ValueError(f"{path}: {constant} is not valid JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_validation_outputs_are_strict_json(tiny):
    root = tiny / "results/pneumonia_cxr"
    for path in [
        *root.glob("crossval/*/crossval.json"),
        root / "validation/selection.json",
        *root.glob("robustness/*/*/robustness.json"),
        *root.glob("explain/*/*/explain.json"),
    ]:
        strict_json(path)
    # resnet18 trains one fold: no fold sd, written as null
    assert strict_json(root / "crossval/resnet18/crossval.json")["fold_mean_sd"]["auc"]["sd"] is None


def test_subgroups_cover_the_manifest_columns(tiny):
    table = pd.read_csv(tiny / "results/pneumonia_cxr/validation/subgroups.tsv", sep="\t")
    assert set(zip(table["column"], table["group"].astype(str))) >= {("site", "A"), ("site", "C"), ("sex", "F"), ("sex", "M")}
    assert set(table["model"]) == {"densenet_small", "resnet18"}


def test_report_has_every_figure(tiny):
    snakemake(tiny, "--report", "results/report.html")
    html = (tiny / "results/report.html").read_text(errors="replace")
    names = (
        "roc.png",
        "confusion.png",
        "attributions.png",
        "faithfulness.png",
        "sanity.png",
        "training_curves.png",
        "samples.png",
        "split.png",
    )
    names += ("model_comparison.png", "fold_spread.png", "reliability.png", "robustness.png", "pairwise.png", "subgroups.png")
    for name in names:
        assert name in html, name
    # each figure's caption carries its provenance summary (written by the job that made it)
    figures = [f"results/{cs}/evaluation/{RUN}/roc.png" for cs in CASESTUDIES] + [
        f"results/{cs}/{name}" for cs in CASESTUDIES for name in ("figures/split.png", "figures/model_comparison.png", "summary.html")
    ]
    for figure in figures:
        assert f"casebook audit {figure}" in html, figure
    assert html.count("Made by rule") >= len(figures)
    assert "synthetic_cxr generated by" in html and "seed 42" in html


def test_a_second_run_from_scratch_gives_bit_identical_results(tiny, tmp_path):
    """On the CPU, the same config gives the same bytes: splits, predictions, metrics (of
    every model's first fold: a second fold of the same model runs the same code)."""
    patterns = (
        "results/*/split/splits.json",
        "results/*/evaluation/*/fold_0/metrics.json",
        "results/*/evaluation/*/fold_0/predictions.tsv",
    )
    compared_files = [first for pattern in patterns for first in sorted(tiny.glob(pattern))]
    # the second run from scratch makes only the compared files (and what they need)
    again = configure_tiny_run(copy_workflow(tmp_path / "again"))
    snakemake(again, *(str(first.relative_to(tiny)) for first in compared_files))
    compared = 0
    for pattern in patterns:
        for first in sorted(tiny.glob(pattern)):
            second = again / first.relative_to(tiny)
            assert first.read_bytes() == second.read_bytes(), first.relative_to(tiny)
            compared += 1
    assert compared == 2 + 3 + 3  # densenet_small and resnet18 on the chest X-rays, the nodules' model
