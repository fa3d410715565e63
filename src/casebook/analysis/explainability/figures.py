"""Figures of the explain rule: the attribution grid, the deletion/insertion curves and
the sanity check, each written to one PNG by casebook.analysis.plotting.save_figure (atomic, fixed DPI)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: cluster nodes and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

from casebook.analysis.explainability.methods import LABELS  # noqa: E402
from casebook.analysis.plotting import display_slice, save_figure  # noqa: E402

MAP_CMAP = "jet"


def _label(method: str) -> str:
    return LABELS.get(method, method)


def _show(ax, image: np.ndarray, mask: np.ndarray | None, overlay: np.ndarray | None = None) -> None:
    """One image (its display slice for 3D), an optional map in [0, 1] over it, and the
    lesion contour in white where the mask has one."""
    view = display_slice(image, mask)
    ax.imshow(image[view], cmap="gray")
    if overlay is not None:
        ax.imshow(overlay[view], cmap=MAP_CMAP, alpha=0.45, vmin=0, vmax=1)
    if mask is not None and np.asarray(mask)[view].any():
        ax.contour(np.asarray(mask)[view], levels=[0.5], colors="w", linewidths=0.8)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_attribution_grid(
    images: np.ndarray,
    maps: dict[str, np.ndarray],
    masks: np.ndarray | None,
    table: pd.DataFrame,
    class_names: Sequence[str],
    title: str,
    path: str | Path,
) -> None:
    """Rows: images (``table`` gives image_id, label, prob and optionally target, the
    explained class); columns: the image, then each method's map over it on one colour
    scale [0, 1]. 3D volumes show the axial slice with the most lesion (or the middle)."""
    methods = list(maps)
    n_rows, n_cols = len(images), len(methods) + 1
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.7 * n_cols + 0.8, 1.75 * n_rows + 0.7), squeeze=False, layout="constrained")
    for i, row in enumerate(table.itertuples(index=False)):
        mask = None if masks is None else masks[i]
        _show(axes[i][0], images[i], mask)
        target = getattr(row, "target", None)
        explained = "" if target is None else f", map of {class_names[int(target)]}"
        axes[i][0].set_ylabel(f"{row.image_id}\n{class_names[int(row.label)]}\np={row.prob:.2f}{explained}", fontsize=6)
        for j, method in enumerate(methods, start=1):
            _show(axes[i][j], images[i], mask, maps[method][i])
    for j, method in enumerate(["image"] + methods):
        axes[0][j].set_title(_label(method), fontsize=8)
    mappable = plt.cm.ScalarMappable(cmap=MAP_CMAP, norm=Normalize(0, 1))
    fig.colorbar(mappable, ax=axes[:, 1:] if methods else axes, shrink=0.5, label="attribution (scaled per image)")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def plot_faithfulness(curves: dict[str, dict[str, Any]], title: str, path: str | Path) -> None:
    """Mean deletion (left) and insertion (right) curves per method, areas in the
    legend; the entry ``random`` (a random pixel order) is drawn dashed grey as the
    reference to beat: lower than it for deletion, higher for insertion."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True, layout="constrained")
    for ax, kind in zip(axes, ("deletion", "insertion")):
        for k, (method, c) in enumerate(curves.items()):
            style = {"c": "grey", "ls": "--"} if method == "random" else {"c": f"C{k}"}
            ax.plot(c["fraction"], c[kind], lw=1.5, label=f"{_label(method)} ({c[f'{kind}_auc']:.3f})", **style)
        better = "lower" if kind == "deletion" else "higher"
        ax.set(
            xlabel=f"fraction of pixels {'removed' if kind == 'deletion' else 'inserted'}",
            title=f"{kind} (AUC, {better} is better)",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("probability of the explained class")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def plot_sanity(
    image: np.ndarray,
    mask: np.ndarray | None,
    trained: dict[str, np.ndarray],
    randomized: dict[str, np.ndarray],
    spearman: dict[str, tuple[float, float]],
    pass_below: float,
    title: str,
    path: str | Path,
) -> None:
    """Top: one image's maps from the trained model (row 1) and the randomized model
    (row 2), per method. Bottom: mean (sd) Spearman correlation of the two per method,
    over the checked images, with the pass line: bars below it pass."""
    methods = list(trained)
    n_cols = max(len(methods), 1)
    fig = plt.figure(figsize=(1.8 * n_cols + 1.0, 7.0), layout="constrained")
    grid = fig.add_gridspec(3, n_cols, height_ratios=[1, 1, 1.2])
    for j, method in enumerate(methods):
        for i, (maps, name) in enumerate(((trained, "trained"), (randomized, "randomized"))):
            ax = fig.add_subplot(grid[i, j])
            _show(ax, image, mask, maps[method])
            if j == 0:
                ax.set_ylabel(f"{name} model", fontsize=8)
            if i == 0:
                ax.set_title(_label(method), fontsize=8)
    ax = fig.add_subplot(grid[2, :])
    means = [spearman[m][0] for m in methods]
    sds = [spearman[m][1] for m in methods]
    colours = ["C2" if mean < pass_below else "C3" for mean in means]  # nan compares False: red
    ax.bar(range(len(methods)), np.nan_to_num(means), yerr=np.nan_to_num(sds), color=colours, capsize=3)
    ax.axhline(pass_below, c="k", ls="--", lw=1, label=f"pass below {pass_below:g}")
    ax.set_xticks(range(len(methods)), [_label(m) for m in methods], fontsize=8)
    ax.set(ylabel="Spearman, trained vs randomized", ylim=(min(-0.1, *np.nan_to_num(means)) - 0.05, 1.05))
    ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
