"""Paired comparison of classifiers on the same test images: the DeLong test of their
AUCs and a paired bootstrap over patients (which respects several images per patient,
where DeLong treats images as independent)."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import pandas as pd

from casebook.analysis.stats import delong_test, paired_bootstrap_test
from casebook.tasks.classification.validation.crossval import prob_columns


def aligned(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The tables sorted by image, refused unless they hold the same test images."""
    out = {m: t.sort_values("image_id").reset_index(drop=True) for m, t in tables.items()}
    names = list(out)
    for name in names[1:]:
        if not out[name]["image_id"].equals(out[names[0]]["image_id"]):
            raise ValueError(f"models {names[0]} and {name} were tested on different images: no paired comparison")
    return out


def pairwise_comparisons(tables: dict[str, pd.DataFrame], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per model pair (binary tasks): AUC difference, DeLong and bootstrap p-values."""
    tables = aligned(tables)
    rows: list[dict[str, Any]] = []
    for a, b in combinations(tables, 2):
        ta, tb = tables[a], tables[b]
        if len(prob_columns(ta)) != 2:
            raise ValueError("paired AUC comparison is implemented for two classes")
        labels = ta["label"].to_numpy()
        score_a, score_b = ta["prob_1"].to_numpy(), tb["prob_1"].to_numpy()
        delong = delong_test(labels, score_a, score_b)
        boot = paired_bootstrap_test(labels, score_a, score_b, ta["patient_id"].to_numpy(), n_boot=n_boot, seed=seed, level=level)
        rows.append(
            {
                "model_a": a,
                "model_b": b,
                "auc_a": delong["auc_a"],
                "auc_b": delong["auc_b"],
                "difference": delong["difference"],
                "delong_z": delong["z"],
                "delong_p": delong["p_value"],
                "ci_low": boot["ci_low"],
                "ci_high": boot["ci_high"],
                "bootstrap_p": boot["p_value"],
                "p_value": boot["p_value"],
                "method": "paired bootstrap over patients (CI, p); DeLong test (delong_p)",
                "n_images": len(labels),
                "n_patients": int(ta["patient_id"].nunique()),
            }
        )
    return pd.DataFrame(rows)
