"""The comparison's figures: the curves over the sweep with CI bands, accuracy against
cost, the paired differences against the reference arm, probe against fine-tune, and the
pretrained features' embedding map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from casebook.analysis.plotting import plt, save_figure

LEVEL_LABELS = {"label_fraction": "fraction of training patients with labels", "prevalence": "prevalence of the positive class in training"}


def plot_curves(summary: dict[str, Any], title: str, path: str | Path) -> None:
    """AUC, AUPRC and sensitivity against the level, one line per arm (mean over seeds)
    with its bootstrap CI band over test patients."""
    table = pd.DataFrame(summary["scores"])
    panels = [("auc", "test AUC"), ("auprc", "test AUPRC"), ("sensitivity", f"sensitivity at specificity {summary['specificity']:g}")]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, (metric, label) in zip(axes, panels):
        for model, part in table.groupby("model", sort=False):
            part = part.sort_values("level")
            line = ax.plot(part["level"], part[metric], marker="o", label=model)[0]
            ax.fill_between(part["level"], part[f"{metric}_low"], part[f"{metric}_high"], color=line.get_color(), alpha=0.15)
        ax.set_xscale("log")
        ax.set_xlabel(LEVEL_LABELS[summary["kind"]])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    n = len(summary["seeds"])
    fig.suptitle(f"{title}: mean of {n} seed(s), {summary['ci_level']:.0%} bootstrap CI over test patients")
    fig.tight_layout()
    save_figure(fig, path)


def _count(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{int(n):,}"


def plot_cost(summary: dict[str, Any], title: str, path: str | Path) -> None:
    """Test AUC at the largest level against multiply-accumulates per image (marker area:
    parameters), with training and inference throughput in the labels."""
    scores = pd.DataFrame(summary["scores"])
    top = scores[scores["level"] == scores["level"].max()].set_index("model")
    costs = pd.DataFrame(summary["costs"]).set_index("model")
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for model, row in costs.iterrows():
        auc = top.loc[model]
        ax.errorbar(
            row["macs_per_image"],
            auc["auc"],
            yerr=[[auc["auc"] - auc["auc_low"]], [auc["auc_high"] - auc["auc"]]],
            fmt="none",
            ecolor="grey",
        )
        ax.scatter(row["macs_per_image"], auc["auc"], s=30 + 200 * np.sqrt(row["parameters"] / costs["parameters"].max()), alpha=0.7)
        ax.annotate(
            f"{model}\n{_count(row['parameters'])} parameters, {_count(row['trainable_parameters'])} trained\n"
            f"train {row['train_images_per_s']:.0f} img/s, infer {row['inference_images_per_s']:.0f} img/s",
            (row["macs_per_image"], auc["auc"]),
            fontsize=7,
            xytext=(6, 4),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("multiply-accumulates per image")
    ax.set_ylabel("test AUC (largest level)")
    ax.set_title(f"{title}: accuracy against cost")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_differences(summary: dict[str, Any], title: str, path: str | Path) -> None:
    """Each arm's AUC minus the reference arm's at every level, with the paired
    bootstrap interval; filled markers where the interval excludes 0."""
    diffs = pd.DataFrame(summary["differences"])
    fig, ax = plt.subplots(figsize=(7.5, 0.5 + 0.35 * max(len(diffs), 2)))
    if diffs.empty:
        ax.text(0.5, 0.5, "one arm only: nothing to compare", ha="center", va="center")
        ax.axis("off")
    else:
        labels = [f"{r.model} @ {r.level:g}" for r in diffs.itertuples()]
        y = np.arange(len(diffs))
        ax.hlines(y, diffs["ci_low"], diffs["ci_high"], color="grey")
        called = diffs["excludes_zero"].to_numpy(dtype=bool)
        ax.scatter(diffs["difference"][called], y[called], color="tab:red", zorder=3, label="interval excludes 0")
        ax.scatter(diffs["difference"][~called], y[~called], facecolor="white", edgecolor="k", zorder=3, label="interval includes 0")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_xlabel(f"test AUC minus {summary['reference']}'s (paired bootstrap over patients, {summary['ci_level']:.0%})")
        ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{title}: differences against {summary['reference']}")
    save_figure(fig, path)


def plot_probe_finetune(summary: dict[str, Any], pairs: list[tuple[str, str]], title: str, path: str | Path) -> None:
    """Test AUC of the linear probe beside the fine-tuned model of the same pretrained
    encoder, at every level, with CIs."""
    table = pd.DataFrame(summary["scores"])
    levels = sorted(table["level"].unique())
    fig, axes = plt.subplots(1, max(len(pairs), 1), figsize=(5 * max(len(pairs), 1), 3.8), squeeze=False)
    for ax, (probe, tuned) in zip(axes[0], pairs):
        x = np.arange(len(levels))
        for offset, model in ((-0.2, probe), (0.2, tuned)):
            part = table[table["model"] == model].set_index("level").loc[levels]
            err = [part["auc"] - part["auc_low"], part["auc_high"] - part["auc"]]
            ax.bar(x + offset, part["auc"], width=0.4, yerr=err, capsize=3, label=model)
        ax.set_xticks(x, [f"{v:g}" for v in levels])
        ax.set_xlabel(LEVEL_LABELS[summary["kind"]])
        ax.set_ylabel("test AUC")
        ax.set_ylim(0.4, 1.02)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title}: linear probe against fine-tuning")
    fig.tight_layout()
    save_figure(fig, path)


def probe_figure_stage(models: dict[str, dict[str, Any]], title: str, metrics_path: str, path: str) -> None:
    """The comparison_probe_figure rule."""
    from casebook.fileio import read_json
    from casebook.tasks.comparison.plan import probe_pairs

    plot_probe_finetune(read_json(metrics_path), probe_pairs(models), title, path)


def plot_embedding(encoder, images, class_names, title: str, path: str | Path) -> None:
    """A t-SNE map of the encoder's features of ``images``, coloured by their labels."""
    from sklearn.manifold import TSNE

    from casebook.tasks.comparison.networks import features

    feats = features(encoder, images.x)
    perplexity = float(min(30, max(2, (len(feats) - 1) // 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(feats)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for label in np.unique(images.label):
        sel = images.label == label
        ax.scatter(xy[sel, 0], xy[sel, 1], s=10, alpha=0.7, label=class_names[int(label)])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)
