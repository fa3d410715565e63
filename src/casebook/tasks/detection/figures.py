"""Figures of the detection family: FROC curves with their bootstrap bands, test scans
with hits, false positives and misses marked, and sensitivity by finding size."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Circle, Rectangle  # noqa: E402

from casebook.analysis.plotting import save_figure  # noqa: E402
from casebook.boxes import Box  # noqa: E402
from casebook.tasks.detection.froc import FP_RATES, outcomes  # noqa: E402
from casebook.tasks.detection.volumes import Volumes  # noqa: E402

#: how each candidate outcome and each finding is drawn
STYLE = {"hit": "yellow", "false positive": "red", "missed": "cyan", "excluded": "grey"}


def plot_froc(per_model: dict[str, dict[str, Any]], title: str, path: str | Path) -> None:
    """Sensitivity at each false-positive rate per model, with its bootstrap band; the
    CPM and its interval in the legend."""
    fig, ax = plt.subplots(figsize=(5.6, 4.0), layout="constrained")
    for name, m in per_model.items():
        line = ax.plot(FP_RATES, m["sensitivity"], marker="o", label=f"{name}: CPM {m['cpm']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]")
        ax.fill_between(FP_RATES, m["sensitivity_ci_low"], m["sensitivity_ci_high"], color=line[0].get_color(), alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xticks(FP_RATES, ["1/8", "1/4", "1/2", "1", "2", "4", "8"])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per scan")
    ax.set_ylabel("sensitivity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)


def _view(volumes: Volumes, i: int, box: Box) -> tuple[np.ndarray, int | None]:
    """The 2D image to draw: the axial slice through a finding's centre in 3D (and its
    index), the image itself in 2D."""
    image = volumes.images[i]
    if volumes.ndim == 2:
        return np.asarray(image), None
    z = int(np.clip(np.rint(volumes.to_index(i, box.centre)[2]), 0, image.shape[0] - 1))
    return np.asarray(image[z]), z


def plot_overlays(
    volumes: Volumes, boxes: Sequence[Sequence[Box]], cands: Sequence[Sequence[tuple]], title: str, path: str | Path, n: int = 4
) -> None:
    """Up to ``n`` test images, 3D ones at the slice through their largest finding:
    findings as their boxes (2D) or circles of their hit radius (3D; yellow found, dashed
    cyan missed, grey excluded),
    candidates centred in the slice as crosses (yellow hits, red false positives, grey
    ignored: within an excluded finding only) with their scores."""
    shown = [i for i, b in enumerate(boxes) if any(not x.excluded for x in b)][:n]
    fig, axes = plt.subplots(1, max(len(shown), 1), figsize=(3.2 * max(len(shown), 1), 3.5), squeeze=False, layout="constrained")
    colour_of = {"hit": STYLE["hit"], "false positive": STYLE["false positive"], "ignored": STYLE["excluded"]}
    for ax, i in zip(axes[0], shown):
        nodule = max((b for b in boxes[i] if not b.excluded), key=lambda b: b.diameter)
        image, z = _view(volumes, i, nodule)
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        spacing = volumes.spacing[i]
        for box in boxes[i]:
            centre = volumes.to_index(i, box.centre)
            if z is not None and abs(centre[2] - z) * spacing[2] > box.size[2] / 2:
                continue
            hit = any(np.linalg.norm(np.asarray(c) - np.asarray(box.centre)) <= box.diameter / 2 for _, c, _ in cands[i])
            colour = STYLE["excluded"] if box.excluded else STYLE["hit"] if hit else STYLE["missed"]
            style = {"fill": False, "color": colour, "lw": 1.0, "ls": "-" if hit else "--"}
            if z is None:  # 2D: the box itself
                size = np.asarray(box.size) / spacing[:2]
                ax.add_patch(Rectangle(centre[:2] - size / 2, *size, **style))
            else:  # 3D: the hit radius in the slice
                ax.add_patch(Circle(centre[:2], box.diameter / 2 / spacing[0], **style))
        for (score, centre, _), outcome in zip(cands[i], outcomes(cands[i], boxes[i])):
            pixel = volumes.to_index(i, centre)
            if z is not None and abs(pixel[2] - z) > 0.5:
                continue
            ax.plot(*pixel[:2], marker="x", color=colour_of[outcome], ms=5, mew=1.2)
            ax.text(pixel[0] + 1, pixel[1] - 1, f"{score:.2f}", color=colour_of[outcome], fontsize=6)
        ax.set_title(f"{volumes.ids[i]}" + ("" if z is None else f", slice {z}"), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=k) for k, c in STYLE.items()]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, frameon=False, bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_sensitivity_by_size(per_model: dict[str, dict[str, Any]], title: str, path: str | Path) -> None:
    """Sensitivity per diameter bin and model at the operating point, findings per bin below."""
    names = list(per_model)
    bins = per_model[names[0]]["sensitivity_by_size"]
    x = np.arange(len(bins))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(5.6, 3.6), layout="constrained")
    for k, name in enumerate(names):
        values = [r["sensitivity"] for r in per_model[name]["sensitivity_by_size"]]
        ax.bar(x + (k - (len(names) - 1) / 2) * width, np.nan_to_num(values), width, label=name)
    ax.set_xticks(x, [f"{r['from_mm']:g}-{r['to_mm']:g} mm\n(n={r['findings']})" for r in bins], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("sensitivity")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)
