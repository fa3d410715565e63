"""Evaluation on the held-out test set: metrics (scikit-learn) with patient-level
bootstrap confidence intervals, the operating threshold chosen on validation data.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from casebook import figures, provenance
from casebook.data import CachedImages, make_loader, rows_for
from casebook.fileio import atomic_path, read_json, write_json
from casebook.preprocess import load_cache
from casebook.train import fold_split, load_model, predict, select_device

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


def bootstrap_ci(
    labels: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs, resampling whole patients (``groups``) with replacement.

    Images of one patient are correlated, so resampling images would make the
    intervals too narrow.
    """
    rng = np.random.default_rng(seed)
    unique, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(unique))]
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        picked = rng.integers(0, len(unique), len(unique))
        idx = np.concatenate([members[g] for g in picked])
        for key, value in statistic(labels[idx], probs[idx]).items():
            samples.setdefault(key, []).append(value)
    alpha = (1 - level) / 2
    return {
        key: (float(np.nanquantile(vals, alpha)), float(np.nanquantile(vals, 1 - alpha)))
        for key, vals in samples.items()
    }


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


def prediction_table(index: pd.DataFrame, image_ids, probs: np.ndarray, threshold: float | None = None) -> pd.DataFrame:
    """Per-image predictions: ids, label, class probabilities (and prediction if thresholded)."""
    part = index.set_index("image_id").loc[list(image_ids)].reset_index()
    table = part[["image_id", "patient_id", "label"]].copy()
    for k in range(probs.shape[1]):
        table[f"prob_{k}"] = probs[:, k]
    if threshold is not None:
        table["prediction"] = predict_labels(probs, threshold)
    return table


def roc_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """The test-set ROC curve as data (``dvc plots``, reuse outside the pipeline): one
    curve for two classes, one-vs-rest curves otherwise."""
    n_classes = sum(c.startswith("prob_") for c in predictions.columns)
    curves = [("positive", predictions["label"] == 1, predictions["prob_1"])] if n_classes == 2 else [
        (f"class {k} vs rest", predictions["label"] == k, predictions[f"prob_{k}"]) for k in range(n_classes)
    ]  # fmt: skip
    frames = []
    for name, truth, score in curves:
        fpr, tpr, thresholds = skm.roc_curve(truth, score)
        frames.append(pd.DataFrame({"curve": name, "fpr": fpr, "tpr": tpr, "threshold": thresholds}))
    return pd.concat(frames, ignore_index=True)


def evaluate_stage(
    model_cfg: dict[str, Any],
    cfg: dict[str, Any],
    *,
    inputs: dict[str, str],
    outputs: dict[str, str],
    fold: int,
    class_names: list[str],
    title: str,
    wildcards: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The evaluate rule: predict validation and test sets, score, plot, record provenance."""
    started, code = provenance.now(), provenance.git_state()
    n_classes = len(class_names)
    images, _ = load_cache(inputs["images"])
    index = pd.read_csv(inputs["index"], sep="\t", dtype={"image_id": str, "patient_id": str})
    splits = read_json(inputs["splits"])
    device = select_device(model_cfg.get("device", "auto"))
    model = load_model(
        inputs["model"], model_cfg["network"], spatial_dims=images.ndim - 2, in_channels=images.shape[1], num_classes=n_classes, device=device
    )
    batch = int(model_cfg["train"].get("batch_size", 32)) * 2
    tables = {}
    for name, ids in (("val", fold_split(splits, fold, inputs["splits"])["val"]), ("test", splits["test"])):
        rows, labels = rows_for(index, ids)
        probs, _ = predict(model, make_loader(CachedImages(images, labels, rows), batch_size=batch, shuffle=False), device)
        tables[name] = prediction_table(index, ids, probs)
    metrics = evaluate_predictions(
        tables["test"],
        tables["val"],
        n_classes=n_classes,
        threshold_rule=cfg.get("threshold", "youden"),
        n_boot=int(cfg.get("n_bootstrap", 1000)),
        level=float(cfg.get("ci_level", 0.95)),
        seed=int(model_cfg.get("seed", 0)),
    )
    # imported here: casebook.validation builds on this module
    from casebook.validation.crossval import with_uncertainty

    with_uncertainty(metrics, tables["test"], level=metrics["ci_level"], n_bins=int(cfg.get("calibration_bins", 10)))
    probs = tables["test"][[f"prob_{k}" for k in range(n_classes)]].to_numpy()
    tables["test"]["prediction"] = predict_labels(probs, metrics["threshold"])
    for name, key in (("test", "predictions"), ("val", "val_predictions")):
        with atomic_path(outputs[key]) as tmp:
            tables[name].to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    write_json(outputs["metrics"], metrics)
    with atomic_path(outputs["roc_data"]) as tmp:
        roc_table(tables["test"]).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    figures.plot_roc(tables["test"], metrics, title, outputs["roc"])
    figures.plot_confusion(tables["test"], metrics["threshold"], class_names, title, outputs["confusion"])
    provenance.write_record(
        outputs["provenance"],
        rule="evaluate",
        inputs=list(inputs.values()),
        outputs=[outputs["predictions"], outputs["metrics"], outputs["roc"], outputs["confusion"]],
        config={"model": model_cfg, "evaluate": cfg, "fold": fold},
        seed=model_cfg.get("seed"),
        started=started,
        code=code,
        device=str(device),
        wildcards=wildcards,
    )
    return metrics
