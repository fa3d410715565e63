"""Robustness figures: metric-versus-severity curves and a test image at each severity."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

# casebook.analysis.plotting selects the headless backend, before any figure is made
from casebook.analysis.plotting import display_slice, save_figure
from casebook.analysis.robustness.severities import PERTURBATIONS, UNITS  # not .perturbations: TorchIO

# a metric at which the model no longer ranks or classifies better than a coin
CHANCE = {"auc": 0.5, "balanced_accuracy": 0.5}


def _grid(n: int, per_row: int, size: tuple[float, float]):
    rows = max(1, math.ceil(n / per_row))
    cols = min(n, per_row) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows + 0.6), squeeze=False, layout="constrained")
    return fig, axes


def plot_robustness(tables: dict[str, pd.DataFrame], metric: str, margin: float, title: str, path: str | Path) -> None:
    """One panel per perturbation, one curve per run (model / fold): ``metric`` against
    severity. The dashed line is each run's clean value minus ``margin``; the cross marks
    the breakdown severity, the first at or below that line."""
    from casebook.analysis.robustness.breakdown import breakdown  # sweep imports this module

    names = [n for n in PERTURBATIONS if any(n in set(t["perturbation"]) for t in tables.values())]
    names += sorted({n for t in tables.values() for n in t["perturbation"]} - set(names))
    fig, axes = _grid(len(names), 4, (2.6, 2.3))
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    low = min((float(t[metric].min()) for t in tables.values() if t[metric].notna().any()), default=0.0)
    for k, (run, table) in enumerate(tables.items()):
        colour = f"C{k % 10}"
        points = breakdown(table, metric, margin)
        for ax, name in zip(axes.flat, names):
            part = table[table["perturbation"] == name].sort_values("severity")
            if part.empty:
                continue
            ax.plot(part["severity"], part[metric], "o-", c=colour, ms=3, lw=1.2, label=run)
            ax.axhline(part[metric].iloc[0] - margin, c=colour, ls="--", lw=0.8)
            if points.get(name) is not None:
                y = part.loc[part["severity"] == points[name], metric].iloc[0]
                ax.plot(points[name], y, "X", c=colour, ms=9, mec="k", mew=0.6)
    for ax, name in zip(axes.flat, names):
        if metric in CHANCE:
            ax.axhline(CHANCE[metric], c="grey", ls=":", lw=0.8)
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.set_xlabel(UNITS.get(name, "severity"), fontsize=8)
        ax.set_ylim(min(low, CHANCE.get(metric, low)) - 0.05, 1.02)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel(metric.replace("_", " "), fontsize=8)
    if len(tables) > 1:  # one entry per run, from whichever panels have its curve
        entries = {label: handle for ax in axes.flat for handle, label in zip(*ax.get_legend_handles_labels())}
        fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncols=min(len(tables), 4), fontsize=8)
    fig.suptitle(f"{title}\n(dashed: clean - {margin:g}; cross: breakdown severity)", fontsize=10)
    save_figure(fig, path)


def plot_perturbation_examples(examples: dict[str, list[tuple[float, np.ndarray]]], title: str, path: str | Path) -> None:
    """One row per perturbation: the image (C, *spatial) at each of its severities,
    the clean image first. Every panel shares the clean image's grey scale, so that
    changes of intensity (gamma, bias field) show as such."""
    names = list(examples)
    cols = max(len(levels) for levels in examples.values())
    fig, axes = plt.subplots(len(names), cols, figsize=(1.5 * cols + 0.8, 1.6 * len(names) + 0.6), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    clean = next(iter(examples.values()))[0][1]
    view = display_slice(clean)
    vmin, vmax = np.percentile(clean[view], [0.5, 99.5])
    for row, name in zip(axes, names):
        for ax, (severity, image) in zip(row, examples[name]):
            ax.imshow(image[view], cmap="gray", vmin=vmin, vmax=vmax)
            ax.set_title(f"{severity:g}", fontsize=8)
        row[0].text(
            -0.08,
            0.5,
            f"{name.replace('_', ' ')}\n({UNITS.get(name, 'severity')})",
            transform=row[0].transAxes,
            ha="right",
            va="center",
            fontsize=7,
        )
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
