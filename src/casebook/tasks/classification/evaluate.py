"""Evaluation on the held-out test set: metrics (scikit-learn) with patient-level
bootstrap confidence intervals, the operating threshold chosen on validation data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from casebook import provenance
from casebook.engine.runtime import select_device
from casebook.fileio import atomic_path, read_json, write_json
from casebook.split import fold_split
from casebook.tasks.classification import figures
from casebook.tasks.classification.cache import load_cache
from casebook.tasks.classification.data import CachedImages, make_loader, rows_for
from casebook.tasks.classification.metrics import evaluate_predictions, predict_labels
from casebook.tasks.classification.train import load_model, predict


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
    started, code = provenance.now(), provenance.code_state()
    n_classes = len(class_names)
    images, _ = load_cache(inputs["images"])
    index = pd.read_csv(inputs["index"], sep="\t", dtype={"image_id": str, "patient_id": str})
    splits = read_json(inputs["splits"])
    device = select_device(model_cfg.get("device", "auto"))
    model = load_model(
        inputs["model"],
        model_cfg["network"],
        spatial_dims=images.ndim - 2,
        in_channels=images.shape[1],
        num_classes=n_classes,
        device=device,
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
    # imported here: casebook.tasks.classification.validation builds on this module
    from casebook.tasks.classification.validation.crossval import with_uncertainty

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
        params={"model": model_cfg, "evaluate": cfg, "fold": fold},
        seed=model_cfg.get("seed"),
        started=started,
        code=code,
        device=str(device),
        wildcards=wildcards,
    )
    return metrics
