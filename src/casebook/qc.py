"""The data set QC figure, drawn from a fingerprint (:mod:`casebook.fingerprint`).

One look before training: are the voxel spacings what we expect (and which one will the
plan resample to), and do all cases' foreground intensities overlap? A case with another
scanner, protocol or unit stands apart in one of the two panels. The figure is drawn
from the fingerprint JSON alone, so it never re-reads the images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

# the project's figure writer (Agg backend, its DPI, tight bounding box, atomic rename)
from casebook.analysis.plotting import save_figure

__all__ = ["plot_fingerprint", "MAX_CASES_DRAWN", "MAX_CHANNEL_PANELS"]

MAX_CASES_DRAWN = 200  # histogram lines per panel; more are unreadable and slow
MAX_CHANNEL_PANELS = 4  # one panel per channel up to this many, else the first channel only


def _drawn_cases(n: int) -> np.ndarray:
    """Indices of at most MAX_CASES_DRAWN cases, spread evenly over the data set."""
    if n <= MAX_CASES_DRAWN:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, MAX_CASES_DRAWN).round().astype(int))


def _plot_spacing(ax, fingerprint: dict[str, Any]) -> None:
    """One point per case: in-plane (mean of x, y) vs through-plane (z) spacing in 3D,
    x vs y in 2D; the median spacing as a cross."""
    spacing = np.array([case["spacing"] for case in fingerprint["cases"]], dtype=float)
    median = np.asarray(fingerprint["median_spacing"], dtype=float)
    if spacing.shape[1] >= 3:
        xy, median_xy = (spacing[:, 0] + spacing[:, 1]) / 2, (median[0] + median[1]) / 2
        points, centre = (xy, spacing[:, 2]), (median_xy, median[2])
        labels = ("in-plane spacing (mean of x, y) [mm]", "through-plane spacing (z) [mm]")
    else:
        points, centre = (spacing[:, 0], spacing[:, 1]), (median[0], median[1])
        labels = ("spacing x [mm]", "spacing y [mm]")
    alpha = 0.8 if len(spacing) <= 50 else 0.3
    ax.scatter(*points, s=14, alpha=alpha, c="C0", label="case")
    ax.scatter(*centre, s=90, marker="X", c="C3", zorder=3, label="median " + ", ".join(f"{m:.3g}" for m in centre))
    ax.set(xlabel=labels[0], ylabel=labels[1], title="voxel spacing")
    ax.legend(fontsize=7, loc="best")


def _plot_histograms(ax, fingerprint: dict[str, Any], channel: int) -> None:
    """Each case's foreground histogram (as a fraction of its samples, so cases with
    fewer foreground voxels compare) over the common edges, with the pooled percentiles."""
    edges = np.asarray(fingerprint["histogram_edges"][channel], dtype=float)
    cases = fingerprint["cases"]
    drawn = _drawn_cases(len(cases))
    alpha = 0.8 if len(drawn) <= 10 else max(0.05, min(0.5, 5.0 / len(drawn)))
    for i in drawn:
        counts = np.asarray(cases[i]["histogram"][channel], dtype=float)
        if counts.sum() > 0:
            ax.stairs(counts / counts.sum(), edges, color="C0", alpha=alpha, lw=1)
    props = fingerprint["foreground_intensity_properties_per_channel"][str(channel)]
    for key, name in (("percentile_00_5", "p0.5"), ("percentile_99_5", "p99.5")):
        ax.axvline(props[key], c="k", ls="--", lw=1, label=f"pooled {name} {props[key]:.4g}")
    name = fingerprint["channel_names"][channel]
    shown = f", {len(drawn)} of {len(cases)} cases" if len(drawn) < len(cases) else ""
    ax.set(xlabel=f"{name} intensity (foreground)", ylabel="fraction of samples", title=f"channel {name}{shown}")
    ax.legend(fontsize=7, loc="upper right")


def plot_fingerprint(fingerprint: dict[str, Any], out_png: str | Path) -> None:
    """The QC figure: spacing scatter (left), per-case intensity histograms of each
    channel (right; the first channel only when there are more than four)."""
    n_channels = len(fingerprint["channel_names"])
    channels = list(range(n_channels)) if n_channels <= MAX_CHANNEL_PANELS else [0]
    fig, axes = plt.subplots(1, 1 + len(channels), figsize=(4.2 * (1 + len(channels)), 3.8), squeeze=False, layout="constrained")
    _plot_spacing(axes[0][0], fingerprint)
    for ax, channel in zip(axes[0][1:], channels):
        _plot_histograms(ax, fingerprint, channel)
    modality = fingerprint.get("modality") or "unknown modality"
    fig.suptitle(f"{modality}, {fingerprint['n_cases']} cases ({fingerprint['spatial_dims']}D): data set fingerprint")
    save_figure(fig, out_png)
