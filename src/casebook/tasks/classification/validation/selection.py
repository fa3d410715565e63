"""Model selection on validation data only.

The select_model rule's only inputs are the models' pooled out-of-fold validation
predictions, so the workflow's DAG itself guarantees that no test prediction can enter
the choice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from casebook.tasks.classification.metrics import point_metrics
from casebook.tasks.classification.validation.crossval import prob_columns


def select_model(oof_tables: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The model with the best mean validation AUC over the folds that every model
    trained (ties go to the model listed first).

    Models may train different folds (a slow one only fold 0): comparing one model's
    pooled folds with another's single fold would compare different images, and pooling
    separately trained models lowers the AUC when their probability scales differ. So
    each model is scored per shared fold, on the same validation images, and the fold
    AUCs are averaged.
    """
    shared = sorted(set.intersection(*(set(t["fold"].astype(int)) for t in oof_tables.values())))
    if not shared:
        folds = {m: sorted(set(t["fold"].astype(int))) for m, t in oof_tables.items()}
        raise ValueError(f"the models share no validation fold, so they cannot be compared on the same images: {folds}")
    per_fold: dict[str, dict[int, float]] = {}
    for model, table in oof_tables.items():
        cols = prob_columns(table)
        per_fold[model] = {}
        for fold in shared:
            part = table[table["fold"].astype(int) == fold]
            per_fold[model][fold] = point_metrics(part["label"].to_numpy(), part[cols].to_numpy())["auc"]
    scores = {m: float(np.nanmean(list(f.values()))) if np.isfinite(list(f.values())).any() else float("nan") for m, f in per_fold.items()}
    finite = {m: v for m, v in scores.items() if np.isfinite(v)}
    if not finite:
        raise ValueError(f"no model has a finite validation AUC on folds {shared}: {scores}")
    chosen = max(finite, key=lambda m: finite[m])
    return {
        "selected": chosen,
        "metric": "auc",
        "rule": "highest mean validation AUC over the folds every model trained",
        "data": "out-of-fold validation predictions (no test data)",
        "shared_folds": shared,
        "scores": scores,
        "per_fold": {m: {str(k): v for k, v in f.items()} for m, f in per_fold.items()},
    }
