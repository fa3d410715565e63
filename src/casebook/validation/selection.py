"""Model selection on validation data only.

The select_model rule's only inputs are the models' pooled out-of-fold validation
predictions, so the workflow's DAG itself guarantees that no test prediction can enter
the choice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from casebook.evaluate import point_metrics
from casebook.validation.crossval import prob_columns

#: metrics for which a larger value is better; selection maximises one of them
SELECTABLE = ("auc", "balanced_accuracy", "f1", "accuracy")


def select_model(oof_tables: dict[str, pd.DataFrame], metric: str = "auc") -> dict[str, Any]:
    """The model with the best pooled out-of-fold ``metric`` (threshold-free AUC by
    default; the threshold metrics at 0.5). Ties go to the model listed first."""
    if metric not in SELECTABLE:
        raise ValueError(f"cannot select on {metric!r}; choose one of {SELECTABLE}")
    scores = {}
    for model, table in oof_tables.items():
        cols = prob_columns(table)
        scores[model] = point_metrics(table["label"].to_numpy(), table[cols].to_numpy())[metric]
    finite = {m: s for m, s in scores.items() if np.isfinite(s)}
    if not finite:
        raise ValueError(f"no model has a finite out-of-fold {metric}: {scores}")
    chosen = max(finite, key=lambda m: finite[m])
    return {
        "selected": chosen,
        "metric": metric,
        "data": "pooled out-of-fold validation predictions (no test data)",
        "scores": scores,
        "n_images": {m: int(len(t)) for m, t in oof_tables.items()},
    }
