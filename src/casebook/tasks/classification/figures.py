"""Classification figures (ROC, confusion matrix, model comparison) and the case
study's HTML summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import pandas as pd

from casebook.analysis.plotting import save_figure
from casebook.fileio import atomic_path


def plot_roc(predictions: pd.DataFrame, metrics: dict[str, Any], title: str, path: str | Path) -> None:
    """ROC curve of the test set, with the AUC and its CI, and the operating point."""
    # scikit-learn and seaborn (seconds to import) are imported by the two figures of the
    # evaluate rule that use them, not by the module: the summarize rule needs neither
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    auc = f"AUC {metrics['auc']:.3f} ({metrics['auc_ci_low']:.3f}-{metrics['auc_ci_high']:.3f})"
    n_classes = sum(c.startswith("prob_") for c in predictions.columns)
    if n_classes == 2:
        fpr, tpr, _ = roc_curve(predictions["label"], predictions["prob_1"])
        ax.plot(fpr, tpr, lw=2, label=auc)
        point = (1 - metrics["specificity"], metrics["sensitivity"])
        ax.scatter(*point, c="k", zorder=3, label=f"threshold {metrics['threshold']:.2f} (chosen on validation)")
    else:  # one-vs-rest curve per class; the AUC in the title is their macro mean
        for k in range(n_classes):
            fpr, tpr, _ = roc_curve(predictions["label"] == k, predictions[f"prob_{k}"])
            ax.plot(fpr, tpr, lw=1, label=f"class {k} vs rest")
        title = f"{title}\n{auc} (macro)"
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)


def plot_confusion(predictions: pd.DataFrame, threshold: float, class_names: Sequence[str], title: str, path) -> None:
    import seaborn as sns  # here, not at the top: see plot_roc
    from sklearn.metrics import confusion_matrix

    probs = predictions[[f"prob_{k}" for k in range(len(class_names))]].to_numpy()
    pred = (probs[:, 1] >= threshold).astype(int) if probs.shape[1] == 2 else probs.argmax(1)
    cm = confusion_matrix(predictions["label"], pred, labels=list(range(len(class_names))))
    fig, ax = plt.subplots(figsize=(4, 3.5))
    sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", cbar=False, xticklabels=class_names, yticklabels=class_names, ax=ax)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    save_figure(fig, path)


def plot_model_comparison(
    metrics: dict[str, dict[str, Any]], title: str, path, keys=("auc", "balanced_accuracy", "sensitivity", "specificity")
) -> None:
    """Forest plot: each model's test metrics with 95% CIs."""
    names = list(metrics)
    fig, axes = plt.subplots(
        1, len(keys), figsize=(3 * len(keys), 0.45 * len(names) + 1.3), sharey=True, squeeze=False, layout="constrained"
    )
    for ax, key in zip(axes[0], keys):
        for y, name in enumerate(names):
            m = metrics[name]
            ax.errorbar(m[key], y, xerr=[[m[key] - m[f"{key}_ci_low"]], [m[f"{key}_ci_high"] - m[key]]], fmt="o", capsize=3)
        low = min(metrics[n][f"{key}_ci_low"] for n in names)
        ax.set(title=key.replace("_", " "), xlim=(max(0.0, low - 0.1), 1.02), ylim=(-0.6, len(names) - 0.4))
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(names)), names)
    fig.suptitle(title)
    save_figure(fig, path)


def summarize_stage(
    models: Sequence[str], crossval_paths, explain_paths, selection_path, outputs: dict[str, str], *, title: str
) -> pd.DataFrame:
    """The summarize rule: one row per model (its fold ensemble's test metrics, its
    cross-validation, calibration and explanation scores), a TSV, an HTML table and a
    forest plot. The model selected on validation data is marked."""
    selected = json.loads(Path(selection_path).read_text())["selected"]
    rows = []
    for model, cv_path, ex_path in zip(models, crossval_paths, explain_paths):
        cv = json.loads(Path(cv_path).read_text())
        explained = json.loads(Path(ex_path).read_text()).get("methods", {})
        rows.append(
            {
                "model": model,
                "selected": model == selected,
                "n_folds": len(cv["folds"]),
                "cv_auc_mean": cv["fold_mean_sd"]["auc"]["mean"],
                "cv_auc_sd": cv["fold_mean_sd"]["auc"]["sd"],
                "oof_auc": cv["out_of_fold"]["auc"],
                **cv["test"],
                "gradcam_energy_in_mask": explained.get("gradcam", {}).get("energy_in_mask_mean"),
            }
        )
    table = pd.DataFrame(rows)
    with atomic_path(outputs["tsv"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    with atomic_path(outputs["table"]) as tmp:
        tmp.write_text(_html_table(table, title))
    plot_model_comparison(
        {r["model"] + (" (selected)" if r["selected"] else ""): r for r in rows}, f"{title}: test metrics (95% CI)", outputs["figure"]
    )
    return table


def _cell(value, low=None, high=None, digits: int = 3) -> str:
    if value is None or pd.isna(value):
        return "-"
    text = f"{value:.{digits}f}"
    return text if low is None or pd.isna(low) else f"{text} ({low:.{digits}f}-{high:.{digits}f})"


def _html_table(table: pd.DataFrame, title: str) -> str:
    """Metrics with their CIs as one readable cell each."""
    shown = pd.DataFrame({"model": [m + (" *" if s else "") for m, s in zip(table["model"], table["selected"])]})
    shown["CV AUC mean +/- sd (folds)"] = [
        f"{r.cv_auc_mean:.3f} +/- {r.cv_auc_sd:.3f} ({r.n_folds})" if r.n_folds > 1 else f"{r.cv_auc_mean:.3f} (1)"
        for r in table.itertuples()
    ]
    shown["out-of-fold AUC"] = table["oof_auc"].map(_cell)
    shown["test AUC (bootstrap CI)"] = [_cell(r["auc"], r["auc_ci_low"], r["auc_ci_high"]) for _, r in table.iterrows()]
    if "auc_delong_ci_low" in table:
        shown["test AUC DeLong CI"] = [
            "-" if pd.isna(r["auc_delong_ci_low"]) else f"{r['auc_delong_ci_low']:.3f}-{r['auc_delong_ci_high']:.3f}"
            for _, r in table.iterrows()
        ]
    for key in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1"):
        shown[key.replace("_", " ")] = [_cell(r[key], r[key + "_ci_low"], r[key + "_ci_high"]) for _, r in table.iterrows()]
    shown["ECE"] = table["ece"].map(_cell)
    shown["threshold"] = table["threshold"].map("{:.3f}".format)
    shown["test images / patients"] = [f"{a} / {b}" for a, b in zip(table["n_test_images"], table["n_test_patients"])]
    shown["Grad-CAM energy in lesion"] = table["gradcam_energy_in_mask"].map(lambda v: _cell(v, digits=2))
    note = (
        "<p>* selected on validation predictions only (mean validation AUC over the folds every model trained). Test metrics are those of each model's fold "
        "ensemble (mean probability), at the threshold chosen on its out-of-fold predictions.</p>"
    )
    return f"<html><body><h3>{title}</h3>" + shown.to_html(index=False, border=0) + note + "</body></html>\n"
