"""Figures of the registration family: checkerboards and difference images before and
after registration, Jacobian determinant maps with folding marked, and every method's
metrics with their CIs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib.colors import ListedColormap, TwoSlopeNorm  # noqa: E402

from casebook.analysis.plotting import save_figure  # noqa: E402
from casebook.tasks.registration.fields import warp_array  # noqa: E402
from casebook.tasks.registration.metrics import jacobian_determinant  # noqa: E402
from casebook.tasks.registration.pairs import Pairs  # noqa: E402

LABELS = {
    "dice": "Dice of the warped labels",
    "hd95": "HD95 (mm)",
    "sdlogj": "SD of log Jacobian",
    "folding_percent": "folding pixels (%)",
    "field_error_mm": "field error (mm)",
    "seconds": "seconds per pair",
}
_FOLD = ListedColormap(["red"])


def checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    """``a`` and ``b`` in alternating square tiles (SimpleITK's ``CheckerBoard``): edges
    that jump between tiles are misaligned."""
    board = sitk.CheckerBoard(
        sitk.GetImageFromArray(np.asarray(a, np.float32)), sitk.GetImageFromArray(np.asarray(b, np.float32)), [tiles, tiles]
    )
    return sitk.GetArrayFromImage(board)


def plot_checkerboards(pairs: Pairs, fields: dict[str, np.ndarray], index: int, title: str, path: str | Path) -> None:
    """One test pair, one row per method: the warped moving image with the fixed labels'
    outlines, its checkerboard with the fixed image, and the warped minus the fixed image
    (the ``unregistered`` row is the pair before registration)."""
    fixed = pairs.fixed[index]
    fig, axes = plt.subplots(len(fields), 3, figsize=(7.2, 2.4 * len(fields)), squeeze=False, layout="constrained")
    for row, (method, ddf) in enumerate(fields.items()):
        warped = warp_array(pairs.moving[index].astype(np.float32), ddf[index])
        axes[row, 0].imshow(warped, cmap="gray", vmin=0, vmax=1)
        levels = np.unique(pairs.fixed_label[index])[1:] - 0.5
        if len(levels):  # a slice without labels has no outline
            axes[row, 0].contour(pairs.fixed_label[index], levels=levels, colors="yellow", linewidths=0.4)
        axes[row, 0].set_ylabel(method, fontsize=9)
        axes[row, 1].imshow(checkerboard(fixed, warped), cmap="gray", vmin=0, vmax=1)
        shown = axes[row, 2].imshow(warped - fixed, cmap="RdBu_r", vmin=-0.5, vmax=0.5)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, heading in zip(axes[0], ("warped moving, fixed labels outlined", "checkerboard with the fixed", "warped minus fixed")):
        ax.set_title(heading, fontsize=8)
    fig.colorbar(shown, ax=axes[:, 2], shrink=0.6)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_jacobians(fields: dict[str, np.ndarray], index: int, title: str, path: str | Path) -> None:
    """The Jacobian determinant of each field that moves anything (the true one first)
    on one test pair (1: area kept; below 1: shrinking; above: growing), folding pixels
    (at most 0) in red."""
    methods = {m: f for m, f in fields.items() if np.any(f[index])}
    if not methods:
        methods = fields
    fig, axes = plt.subplots(1, len(methods), figsize=(2.8 * len(methods), 3.0), squeeze=False, layout="constrained")
    norm = TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=2.0)
    for ax, (method, ddf) in zip(axes[0], methods.items()):
        det = jacobian_determinant(ddf[index])
        shown = ax.imshow(np.clip(det, 0.0, 2.0), cmap="PuOr_r", norm=norm)
        folding = det <= 0
        ax.imshow(np.where(folding, 1.0, np.nan), cmap=_FOLD, vmin=0, vmax=1)
        ax.set_title(f"{method}: {100 * folding.mean():.2f}% folding", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes[0, -1], shrink=0.8, label="det J")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_metrics(metrics: dict[str, Any], title: str, path: str | Path) -> None:
    """Every method's mean of each metric with its CI (seconds on a log scale, for the
    methods that run something)."""
    methods = list(metrics["methods"])
    fig, axes = plt.subplots(2, 3, figsize=(10.0, 5.6), layout="constrained")
    colours = plt.get_cmap("tab10")(np.arange(len(methods)))
    for ax in axes.ravel()[len(metrics["metrics"]) :]:
        ax.axis("off")
    for ax, key in zip(axes.ravel(), metrics["metrics"]):
        label = LABELS[key]
        shown = [i for i, m in enumerate(methods) if key != "seconds" or metrics["methods"][m][key]["mean"] > 0]
        stats = [metrics["methods"][methods[i]][key] for i in shown]
        means = np.array([s["mean"] for s in stats])
        errors = np.abs(np.array([[s["ci_low"], s["ci_high"]] for s in stats]).T - means)
        ax.bar(np.arange(len(shown)), means, yerr=errors, color=colours[shown], capsize=3)
        ax.set_xticks(np.arange(len(shown)), [methods[i] for i in shown], rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
        if key == "seconds":
            ax.set_yscale("log")
    fig.suptitle(f"{title} (bars: mean, whiskers: {100 * metrics['ci_level']:.0f}% CI over patients)", fontsize=10)
    save_figure(fig, path)


def plot_ef_agreement(table, agreement: dict[str, dict], title: str, path: str | Path) -> None:
    """Each method's ejection fraction against the reference labels' (left) and their
    Bland-Altman plot (right: difference against mean; ``agreement``'s bias solid, its
    limits of agreement dashed)."""
    methods = list(agreement)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 4.2), layout="constrained")
    colours = plt.get_cmap("tab10")(np.arange(len(methods)))
    for colour, method in zip(colours, methods):
        rows = table[table["method"] == method]
        ef, ref = rows["ef_percent"].to_numpy(), rows["reference_ef_percent"].to_numpy()
        left.scatter(ref, ef, color=colour, label=method, s=18)
        right.scatter((ef + ref) / 2, ef - ref, color=colour, s=18)
        stats = agreement[method]
        for value, style in zip([stats["bias"], *stats["limits_of_agreement"]], ("-", "--", "--")):
            if np.isfinite(value):  # one patient: no limits
                right.axhline(value, color=colour, linestyle=style, linewidth=0.8)
    span = [0, max(80.0, float(table["ef_percent"].max()) + 5)]
    left.plot(span, span, color="grey", linewidth=0.8)
    left.set_xlabel("reference EF (%)")
    left.set_ylabel("tracked EF (%)")
    left.legend(fontsize=8)
    right.set_xlabel("mean of tracked and reference EF (%)")
    right.set_ylabel("tracked minus reference (points)")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_cine(pairs: Pairs, tracked: dict[str, np.ndarray], title: str, path: str | Path) -> None:
    """One test cine's mid-ventricular slice over the cycle, one row per tracking method:
    the frame with the reference blood pool and myocardium outlined (yellow) and the
    end-diastolic labels the method warped there (cyan)."""
    patient = sorted(set(pairs.patient))[0]
    mine = np.flatnonzero(pairs.patient == patient)
    slice_ = int(pairs.slice[mine][np.argmax([(pairs.moving_label[i] == 1).sum() for i in mine])])
    rows_of = [i for i in mine if pairs.slice[i] == slice_]
    rows_of.sort(key=lambda i: pairs.frame[i])
    methods = [m for m in tracked if np.any(tracked[m][rows_of] != pairs.moving_label[rows_of])] or list(tracked)
    frames = [(0, pairs.moving[rows_of[0]], pairs.moving_label[rows_of[0]], {m: pairs.moving_label[rows_of[0]] for m in methods})]
    frames += [(int(pairs.frame[i]), pairs.fixed[i], pairs.fixed_label[i], {m: tracked[m][i] for m in methods}) for i in rows_of]
    fig, axes = plt.subplots(
        len(methods), len(frames), figsize=(1.6 * len(frames), 1.8 * len(methods)), squeeze=False, layout="constrained"
    )
    for r, method in enumerate(methods):
        for c, (frame, image, truth, warped) in enumerate(frames):
            ax = axes[r, c]
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.contour(truth, levels=[0.5, 1.5], colors="yellow", linewidths=0.6)
            ax.contour(warped[method], levels=[0.5, 1.5], colors="cyan", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {frame}", fontsize=8)
        axes[r, 0].set_ylabel(method, fontsize=8)
    fig.suptitle(f"{title} ({patient}, slice {slice_}; yellow: reference, cyan: tracked)", fontsize=9)
    save_figure(fig, path)
