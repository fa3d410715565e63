"""Figures of the generation family: real beside synthetic images per class, the nearest
training image of the samples closest to the training set (memorization), quality and
time against sampler steps, and the utility curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from casebook.analysis.plotting import save_figure  # noqa: E402
from casebook.tasks.generation.data import ImageSet, to_unit  # noqa: E402
from casebook.tasks.generation.metrics import FD_LABEL  # noqa: E402

PER_CLASS = 6


def _show(ax, image: np.ndarray, title: str = "") -> None:
    ax.imshow(to_unit(image), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def _class_name(class_names: Sequence[str] | None, c: int) -> str:
    return class_names[c] if class_names and c < len(class_names) else f"class {c}"


def plot_sample_grid(
    real: ImageSet, shown: dict[tuple[str, str], tuple], class_names: Sequence[str] | None, path: str | Path, title: str = ""
) -> None:
    """One row per class and source: real test images, then each model's samples with
    its last sampler (the slowest configured one is listed last by convention)."""
    classes = sorted(np.unique(real.labels).tolist())
    sources = [("real (test)", real.images, real.labels)]
    last = {}
    for (model, key), (images, labels, _memo) in shown.items():
        last[model] = (f"{model} ({key})", images, labels)
    sources += list(last.values())
    fig, axes = plt.subplots(
        len(sources) * len(classes),
        PER_CLASS,
        figsize=(1.3 * PER_CLASS, 1.35 * len(sources) * len(classes)),
        squeeze=False,
        layout="constrained",
    )
    for s, (name, images, labels) in enumerate(sources):
        for ci, c in enumerate(classes):
            row = s * len(classes) + ci
            picked = np.flatnonzero(labels == c)[:PER_CLASS]
            for col in range(PER_CLASS):
                ax = axes[row, col]
                if col < len(picked):
                    _show(ax, images[picked[col]])
                else:
                    ax.axis("off")
            axes[row, 0].set_ylabel(f"{name}\n{_class_name(class_names, c)}", fontsize=7)
    fig.suptitle(f"{title}: real and synthetic images per class" if title else "real and synthetic images per class", fontsize=9)
    save_figure(fig, path)


def plot_nearest_neighbours(train: ImageSet, shown: dict[tuple[str, str], tuple], path: str | Path, title: str = "", n: int = 6) -> None:
    """For each model's last sampler: the ``n`` samples nearest to a training image,
    above their nearest training image, with the distance and whether it was flagged."""
    last = {model: value for (model, _key), value in shown.items()}
    fig, axes = plt.subplots(2 * len(last), n, figsize=(1.4 * n, 3.0 * len(last)), squeeze=False, layout="constrained")
    for m, (model, (images, _labels, memo)) in enumerate(last.items()):
        order = np.argsort(memo["distance"])[:n]
        for col in range(n):
            if col >= len(order):
                axes[2 * m, col].axis("off")
                axes[2 * m + 1, col].axis("off")
                continue
            i = order[col]
            flag = " FLAGGED" if memo["flagged"][i] else ""
            _show(axes[2 * m, col], images[i], f"{model} #{i}\nd={memo['distance'][i]:.3f}{flag}")
            _show(
                axes[2 * m + 1, col], train.images[memo["nearest_index"][i]], f"nearest train\n{train.image_id[memo['nearest_index'][i]]}"
            )
    threshold = next(iter(last.values()))[2]["threshold"] if last else float("nan")
    fig.suptitle(f"{title}: samples nearest to a training image (flagged at d <= {threshold:.3f}, RMS on [-1, 1])", fontsize=9)
    save_figure(fig, path)


def plot_sampler_steps(table: pd.DataFrame, floor: float, path: str | Path, title: str = "") -> None:
    """Fréchet distance (with CI) and seconds per image against the sampler's steps,
    one line per model and scheduler; the real-against-real floor as a dashed line."""
    fig, (ax_fd, ax_time) = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    table = table.assign(
        steps=table["sampler"].str.rsplit("_", n=1).str[1].astype(int), scheduler=table["sampler"].str.rsplit("_", n=1).str[0]
    )
    for (model, scheduler), group in table.groupby(["model", "scheduler"]):
        group = group.sort_values("steps")
        label = f"{model}, {scheduler.upper()}"
        err = np.vstack([group["fd"] - group["fd_ci_low"], group["fd_ci_high"] - group["fd"]])
        ax_fd.errorbar(group["steps"], group["fd"], yerr=np.maximum(err, 0), marker="o", capsize=3, label=label)
        ax_time.plot(group["steps"], 1.0 / group["images_per_second"], marker="o", label=label)
    ax_fd.axhline(floor, color="grey", linestyle="--", label="real training images (floor)")
    for ax in (ax_fd, ax_time):
        ax.set_xscale("log")
        ax.set_xlabel("sampler steps")
        ax.legend(fontsize=7)
    ax_fd.set_ylabel(f"{FD_LABEL} (lower is better)")
    ax_time.set_ylabel("seconds per image")
    ax_time.set_yscale("log")
    fig.suptitle(f"{title}: sample quality and time against steps" if title else "sample quality and time against steps", fontsize=9)
    save_figure(fig, path)


def plot_utility(table: pd.DataFrame, comparisons: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """Test AUC (CI bars) against the fraction of real training patients, real only and
    real + synthetic; synthetic only as a band; a star where the paired CI excludes 0."""
    fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    for arm, marker in (("real only", "o"), ("real + synthetic", "s")):
        rows = table[table["arm"] == arm].groupby("fraction")[["test_auc", "ci_low", "ci_high"]].mean().reset_index()
        err = np.maximum(np.vstack([rows["test_auc"] - rows["ci_low"], rows["ci_high"] - rows["test_auc"]]), 0)
        ax.errorbar(rows["fraction"], rows["test_auc"], yerr=err, marker=marker, capsize=3, label=arm)
    synthetic = table[table["arm"] == "synthetic only"]
    if len(synthetic):
        ax.axhspan(synthetic["ci_low"].mean(), synthetic["ci_high"].mean(), color="grey", alpha=0.2)
        ax.axhline(synthetic["test_auc"].mean(), color="grey", linestyle="--", label="synthetic only (train on synthetic, test on real)")
    for c in comparisons:
        if c["ci_low"] > 0 or c["ci_high"] < 0:
            top = table[(table["fraction"] == c["fraction"]) & (table["arm"] != "synthetic only")]["ci_high"].max()
            ax.annotate("*", (c["fraction"], top), ha="center", fontsize=12)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of the real training patients")
    ax.set_ylabel("test ROC AUC (95% CI over patients)")
    ax.legend(fontsize=7)
    ax.set_title(
        f"{title}: utility of synthetic data (* paired CI of the difference excludes 0)" if title else "utility of synthetic data",
        fontsize=9,
    )
    save_figure(fig, path)
