"""Comparison of the segmentation models of a case study (U-Net vs its variants).

All models are scored on the same test cases, so they are compared case by case: a
boxplot of the per-case Dice per region and model, a table of means with their CIs,
and a paired Wilcoxon signed-rank test of each model against the first one.
"""

from __future__ import annotations

import html
from typing import Sequence

import pandas as pd

from casebook.fileio import atomic_path, read_json, write_text_atomic
from casebook.tasks.segmentation import figures
from casebook.tasks.segmentation.metrics import wilcoxon_paired


def paired_tests(tables: dict[str, pd.DataFrame], metric: str = "dice") -> pd.DataFrame:
    """Each model against the first one, per region, on the cases both scored."""
    names = list(tables)
    rows = []
    for other in names[1:]:
        for region, reference in tables[names[0]].groupby("region", sort=False):
            candidate = tables[other][tables[other]["region"] == region]
            a = reference.set_index("case_id")[metric]
            b = candidate.set_index("case_id")[metric]
            rows.append({"model": other, "reference": names[0], "region": region, **wilcoxon_paired(b, a)})
    return pd.DataFrame(rows)


def compare_stage(
    runs: Sequence[str], per_case_paths: Sequence[str], metrics_paths: Sequence[str], outputs: dict[str, str], *, title: str
) -> pd.DataFrame:
    """The summarize_seg rule: boxplots, the comparison table (PNG, HTML, TSV) and the
    paired tests, for the runs (``model/fold_k``) of one case study."""
    tables = {run: pd.read_csv(path, sep="\t", dtype={"case_id": str}) for run, path in zip(runs, per_case_paths)}
    summaries = {run: read_json(path) for run, path in zip(runs, metrics_paths)}
    table = figures.comparison_table(summaries)
    tests = paired_tests(tables) if len(tables) > 1 else pd.DataFrame()
    if not tests.empty:
        p = tests.rename(columns={"model": "run", "p_value": "wilcoxon_p_vs_first"})[["run", "region", "wilcoxon_p_vs_first"]]
        table = table.merge(p, left_on=[table.columns[0], "region"], right_on=["run", "region"], how="left").drop(columns="run")
    with atomic_path(outputs["tsv"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    figures.plot_case_boxplots(tables, "dice", title, outputs["boxplot"])
    figures.plot_comparison_table(table, title, outputs["figure"])
    shown = table[[c for c in table.columns if not c.endswith(("_mean", "_ci_low", "_ci_high"))]]
    write_text_atomic(outputs["table"], f"<html><body><h3>{html.escape(title)}</h3>{shown.to_html(index=False, border=0)}</body></html>\n")
    return table
