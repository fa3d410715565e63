"""Plotting shared by every family (matplotlib / seaborn): saving a figure, the slice a
volume is shown at, training curves, sample images, the split and text tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: cluster nodes and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from casebook.fileio import atomic_path  # noqa: E402

if TYPE_CHECKING:  # only annotations name pandas: the fingerprint figure (casebook.qc) needs none
    import pandas as pd

DPI = 120


def save_figure(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    plt.close(fig)


def display_slice(volume: np.ndarray, mask: np.ndarray | None = None) -> tuple[int, ...]:
    """Index of the 2D view of a (C, *spatial) array: the first channel, and for 3D the
    axial slice with the most mask (or the middle one)."""
    if volume.ndim == 3:
        return (0,)
    if mask is not None and mask.any():
        return (0, int(mask.reshape(mask.shape[0], mask.shape[1], -1).sum(axis=(0, 2)).argmax()))
    return (0, volume.shape[1] // 2)


def plot_history(
    history: pd.DataFrame, best_epoch: int, title: str, path: str | Path, *, score: str, score_label: str, loss_label: str
) -> None:
    """Training and validation loss, the validation ``score`` column that picked the best
    epoch (the family's: AUC for a classifier, mean foreground Dice for a segmentation
    model), and the learning rate per epoch."""
    name = score_label
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(history["epoch"], history["train_loss"], label="train loss")
    ax_loss.plot(history["epoch"], history["val_loss"], label="validation loss")
    ax_loss.set(xlabel="epoch", ylabel=loss_label)
    ax_loss.legend(fontsize=8)
    ax_auc.plot(history["epoch"], history[score], c="C2", label=f"validation {name}")
    ax_auc.axvline(best_epoch, c="grey", ls=":", label=f"best epoch {best_epoch}")
    ax_auc.set(xlabel="epoch", ylabel=name)
    ax_lr = ax_auc.twinx()
    ax_lr.plot(history["epoch"], history["lr"], c="C3", alpha=0.5, lw=1)
    ax_lr.set_ylabel("learning rate", color="C3")
    ax_auc.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    save_figure(fig, path)


def plot_samples(images: np.ndarray, masks: np.ndarray | None, labels: np.ndarray, class_names, title: str, path, per_class=6) -> None:
    """A few preprocessed images of each class, lesion contours in red where masks exist."""
    fig, axes = plt.subplots(
        len(class_names), per_class, figsize=(1.6 * per_class, 1.8 * len(class_names) + 0.4), squeeze=False, layout="constrained"
    )
    for k, name in enumerate(class_names):
        rows = np.flatnonzero(labels == k)[:per_class]
        for j, ax in enumerate(axes[k]):
            ax.axis("off")
            if j >= len(rows):
                continue
            mask = None if masks is None else masks[rows[j]]
            view = display_slice(images[rows[j]], mask)
            ax.imshow(images[rows[j]][view], cmap="gray")
            if mask is not None and mask[view].any():
                ax.contour(mask[view], levels=[0.5], colors="r", linewidths=0.7)
        axes[k][0].set_title(name, loc="left", fontsize=9)
    fig.suptitle(title)
    save_figure(fig, path)


def plot_split(table: pd.DataFrame, class_names: Sequence[str], title: str, path) -> None:
    """Images per class in each set of each fold (stacked bars)."""
    counts = table.set_index(table["fold"] + " " + table["set"])
    cols = [c for c in counts.columns if c.startswith("n_label_")]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(counts)), 3.5))
    counts[cols].rename(columns={f"n_label_{k}": n for k, n in enumerate(class_names)}).plot.bar(stacked=True, ax=ax)
    for i, n in enumerate(counts["n_patients"]):
        ax.text(i, counts[cols].iloc[i].sum(), f"{n} pt", ha="center", va="bottom", fontsize=7)
    ax.set(ylabel="images", xlabel="", title=title)
    ax.tick_params(axis="x", labelrotation=45)
    save_figure(fig, path)


def plot_text_table(cells: list[list[str]], headers: list[str], title: str, path: str | Path) -> None:
    """A table of text drawn as an image for the report, its header row in bold."""
    # The axes is only a frame for the table: sized to its rows so the PNG has no margins.
    fig, ax = plt.subplots(figsize=(max(4.0, 2.0 * len(headers)), 0.25 * (len(cells) + 1) + 0.3))
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=headers, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(headers))))
    for (r, _), cell in table.get_celld().items():
        if r == 0:  # header row
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#e8e8e8")
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)
