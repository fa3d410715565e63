"""Cross-validation of one model: its folds' validation predictions pooled out of fold,
the spread of the per-fold metrics, and the fold ensemble scored once on the test set.

Every decision (operating threshold, and in casebook.tasks.classification.validation.selection the model)
is taken on out-of-fold validation predictions only; the test set is predicted by each
fold's model and scored once, by their ensemble (mean probability).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from casebook.analysis.stats import calibration, delong_ci, fold_aggregate
from casebook.tasks.classification.metrics import METRICS, choose_threshold, evaluate_predictions, point_metrics

ID_DTYPES = {"image_id": str, "patient_id": str}


def read_predictions(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=ID_DTYPES)


def prob_columns(table: pd.DataFrame) -> list[str]:
    return sorted((c for c in table.columns if c.startswith("prob_")), key=lambda c: int(c.split("_")[1]))


def pool_out_of_fold(val_tables: dict[int, pd.DataFrame], where: Sequence[str] = ()) -> pd.DataFrame:
    """The folds' validation predictions in one table with a ``fold`` column.

    A patient validated in two folds would be counted twice and mean the folds were not a
    partition: refused, naming the patient and the folds (and ``where``, the files).
    """
    seen: dict[str, int] = {}
    for fold, table in val_tables.items():
        for patient in table["patient_id"].unique():
            if patient in seen:
                files = f" ({', '.join(map(str, where))})" if where else ""
                raise ValueError(f"patient {patient} is in the validation set of folds {seen[patient]} and {fold}{files}")
            seen[patient] = fold
    return pd.concat([t.assign(fold=f) for f, t in val_tables.items()], ignore_index=True)


def ensemble(test_tables: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Mean class probabilities of the fold models on the same test images."""
    tables = list(test_tables.values())
    first = tables[0].sort_values("image_id").reset_index(drop=True)
    cols = prob_columns(first)
    probs = np.zeros((len(first), len(cols)))
    for fold, table in test_tables.items():
        table = table.sort_values("image_id").reset_index(drop=True)
        if not table["image_id"].equals(first["image_id"]):
            raise ValueError(f"fold {fold} predicted other test images than fold {next(iter(test_tables))}")
        probs += table[cols].to_numpy()
    out = first[["image_id", "patient_id", "label"]].copy()
    out[cols] = probs / len(tables)
    return out


def per_fold_metrics(oof: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Each fold's validation metrics at one threshold (one row per fold)."""
    cols = prob_columns(oof)
    rows = []
    for fold, part in oof.groupby("fold", sort=True):
        metrics = point_metrics(part["label"].to_numpy(), part[cols].to_numpy(), threshold)
        rows.append({"fold": int(fold), "n_images": len(part), "n_patients": part["patient_id"].nunique(), **metrics})
    return pd.DataFrame(rows)


def with_uncertainty(metrics: dict[str, Any], table: pd.DataFrame, *, level: float, n_bins: int) -> dict[str, Any]:
    """Add the DeLong AUC interval (binary) and the calibration of a prediction table."""
    cols = prob_columns(table)
    labels, probs = table["label"].to_numpy(), table[cols].to_numpy()
    if len(cols) == 2 and len(np.unique(labels)) == 2:
        _, low, high = delong_ci(labels, probs[:, 1], level)
        metrics.update(auc_delong_ci_low=low, auc_delong_ci_high=high)
    cal = calibration(labels, probs, n_bins)
    metrics.update(ece=cal["ece"], mce=cal["mce"], brier=cal["brier"])
    return metrics


def crossval_summary(
    val_tables: dict[int, pd.DataFrame],
    test_tables: dict[int, pd.DataFrame],
    cfg: dict[str, Any],
    *,
    seed: int = 0,
    where: Sequence[str] = (),
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """(summary, pooled out-of-fold table, test ensemble table) of one model."""
    oof = pool_out_of_fold(val_tables, where)
    test = ensemble(test_tables)
    cols = prob_columns(oof)
    n_classes = len(cols)
    rule = cfg.get("threshold", "youden")
    threshold = choose_threshold(oof["label"].to_numpy(), oof[cols[-1]].to_numpy(), rule) if n_classes == 2 else 0.5
    common = {
        "n_classes": n_classes,
        "threshold_rule": rule,
        "n_boot": int(cfg.get("n_bootstrap", 1000)),
        "level": float(cfg.get("ci_level", 0.95)),
        "seed": seed,
    }
    n_bins = int(cfg.get("calibration_bins", 10))
    # the threshold is chosen on the pooled out-of-fold predictions in both calls
    pooled = with_uncertainty(evaluate_predictions(oof, oof, **common), oof, level=common["level"], n_bins=n_bins)
    tested = with_uncertainty(evaluate_predictions(test, oof, **common), test, level=common["level"], n_bins=n_bins)
    per_fold = per_fold_metrics(oof, threshold)
    test["prediction"] = (test[cols[-1]] >= threshold).astype(int) if n_classes == 2 else test[cols].to_numpy().argmax(1)
    summary = {
        "folds": sorted(int(f) for f in val_tables),
        "threshold": threshold,
        "per_fold": per_fold.to_dict(orient="records"),
        "fold_mean_sd": fold_aggregate(per_fold, METRICS),
        "out_of_fold": pooled,
        "test": tested,
        "calibration": {
            "out_of_fold": calibration(oof["label"].to_numpy(), oof[cols].to_numpy(), n_bins),
            "test": calibration(test["label"].to_numpy(), test[cols].to_numpy(), n_bins),
        },
        "test_model": f"ensemble of {len(test_tables)} fold model(s), mean probability" if len(test_tables) > 1 else "the fold's model",
        "note": (
            "Per-fold threshold-dependent metrics use the threshold chosen on the pooled out-of-fold "
            "predictions themselves, so they are optimistic; the test metrics are not."
        ),
    }
    return summary, oof, test
