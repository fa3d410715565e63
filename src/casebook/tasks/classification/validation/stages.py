"""The validation rules' work (crossval, select_model, compare_models, subgroups,
validation_figures), called by the thin scripts under ``scripts/``.

Each stage imports what its rule needs when it runs (a rule job is a fresh process):
crossval and select_model draw nothing (no matplotlib), validation_figures reads JSON
(no scikit-learn), and only subgroups reads the manifest (SimpleITK, via layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from casebook.fileio import atomic_path, json_safe, read_json, write_json

SPREAD_METRICS = ("auc", "balanced_accuracy", "sensitivity", "specificity")


def write_tsv(table: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def crossval_stage(folds: Sequence[int], val_paths, test_paths, cfg: dict[str, Any], outputs: dict[str, str], *, seed: int) -> dict:
    """One model's folds: crossval.json, the pooled out-of-fold and the test-ensemble tables."""
    from casebook.tasks.classification.validation.crossval import crossval_summary, read_predictions

    val = {int(f): read_predictions(p) for f, p in zip(folds, val_paths)}
    test = {int(f): read_predictions(p) for f, p in zip(folds, test_paths)}
    summary, oof, ensemble = crossval_summary(val, test, cfg, seed=seed, where=[str(p) for p in val_paths])
    write_tsv(oof, outputs["oof"])
    write_tsv(ensemble, outputs["test"])
    write_json(outputs["summary"], json_safe(summary))
    return summary


def select_stage(models: Sequence[str], oof_paths, cfg: dict[str, Any], output: str) -> dict:
    """select_model: the best model on pooled out-of-fold validation predictions."""
    from casebook.tasks.classification.validation.crossval import read_predictions
    from casebook.tasks.classification.validation.selection import select_model

    choice = select_model({m: read_predictions(p) for m, p in zip(models, oof_paths)})
    choice["inputs"] = [str(p) for p in oof_paths]
    write_json(output, json_safe(choice))
    return choice


def compare_stage(
    models: Sequence[str], test_paths, selection_path, cfg: dict[str, Any], outputs: dict[str, str], *, title: str, seed: int
):
    """compare_models: paired tests of every model pair on the test set, and their figure."""
    from casebook.tasks.classification.validation import figures
    from casebook.tasks.classification.validation.compare import pairwise_comparisons
    from casebook.tasks.classification.validation.crossval import read_predictions

    table = pairwise_comparisons(
        {m: read_predictions(p) for m, p in zip(models, test_paths)},
        n_boot=int(cfg.get("n_bootstrap", 1000)),
        level=float(cfg.get("ci_level", 0.95)),
        seed=seed,
    )
    selected = read_json(selection_path)["selected"]
    write_tsv(table, outputs["table"])
    figures.plot_pairwise(table, f"{title}: paired AUC differences on the test set (selected on validation: {selected})", outputs["figure"])
    return table


def subgroups_stage(
    models, test_paths, crossval_paths, manifest_path, cfg: dict[str, Any], outputs: dict[str, str], *, title: str, seed: int
):
    """subgroups: test metrics per group of each manifest column in evaluate.subgroups."""
    from casebook.layout import read_manifest
    from casebook.tasks.classification.validation import figures
    from casebook.tasks.classification.validation.crossval import read_predictions
    from casebook.tasks.classification.validation.subgroups import attach_groups, subgroup_table

    columns = list(cfg.get("subgroups") or [])
    manifest = read_manifest(manifest_path, check_files=False)
    tables = {m: attach_groups(read_predictions(p), manifest, columns, manifest_path) for m, p in zip(models, test_paths)}
    thresholds = {m: read_json(p)["threshold"] for m, p in zip(models, crossval_paths)}
    table = subgroup_table(tables, thresholds, columns, cfg, seed=seed)
    write_tsv(table, outputs["table"])
    figures.plot_subgroups(table, SPREAD_METRICS, f"{title}: test metrics per subgroup", outputs["figure"])
    return table


def validation_figures_stage(models, crossval_paths, outputs: dict[str, str], *, title: str) -> None:
    """validation_figures: the fold spread of the validation metrics, and the reliability
    diagram of each model's test predictions."""
    from casebook.tasks.classification.validation import figures

    summaries = {m: read_json(p) for m, p in zip(models, crossval_paths)}
    per_fold = pd.DataFrame([{"model": m, **row} for m, s in summaries.items() for row in s["per_fold"]])
    pooled = {m: s["out_of_fold"] for m, s in summaries.items()}
    figures.plot_fold_spread(
        per_fold, pooled, SPREAD_METRICS, f"{title}: validation metrics per fold and pooled out of fold", outputs["fold_spread"]
    )
    curves = {f"{m} ({s['test_model'].split(',')[0]})": s["calibration"]["test"] for m, s in summaries.items()}
    figures.plot_reliability(curves, f"{title}: calibration on the test set", outputs["reliability"])
