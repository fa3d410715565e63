"""Segmentation figures (matplotlib / seaborn), each written to one PNG with
``casebook.analysis.plotting.save_figure``: volume agreement, three-plane overlays, per-case boxplots
and the model comparison table."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: cluster nodes and CI have no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from casebook.analysis.plotting import plot_text_table, save_figure

# (name, slicing axis, spacing index of the rows, spacing index of the columns) of each
# view of a (z, y, x) volume; rows of coronal and sagittal slices are z.
VIEWS = (("axial", 0, 1, 2), ("coronal", 1, 0, 2), ("sagittal", 2, 0, 1))

# Column headings of the rendered comparison table, with units.
HEADERS = {"dice": "Dice", "iou": "IoU", "hd95": "HD95 (mm)", "nsd": "NSD", "found": "found / cases with it"}


def plot_bland_altman(true_ml, pred_ml, stats: dict, title: str, path: str | Path, *, region: str) -> None:
    """Predicted vs true volume (with the identity line) and the Bland-Altman plot.

    ``stats`` is ``metrics.bland_altman(true_ml, pred_ml)``; differences are pred - true.
    """
    true_ml, pred_ml = np.asarray(true_ml, dtype=float), np.asarray(pred_ml, dtype=float)
    fig, (ax_id, ax_ba) = plt.subplots(1, 2, figsize=(9, 4), layout="constrained")
    ax_id.scatter(true_ml, pred_ml, s=18, alpha=0.8)
    both = np.concatenate([true_ml, pred_ml])
    lo, hi = (float(np.nanmin(both)), float(np.nanmax(both))) if both.size else (0.0, 1.0)
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    ax_id.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", c="grey", lw=1, label="identity")
    r = stats.get("pearson_r", float("nan"))
    ax_id.set(xlabel="true volume (ml)", ylabel="predicted volume (ml)", title=f"{region}: r = {r:.3f} (n = {stats['n']})")
    ax_id.legend(loc="upper left", fontsize=8)

    ax_ba.scatter((true_ml + pred_ml) / 2, pred_ml - true_ml, s=18, alpha=0.8)
    for key, style, name in (("bias", "-", "bias"), ("loa_low", "--", "-1.96 SD"), ("loa_high", "--", "+1.96 SD")):
        value = stats[key]
        if np.isnan(value):  # one case: no SD, so no limits of agreement
            continue
        ax_ba.axhline(value, c="C3", ls=style, lw=1)
        ax_ba.annotate(
            f"{name}: {value:.2f} ml", (1.0, value), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=8, color="C3"
        )
    ax_ba.axhline(0, c="grey", lw=0.5)
    ax_ba.set(xlabel="mean of true and predicted (ml)", ylabel="predicted - true (ml)", title=f"{region}: Bland-Altman")
    fig.suptitle(title)
    save_figure(fig, path)


def _label_colours(label_names: dict[int, str]) -> dict[int, tuple]:
    palette = sns.color_palette("tab10", 10)
    # Same rule as metrics.default_regions: no background, no "unused" placeholder labels.
    foreground = sorted(v for v, name in label_names.items() if v > 0 and name.strip().lower() != "unused")
    return {v: palette[i % len(palette)] for i, v in enumerate(foreground)}


def _display_range(image: np.ndarray) -> tuple[float, float]:
    # Robust window: a few bright voxels (vessels, artefacts) should not wash out the rest.
    lo, hi = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    return float(lo), float(hi if hi > lo else lo + 1.0)


def _centre(truth: np.ndarray) -> tuple[int, ...]:
    """Voxel index of the centre of mass of the true foreground (volume centre if empty)."""
    fg = np.argwhere(truth > 0)
    if fg.size == 0:
        return tuple(s // 2 for s in truth.shape)
    return tuple(round(float(c)) for c in fg.mean(axis=0))


def _draw_labels(ax, labels: np.ndarray, colours: dict[int, tuple], *, truth: bool) -> None:
    """Truth: a light fill and solid contours; prediction: dashed contours; per label value."""
    for value, colour in colours.items():
        mask = (labels == value).astype(float)
        if not mask.any() or min(mask.shape) < 2:  # contour() warns or fails on these
            continue
        if truth:
            ax.contourf(mask, levels=[0.5, 1.5], colors=[colour], alpha=0.25)
        ax.contour(mask, levels=[0.5], colors=[colour], linewidths=1.2, linestyles="solid" if truth else "dashed")


def plot_overlays(cases: list[dict], title: str, path: str | Path, *, label_names: dict[int, str]) -> None:
    """One row per case: axial, coronal and sagittal slices through the true foreground's
    centre of mass, truth solid (with a light fill), prediction dashed.

    Each case has ``image``, ``truth``, ``pred`` (z, y, x), ``spacing`` (z, y, x) mm and
    ``caption``. The pixel aspect is set from the spacing, so thick slices look thick;
    coronal and sagittal views put z = 0 at the bottom.
    """
    colours = _label_colours(label_names)
    fig, axes = plt.subplots(len(cases), 3, figsize=(9, 3 * len(cases) + 0.8), squeeze=False, layout="constrained")
    for row, case in zip(axes, cases):
        image, truth, pred = (np.asarray(case[k]) for k in ("image", "truth", "pred"))
        spacing = [float(s) for s in case["spacing"]]
        centre = _centre(truth)
        vmin, vmax = _display_range(image)
        for ax, (view, axis, row_sp, col_sp) in zip(row, VIEWS):
            index = [slice(None)] * 3
            index[axis] = centre[axis]
            origin = "upper" if view == "axial" else "lower"
            ax.imshow(image[tuple(index)], cmap="gray", vmin=vmin, vmax=vmax, origin=origin, interpolation="nearest")
            _draw_labels(ax, truth[tuple(index)], colours, truth=True)
            _draw_labels(ax, pred[tuple(index)], colours, truth=False)
            ax.set_aspect(spacing[row_sp] / spacing[col_sp])  # height / width of one pixel
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{view} {centre[axis]}", fontsize=8)
        row[0].set_ylabel(case.get("caption", ""), fontsize=8)
    handles = [Patch(color=colours[v], label=label_names[v]) for v in colours]
    handles += [Line2D([], [], c="k", ls="solid", label="truth"), Line2D([], [], c="k", ls="dashed", label="prediction")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(title)
    save_figure(fig, path)


def plot_case_boxplots(tables: dict[str, pd.DataFrame], metric: str, title: str, path: str | Path) -> None:
    """Per region, one box per model with every case as a point (NaN cases left out)."""
    long = pd.concat([t.assign(model=name) for name, t in tables.items()], ignore_index=True)
    long = long.dropna(subset=[metric])
    n_regions = max(long["region"].nunique(), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * n_regions * len(tables) + 1.5), 4), layout="constrained")
    with warnings.catch_warnings():
        # seaborn 0.13 still passes boxplot(vert=...), deprecated in matplotlib 3.11.
        warnings.filterwarnings("ignore", message=".*vert: bool", category=DeprecationWarning)
        sns.boxplot(data=long, x="region", y=metric, hue="model", showfliers=False, ax=ax)  # points show outliers
    sns.stripplot(data=long, x="region", y=metric, hue="model", dodge=True, size=3, palette="dark:k", alpha=0.6, legend=False, ax=ax)
    ax.set(xlabel="", ylabel=metric, title=title)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def _ci_text(summary: dict, digits: int) -> str:
    if np.isnan(summary["mean"]):
        return "n/a"
    text = f"{summary['mean']:.{digits}f} ({summary['ci_low']:.{digits}f}-{summary['ci_high']:.{digits}f})"
    if summary.get("n_nan", 0):  # e.g. HD95 undefined when only one of truth and prediction is empty
        text += f" [{summary['n_nan']} undefined]"
    return text


def comparison_table(summaries: dict[str, dict], metrics: Sequence[str] = ("dice", "hd95", "nsd")) -> pd.DataFrame:
    """One row per model and region: ``<metric>`` as "mean (CI low-CI high)" text for the
    report, and ``<metric>_mean``, ``_ci_low``, ``_ci_high``, ``_n_nan`` numbers for
    sorting. ``summaries`` maps a model name to its ``metrics.summarize_cases`` result."""
    rows = []
    for model, summary in summaries.items():
        for region, by_metric in summary["regions"].items():
            row: dict = {"model": model, "region": region, "n_cases": summary["n_cases"]}
            for metric in metrics:
                s = by_metric[metric]
                row[metric] = _ci_text(s, digits=2 if metric.startswith("hd") else 3)  # mm vs fractions
                row.update({f"{metric}_{k}": s[k] for k in ("mean", "ci_low", "ci_high", "n_nan")})
            if "detection" in by_metric:
                found = by_metric["detection"]
                row["found"] = f"{found['found']}/{found['cases_with_region']}"
            rows.append(row)
    return pd.DataFrame(rows)


def plot_comparison_table(table: pd.DataFrame, title: str, path: str | Path) -> None:
    """The text columns of ``comparison_table`` drawn as a table image for the report."""
    # The text columns only (pandas 3 gives text a string dtype, older pandas object).
    shown = table[[c for c in table.columns if pd.api.types.is_string_dtype(table[c])]]
    plot_text_table(shown.astype(str).values.tolist(), [HEADERS.get(c, c) for c in shown.columns], title, path)
