"""Classification metrics (scikit-learn) at an operating threshold, the threshold rule,
and the test-set metrics with patient-level bootstrap confidence intervals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from casebook.analysis.stats import bootstrap_ci

METRICS = ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1")


def choose_threshold(labels: np.ndarray, prob_pos: np.ndarray, rule: str | float = "youden") -> float:
    """Operating threshold on the positive-class probability, chosen on validation data.

    ``youden`` maximises sensitivity + specificity - 1 on the ROC curve; a number is
    used as given.
    """
    if not isinstance(rule, str):
        return float(rule)
    if rule != "youden":
        raise ValueError(f"unknown threshold rule {rule!r}")
    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = skm.roc_curve(labels, prob_pos)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def _specificity(labels, pred, n_classes: int) -> float:
    """Specificity (binary), or the mean per-class specificity (one-vs-rest)."""
    cm = skm.confusion_matrix(labels, pred, labels=list(range(n_classes)))
    tn = cm.sum() - cm.sum(0) - cm.sum(1) + np.diag(cm)
    negatives = cm.sum() - cm.sum(1)
    spec = np.divide(tn, negatives, out=np.full(n_classes, np.nan), where=negatives > 0)
    return float(spec[1]) if n_classes == 2 else float(np.nanmean(spec))


def point_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """The classification metrics of METRICS for one set of predictions."""
    n_classes = probs.shape[1]
    pred = predict_labels(probs, threshold)
    both = len(np.unique(labels)) > 1
    if n_classes == 2:
        auc = skm.roc_auc_score(labels, probs[:, 1]) if both else np.nan
        sens = skm.recall_score(labels, pred, pos_label=1, zero_division=np.nan)
        f1 = skm.f1_score(labels, pred, pos_label=1, zero_division=0)
    else:
        auc = skm.roc_auc_score(labels, probs, multi_class="ovr", labels=list(range(n_classes))) if both else np.nan
        sens = skm.recall_score(labels, pred, average="macro", zero_division=np.nan)
        f1 = skm.f1_score(labels, pred, average="macro", zero_division=0)
    return {
        "auc": float(auc),
        "accuracy": float(skm.accuracy_score(labels, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(labels, pred)) if both else np.nan,
        "sensitivity": float(sens),
        "specificity": _specificity(labels, pred, n_classes),
        "f1": float(f1),
    }


def predict_labels(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Binary: positive when p(class 1) >= threshold; otherwise the arg-max class."""
    if probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).astype(int)
    return probs.argmax(1)


def evaluate_predictions(
    test: pd.DataFrame,
    val: pd.DataFrame,
    *,
    n_classes: int,
    threshold_rule: str | float = "youden",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """``metrics.json`` content from per-image prediction tables (``prob_<k>`` columns)."""
    prob_cols = [f"prob_{k}" for k in range(n_classes)]
    val_probs = val[prob_cols].to_numpy()
    threshold = choose_threshold(val["label"].to_numpy(), val_probs[:, -1], threshold_rule) if n_classes == 2 else 0.5
    labels, probs = test["label"].to_numpy(), test[prob_cols].to_numpy()
    point = point_metrics(labels, probs, threshold)
    ci = bootstrap_ci(
        labels,
        probs,
        test["patient_id"].to_numpy(),
        lambda y, p: point_metrics(y, p, threshold),
        n_boot=n_boot,
        level=level,
        seed=seed,
    )
    out: dict[str, Any] = {}
    for key in METRICS:
        out[key] = point[key]
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = ci[key]
    out.update(
        {
            "threshold": threshold,
            "threshold_rule": str(threshold_rule),
            "ci_level": level,
            "ci_method": "percentile bootstrap over patients",
            "n_bootstrap": n_boot,
            "n_test_images": int(len(test)),
            "n_test_patients": int(test["patient_id"].nunique()),
            "n_classes": n_classes,
        }
    )
    return out
