"""Test metrics per subgroup (site, sex, scanner: columns of the data set's manifest)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning

from casebook.analysis.stats import bootstrap_ci
from casebook.tasks.classification.metrics import METRICS, point_metrics


def attach_groups(predictions: pd.DataFrame, manifest: pd.DataFrame, columns: Sequence[str], manifest_path: str | Path) -> pd.DataFrame:
    """The prediction table with the manifest's grouping columns joined on image_id.

    A column the manifest lacks is an error naming the manifest and the column.
    """
    clash = [c for c in columns if c in predictions.columns]
    if clash:
        raise ValueError(f"evaluate.subgroups: {', '.join(clash)} is not a grouping column (it is part of every prediction table)")
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise ValueError(
            f"{manifest_path}: no column(s) {', '.join(missing)} for the subgroup analysis "
            f"(evaluate.subgroups); the manifest has {', '.join(manifest.columns)}"
        )
    groups = manifest.set_index("image_id")[list(columns)].astype(str)
    return predictions.join(groups, on="image_id")


def subgroup_table(
    tables: dict[str, pd.DataFrame],
    thresholds: dict[str, float],
    columns: Sequence[str],
    cfg: dict[str, Any],
    *,
    seed: int = 0,
) -> pd.DataFrame:
    """Metrics with CIs for every (model, column, group), at each model's validation threshold."""
    frames = []
    for model, table in tables.items():
        n_classes = sum(c.startswith("prob_") for c in table.columns)
        for column in columns:
            part = subgroup_metrics(
                table,
                column,
                thresholds[model],
                n_classes,
                n_boot=int(cfg.get("n_bootstrap", 1000)),
                level=float(cfg.get("ci_level", 0.95)),
                seed=seed,
                min_patients=int(cfg.get("min_group_patients", 5)),
            )
            frames.append(part.assign(model=model, column=column))
    return pd.concat(frames, ignore_index=True)


def subgroup_metrics(
    predictions: pd.DataFrame,
    column: str,
    threshold: float,
    n_classes: int,
    n_boot: int,
    level: float,
    seed: int,
    min_patients: int,
) -> pd.DataFrame:
    """Metrics of METRICS per value of ``column`` of a prediction table, with
    patient-level bootstrap CIs (casebook.tasks.classification.evaluate.point_metrics and bootstrap_ci at the
    given threshold).

    One row per group, sorted by group value (missing values form their own group):
    group, n_images, n_patients, n_positive (images with label != 0, i.e. of class 1
    for two classes), then each metric with ``_ci_low`` / ``_ci_high``. A group with
    fewer than ``min_patients`` patients or a single class gets no CI (NaN); with a
    single class its AUC is NaN too.
    """
    prob_cols = [f"prob_{k}" for k in range(n_classes)]
    rows = []
    for value, part in predictions.groupby(column, sort=True, dropna=False):
        labels, probs = part["label"].to_numpy(dtype=int), part[prob_cols].to_numpy(dtype=float)
        patients = part["patient_id"].to_numpy()
        row = {
            "group": value,
            "n_images": len(part),
            "n_patients": int(pd.Series(patients).nunique()),
            "n_positive": int(np.count_nonzero(labels != 0)),
        }
        with warnings.catch_warnings():
            # small groups and their resamples often lack a class; the NaN says so
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            point = point_metrics(labels, probs, threshold)
            enough = row["n_patients"] >= min_patients and np.unique(labels).size > 1
            ci = (
                bootstrap_ci(
                    labels,
                    probs,
                    patients,
                    lambda y, p: point_metrics(y, p, threshold),
                    n_boot=n_boot,
                    level=level,
                    seed=seed,
                )
                if enough
                else {}
            )
        for key in METRICS:
            row[key] = point[key]
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = ci.get(key, (float("nan"), float("nan")))
        rows.append(row)
    columns = ["group", "n_images", "n_patients", "n_positive"] + [
        f"{key}{suffix}" for key in METRICS for suffix in ("", "_ci_low", "_ci_high")
    ]
    return pd.DataFrame(rows, columns=columns)
