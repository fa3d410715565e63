"""Figures of a federated study: test AUC against round, per site, and against privacy."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from casebook.analysis.plotting import save_figure


def plot_rounds(curves: pd.DataFrame, scores: pd.DataFrame, title: str, path: str | Path) -> None:
    """Each federated arm's test AUC (all sites' test patients) against the round; the
    pooled and site-alone arms' final AUC as horizontal reference lines."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm, rows in curves[curves["kind"] == "federated"].groupby("arm", sort=False):
        ax.plot(rows["round"], rows["test_auc"], marker="o", label=arm)
    overall = scores[scores["test_on"] == "all sites"].set_index("arm")
    for k, arm in enumerate(a for a in overall.index if overall.loc[a, "kind"] != "federated"):
        style = dict(color="black", linestyle="--") if arm == "pooled" else dict(color=f"C{k + 5}", linestyle=":")
        ax.axhline(overall.loc[arm, "auc"], label=f"{arm} (final)", **style)
    ax.set(xlabel="round", ylabel="test AUC (all sites)", title=f"{title}: federated training")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_sites(scores: pd.DataFrame, title: str, path: str | Path) -> None:
    """Test AUC with its 95% interval, per arm (bars) and test site (groups)."""
    sites = list(dict.fromkeys(scores["test_on"]))
    arms = list(dict.fromkeys(scores["arm"]))
    width = 0.8 / len(arms)
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, 20))[: len(arms)] if len(arms) > 10 else [f"C{k}" for k in range(len(arms))]
    fig, ax = plt.subplots(figsize=(min(14, 3 + 0.35 * len(sites) * len(arms)), 4.8))
    x = np.arange(len(sites))
    for k, arm in enumerate(arms):
        rows = scores[scores["arm"] == arm].set_index("test_on").reindex(sites)
        err = np.vstack([rows["auc"] - rows["ci_low"], rows["ci_high"] - rows["auc"]]).clip(min=0)
        ax.bar(x + (k - (len(arms) - 1) / 2) * width, rows["auc"], width, yerr=err, capsize=2, label=arm, color=colours[k])
    ax.set_xticks(x, sites)
    ax.set(ylabel="test AUC", xlabel="test patients of", ylim=(0, 1.05), title=f"{title}: test AUC per site (95% patient-bootstrap CI)")
    ax.axhline(0.5, color="grey", linewidth=0.8)
    ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_figure(fig, path)


def plot_privacy(scores: pd.DataFrame, title: str, path: str | Path) -> None:
    """Test AUC against the privacy spent (epsilon): the private arms, the non-private
    federated arms at epsilon = infinity (drawn at the right edge), pooled as a line."""
    overall = scores[(scores["test_on"] == "all sites") & (scores["kind"] == "federated")]
    private = overall[overall["epsilon"].notna()].sort_values("epsilon")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    if private.empty:
        ax.text(0.5, 0.5, "no arm with differential privacy is configured\n(federated.strategies.<arm>.privacy)", ha="center", va="center")
        ax.set_axis_off()
        save_figure(fig, path)
        return
    right = float(private["epsilon"].max()) * 10  # epsilon spans decades: a log axis, infinity drawn past the largest
    ax.set_xscale("log")
    ax.errorbar(
        private["epsilon"], private["auc"], yerr=[private["auc"] - private["ci_low"], private["ci_high"] - private["auc"]],
        marker="o", capsize=3, label="private arms",
    )  # fmt: skip
    for _, row in private.iterrows():
        ax.annotate(row["arm"], (row["epsilon"], row["auc"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    for k, (_, row) in enumerate(overall[overall["epsilon"].isna()].iterrows()):
        ax.errorbar(
            [right * (1 + 0.15 * k)], [row["auc"]], yerr=[[row["auc"] - row["ci_low"]], [row["ci_high"] - row["auc"]]],
            marker="s", capsize=3, label=f"{row['arm']} (no privacy, epsilon infinite)",
        )  # fmt: skip
    pooled = scores[(scores["arm"] == "pooled") & (scores["test_on"] == "all sites")]
    if len(pooled):
        ax.axhline(float(pooled["auc"].iloc[0]), color="black", linestyle="--", label="pooled")
    ax.set(
        xlabel="epsilon at the configured delta (client-level, RDP accountant; log scale)",
        ylabel="test AUC (all sites)",
        title=f"{title}: the cost of privacy",
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    save_figure(fig, path)
