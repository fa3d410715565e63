"""The breakdown severity of a robustness sweep: where a metric first falls by more
than a margin below its clean value."""

from __future__ import annotations

import pandas as pd


def breakdown(table: pd.DataFrame, metric: str, margin: float) -> dict[str, float | None]:
    """Per perturbation, the lowest severity at which ``metric`` is at least ``margin``
    (absolute) below the clean value (the perturbation's lowest severity, which
    ``sweep`` always writes), or None when no severity gets that low."""
    out: dict[str, float | None] = {}
    for name, part in table.groupby("perturbation", sort=False):
        part = part.sort_values("severity")
        limit = part[metric].iloc[0] - margin
        # a rounding tolerance: a drop of exactly ``margin`` counts as a breakdown
        below = part.iloc[1:][part[metric].iloc[1:] <= limit + 1e-9]
        out[str(name)] = float(below["severity"].iloc[0]) if len(below) else None
    return out
