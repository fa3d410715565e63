"""What every family's robustness sweep shares: the test subset, and writing the table,
summary and figures of a sweep."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from casebook.analysis.robustness import figures
from casebook.fileio import atomic_path, json_safe, write_json


def test_subset(ids: list[str], max_images: int | None, seed: int) -> list[str]:
    """All test ids, or ``max_images`` of them drawn with ``seed`` (kept in split order)."""
    if max_images is None or len(ids) <= max_images:
        return list(ids)
    picked = np.sort(np.random.default_rng(seed).choice(len(ids), int(max_images), replace=False))
    return [ids[i] for i in picked]


def write_sweep(
    table: pd.DataFrame, summary: dict[str, Any], outputs: dict[str, str], *, wildcards, metric: str, margin: float, title: str
) -> None:
    """The table (TSV), the summary (strict JSON) and the curves figure of one sweep,
    classification or segmentation alike."""
    with atomic_path(outputs["table"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    write_json(outputs["summary"], json_safe(summary))
    run = f"{wildcards['model']} fold {wildcards['fold']}" if wildcards and "model" in wildcards else "model"
    figures.plot_robustness({run: table}, metric, margin, title, outputs["curves"])
