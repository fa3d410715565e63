"""Validation figures (matplotlib), each written to one PNG with ``casebook.analysis.plotting.save_figure``:
reliability diagrams, the spread of metrics over folds, subgroup forest plots and
pairwise model comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: cluster nodes and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from casebook.analysis.plotting import save_figure  # noqa: E402


def _floats(values) -> np.ndarray:
    # calibration() writes empty-bin means as None (JSON null): make them NaN again
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def plot_reliability(curves: dict[str, dict], title: str, path: str | Path) -> None:
    """Reliability diagram of one or more runs (``curves``: run name -> calibration()),
    observed frequency against mean predicted probability per bin with the diagonal,
    and the number of predictions per bin underneath."""
    fig, (ax, ax_hist) = plt.subplots(2, 1, figsize=(4.8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, layout="constrained")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    kinds = set()
    for i, (name, result) in enumerate(curves.items()):
        bins = result["bins"]
        predicted, observed = _floats(b["mean_predicted"] for b in bins), _floats(b["observed"] for b in bins)
        filled = ~(np.isnan(predicted) | np.isnan(observed))  # empty bins have nothing to show
        ax.plot(predicted[filled], observed[filled], marker="o", ms=4, c=f"C{i}", label=f"{name} (ECE {result['ece']:.3f})")
        edges = [bins[0]["bin_low"]] + [b["bin_high"] for b in bins]
        ax_hist.stairs([b["n"] for b in bins], edges, color=f"C{i}", lw=1.5)
        kinds.add(result.get("kind", "positive-class"))
    top_label = kinds == {"top-label"}
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        ylabel="share correct" if top_label else "observed share of positives",
        title=title,
    )
    ax.legend(loc="upper left", fontsize=8)
    ax_hist.set(xlabel="top-label confidence" if top_label else "predicted probability of class 1", ylabel="predictions")
    save_figure(fig, path)


def _grid(n_panels: int, width: float, height: float):
    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), layout="constrained", squeeze=False)
    return fig, axes[0]


def plot_fold_spread(
    per_fold: pd.DataFrame,
    pooled: dict[str, dict[str, float]],
    metrics: Sequence[str],
    title: str,
    path: str | Path,
) -> None:
    """Per metric a panel: per model the fold values (points), their mean +/- SD (error
    bar; no bar with a single fold) and the pooled out-of-fold value (diamond)."""
    models = list(dict.fromkeys(per_fold["model"]))
    fig, axes = _grid(len(metrics), max(2.2, 0.9 * len(models) + 1.2), 3.8)
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(per_fold))  # fixed: reruns give the same PNG
    for ax, metric in zip(axes, metrics):
        for x, model in enumerate(models):
            rows = (per_fold["model"] == model).to_numpy()
            values = pd.to_numeric(per_fold.loc[rows, metric], errors="coerce").to_numpy(dtype=float)
            ax.scatter(x + jitter[rows] - 0.2, values, s=14, c="C0", alpha=0.7, label="fold" if x == 0 else None)
            values = values[~np.isnan(values)]
            if values.size:
                sd = values.std(ddof=1) if values.size > 1 else None
                ax.errorbar(x, values.mean(), yerr=sd, fmt="o", c="k", capsize=4, label="mean ± SD" if x == 0 else None)
            value = pooled.get(model, {}).get(metric)
            if value is not None and not np.isnan(value):
                ax.scatter(x + 0.2, value, marker="D", s=36, c="C3", zorder=3, label="pooled out-of-fold" if x == 0 else None)
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
        ax.set(title=metric, xlim=(-0.6, len(models) - 0.4))
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    save_figure(fig, path)


def _ci_rows(ax, ys, points, lows, highs, colour, label) -> None:
    """Markers with horizontal CI lines; matplotlib leaves NaN points or bounds undrawn
    (a group too small for a CI shows its point alone)."""
    points, lows, highs = (np.asarray(v, dtype=float) for v in (points, lows, highs))
    ax.hlines(ys, lows, highs, colors=colour, lw=1.5)
    ax.plot(points, ys, "o", c=colour, ms=5, label=label)


def plot_subgroups(table: pd.DataFrame, metrics: Sequence[str], title: str, path: str | Path) -> None:
    """Forest plot per metric: one row per (column, group), one marker per model with its
    CI; the group's number of patients in the tick label."""
    # rows keyed by text: a missing group value (NaN) would never equal itself
    row_key = pd.Series([f"{c} = {g}" for c, g in zip(table["column"], table["group"])], index=table.index)
    keys = list(dict.fromkeys(row_key))
    position = {key: i for i, key in enumerate(keys)}
    sizes = pd.to_numeric(table["n_patients"], errors="coerce").groupby(row_key, sort=False).max()
    labels = [f"{key} (n = {'?' if np.isnan(sizes[key]) else int(sizes[key])})" for key in keys]
    models = list(dict.fromkeys(table["model"]))
    offsets = (np.arange(len(models)) - (len(models) - 1) / 2) * (0.6 / max(len(models), 1))
    fig, axes = _grid(len(metrics), 3.6, 0.45 * len(keys) + 1.6)
    for ax, metric in zip(axes, metrics):
        for i, model in enumerate(models):
            rows = (table["model"] == model).to_numpy()
            part = table[rows]
            ys = row_key[rows].map(position).to_numpy(dtype=float) + offsets[i]
            _ci_rows(ax, ys, part[metric], part[f"{metric}_ci_low"], part[f"{metric}_ci_high"], f"C{i}", model)
        ax.set_yticks(range(len(keys)), labels if ax is axes[0] else [""] * len(keys))
        ax.set(title=metric, ylim=(max(len(keys), 1) - 0.5, -0.5))  # first group at the top
        ax.grid(axis="x", alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    save_figure(fig, path)


def _p_text(p: float) -> str:
    if np.isnan(p):
        return "p = n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def plot_pairwise(comparisons: pd.DataFrame, title: str, path: str | Path) -> None:
    """Differences of AUC (model_a - model_b) with their CIs, the p-value beside each and
    a zero line; one colour per test method. A ``delong_p`` column, where present, is
    shown beside ``p_value``."""
    n = len(comparisons)
    fig, ax = plt.subplots(figsize=(6.5, 0.5 * n + 1.6), layout="constrained")
    methods = list(dict.fromkeys(comparisons["method"]))
    ys = np.arange(n, dtype=float)
    for i, method in enumerate(methods):
        rows = (comparisons["method"] == method).to_numpy()
        _ci_rows(ax, ys[rows], comparisons["difference"][rows], comparisons["ci_low"][rows], comparisons["ci_high"][rows], f"C{i}", method)
    texts = [_p_text(p) for p in pd.to_numeric(comparisons["p_value"], errors="coerce")]
    if "delong_p" in comparisons:  # both tests in one table: show DeLong's p beside
        texts = [f"{t}, DeLong {_p_text(p)}" for t, p in zip(texts, pd.to_numeric(comparisons["delong_p"], errors="coerce"))]
    for y, text in zip(ys, texts):
        ax.annotate(text, (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=8)
    ax.axvline(0, c="grey", ls="--", lw=1)
    ax.set_yticks(ys, [f"{a} − {b}" for a, b in zip(comparisons["model_a"], comparisons["model_b"])])
    ax.set(xlabel="difference in AUC", title=title, ylim=(max(n, 1) - 0.5, -0.5))
    ax.grid(axis="x", alpha=0.3)
    if n:
        ax.legend(fontsize=7, loc="best")
    save_figure(fig, path)
