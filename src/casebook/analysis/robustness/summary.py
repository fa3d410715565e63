"""The robustness summary of a case study: every model's sweep in one figure, for any family."""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from casebook.analysis.robustness.figures import plot_robustness


def robustness_summary_stage(runs: Sequence[str], table_paths, cfg: dict[str, Any], path: str, *, metric: str, title: str) -> None:
    """robustness_summary: the models' performance-vs-severity curves overlaid."""
    tables = {run: pd.read_csv(p, sep="\t") for run, p in zip(runs, table_paths)}
    plot_robustness(tables, metric, float(cfg.get("margin", 0.05)), f"{title}: test {metric} under perturbation", path)
