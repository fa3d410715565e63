"""Test metrics per subgroup (site, sex, scanner: columns of the data set's manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from casebook.validation.stats import subgroup_metrics


def attach_groups(predictions: pd.DataFrame, manifest: pd.DataFrame, columns: Sequence[str], manifest_path: str | Path) -> pd.DataFrame:
    """The prediction table with the manifest's grouping columns joined on image_id.

    A column the manifest lacks is an error naming the manifest and the column.
    """
    clash = [c for c in columns if c in predictions.columns]
    if clash:
        raise ValueError(f"evaluate.subgroups: {', '.join(clash)} is not a grouping column (it is part of every prediction table)")
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise ValueError(
            f"{manifest_path}: no column(s) {', '.join(missing)} for the subgroup analysis "
            f"(evaluate.subgroups); the manifest has {', '.join(manifest.columns)}"
        )
    groups = manifest.set_index("image_id")[list(columns)].astype(str)
    return predictions.join(groups, on="image_id")


def subgroup_table(
    tables: dict[str, pd.DataFrame],
    thresholds: dict[str, float],
    columns: Sequence[str],
    cfg: dict[str, Any],
    *,
    seed: int = 0,
) -> pd.DataFrame:
    """Metrics with CIs for every (model, column, group), at each model's validation threshold."""
    frames = []
    for model, table in tables.items():
        n_classes = sum(c.startswith("prob_") for c in table.columns)
        for column in columns:
            part = subgroup_metrics(
                table,
                column,
                thresholds[model],
                n_classes,
                n_boot=int(cfg.get("n_bootstrap", 1000)),
                level=float(cfg.get("ci_level", 0.95)),
                seed=seed,
                min_patients=int(cfg.get("min_group_patients", 5)),
            )
            frames.append(part.assign(model=model, column=column))
    return pd.concat(frames, ignore_index=True)
