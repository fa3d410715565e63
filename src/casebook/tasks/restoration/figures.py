"""Figures of the restoration family: example panels with difference maps, the metrics
against the degradation's level (dose, slice factor) with their CIs, and the downstream
segmentation's Dice per method."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from casebook.analysis.plotting import save_figure  # noqa: E402
from casebook.tasks.restoration.degradations import Degradation  # noqa: E402
from casebook.tasks.restoration.metrics import MS_SSIM_LABEL  # noqa: E402

LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "ms_ssim": MS_SSIM_LABEL}


def plot_panels(
    images: dict[str, np.ndarray],
    window: Sequence[float],
    kind: Degradation,
    title: str,
    path: str | Path,
    *,
    region: tuple[int, int, int, int] | None = None,
) -> None:
    """One test slice: the reference and every method's output on the display window
    (top), each output minus the reference (bottom, +- a quarter of the window: 100 HU
    on the soft-tissue window); ``region`` (row, column, height, width), a missing
    region, outlined on every image."""
    reference = images["reference"]
    methods = [m for m in images if m != "reference"]
    fig, axes = plt.subplots(2, len(methods) + 1, figsize=(2.4 * (len(methods) + 1), 5.0), squeeze=False, layout="constrained")
    low, high = window
    axes[0, 0].imshow(reference, cmap="gray", vmin=low, vmax=high)
    axes[0, 0].set_title(kind.reference_label, fontsize=8)
    span = (high - low) / 4
    axes[1, 0].axis("off")
    for j, method in enumerate(methods, start=1):
        axes[0, j].imshow(images[method], cmap="gray", vmin=low, vmax=high)
        axes[0, j].set_title(method, fontsize=8)
        shown = axes[1, j].imshow(images[method] - reference, cmap="RdBu_r", vmin=-span, vmax=span)
        axes[1, j].set_title("minus reference", fontsize=8)
    for ax in axes.flat:
        if region is not None and ax.has_data():
            r, c, h, w = region
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), w, h, fill=False, edgecolor="gold", linewidth=0.8))
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes[1, 1:].tolist(), shrink=0.8, label=kind.units)
    fig.suptitle(f"{title} (window {low:g} to {high:g} {kind.units})", fontsize=9)
    save_figure(fig, path)


def plot_metric_vs_level(metrics: dict[str, Any], kind: Degradation, title: str, path: str | Path) -> None:
    """Mean PSNR, SSIM and MS-SSIM of every method against the level, with their bootstrap CIs."""
    levels = sorted(metrics["levels"], key=float)
    methods = list(metrics["levels"][levels[0]]["methods"])
    shown = [k for k in LABELS if k in metrics["levels"][levels[0]]["methods"][methods[0]]]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 3.6), layout="constrained")
    x = np.array([float(d) for d in levels])
    for ax, metric in zip(axes, shown):
        for method in methods:
            s = [metrics["levels"][d]["methods"][method][metric] for d in levels]
            mean = np.array([v["mean"] for v in s])
            err = np.array([[v["mean"] - v["ci_low"] for v in s], [v["ci_high"] - v["mean"] for v in s]])
            ax.errorbar(x, mean, yerr=err, marker="o", ms=4, capsize=3, label=method)
        if kind.log_scale:
            ax.set_xscale("log")
        ax.set_xticks(x, [f"{d:g}" for d in x])
        ax.set_xlabel(kind.level_axis)
        ax.set_ylabel(LABELS[metric])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title} ({int(metrics['ci_level'] * 100)}% CI, {metrics['ci_method']})", fontsize=9)
    save_figure(fig, path)


def plot_downstream(metrics: dict[str, Any], kind: Degradation, title: str, path: str | Path) -> None:
    """The downstream segmentation's mean Dice per method, one panel per level, with
    bootstrap CIs and, above each bar, its paired difference from the degraded input;
    the reference's Dice (the ceiling) dashed."""
    levels = sorted(metrics["levels"], key=float)
    fig, axes = plt.subplots(1, len(levels), figsize=(max(4.5, 1.4 * len(metrics["levels"][levels[0]]["methods"])) * len(levels), 3.8),
                             squeeze=False, layout="constrained")  # fmt: skip
    for ax, level in zip(axes[0], levels):
        methods = {m: s for m, s in metrics["levels"][level]["methods"].items() if m != "reference"}
        means = np.array([s["mean"] for s in methods.values()])
        err = np.array([[s["mean"] - s["ci_low"] for s in methods.values()], [s["ci_high"] - s["mean"] for s in methods.values()]])
        ax.bar(range(len(methods)), means, yerr=err, capsize=3, color="tab:blue", alpha=0.8)
        for x, method in enumerate(methods):
            diff = metrics["levels"][level]["minus_input"].get(method)
            if diff is not None:
                text = f"{diff['difference']:+.3f}\n({diff['ci_low']:+.3f} to {diff['ci_high']:+.3f})"
                ax.text(x, 0.03, text, ha="center", va="bottom", fontsize=6.5, color="white")
        ceiling = metrics["levels"][level]["methods"]["reference"]
        ax.axhline(ceiling["mean"], color="black", ls="--", lw=1)
        ax.set_xticks(range(len(methods)), list(methods), rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("Dice of the downstream segmentation")
        ax.set_title(f"{kind.describe(float(level))}; dashed: the reference, {ceiling['mean']:.3f}", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title} ({int(metrics['ci_level'] * 100)}% CI, {metrics['ci_method']})", fontsize=9)
    save_figure(fig, path)
