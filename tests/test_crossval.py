"""Tests for casebook.tasks.classification.validation: folds pooled out of fold, the fold ensemble, model
selection on validation data only, paired comparison and subgroups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from casebook.tasks.classification.validation.compare import pairwise_comparisons
from casebook.tasks.classification.validation.crossval import crossval_summary, ensemble, pool_out_of_fold
from casebook.tasks.classification.validation.selection import select_model
from casebook.tasks.classification.validation.subgroups import attach_groups, subgroup_table

CFG = {"threshold": "youden", "n_bootstrap": 50, "ci_level": 0.95, "calibration_bins": 5}


def table(ids, patients, labels, prob1) -> pd.DataFrame:
    prob1 = np.asarray(prob1, dtype=float)
    return pd.DataFrame({"image_id": ids, "patient_id": patients, "label": labels, "prob_0": 1 - prob1, "prob_1": prob1})


def scored(rng, n, quality, prefix="i"):
    """n images of n/2 patients; higher ``quality`` separates the classes better."""
    labels = np.arange(n) % 2
    scores = 1 / (1 + np.exp(-(quality * (labels - 0.5) + rng.normal(0, 1, n))))
    return table([f"{prefix}{k:03d}" for k in range(n)], [f"{prefix}p{k // 2:03d}" for k in range(n)], labels, scores)


def test_pooled_out_of_fold_refuses_a_patient_validated_twice() -> None:
    a = table(["a1", "a2"], ["p1", "p2"], [0, 1], [0.2, 0.8])
    b = table(["b1", "b2"], ["p3", "p1"], [0, 1], [0.3, 0.7])
    with pytest.raises(ValueError, match="patient p1 is in the validation set of folds 0 and 1.*val_1.tsv"):
        pool_out_of_fold({0: a, 1: b}, where=["val_0.tsv", "val_1.tsv"])
    pooled = pool_out_of_fold({0: a, 1: table(["b1"], ["p3"], [0], [0.3])})
    assert list(pooled["fold"]) == [0, 0, 1]


def test_ensemble_is_the_mean_probability_and_needs_the_same_images() -> None:
    a = table(["x", "y"], ["p", "q"], [0, 1], [0.2, 0.6])
    b = table(["y", "x"], ["q", "p"], [1, 0], [1.0, 0.4])  # another row order
    mean = ensemble({0: a, 1: b}).set_index("image_id")
    assert mean.loc["x", "prob_1"] == pytest.approx(0.3)
    assert mean.loc["y", "prob_1"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="fold 1 predicted other test images"):
        ensemble({0: a, 1: table(["x", "z"], ["p", "r"], [0, 1], [0.1, 0.9])})


def test_threshold_and_selection_never_read_the_test_set() -> None:
    rng = np.random.default_rng(0)
    val = {f: scored(rng, 40, 3.0, prefix=f"f{f}_") for f in range(3)}
    test = {f: scored(np.random.default_rng(9), 40, 3.0, prefix="t") for f in range(3)}
    summary, oof, _ = crossval_summary(val, test, CFG)
    # scrambling the test labels changes the test metrics but not the threshold
    flipped = {f: t.assign(label=1 - t["label"]) for f, t in test.items()}
    summary_flipped, _, _ = crossval_summary(val, flipped, CFG)
    assert summary_flipped["threshold"] == summary["threshold"]
    assert summary_flipped["test"]["auc"] == pytest.approx(1 - summary["test"]["auc"])
    assert summary["folds"] == [0, 1, 2] and len(summary["per_fold"]) == 3
    assert summary["fold_mean_sd"]["auc"]["n_folds"] == 3
    assert summary["fold_mean_sd"]["auc"]["sd"] > 0
    assert len(oof) == 120
    assert summary["test"]["auc_delong_ci_low"] <= summary["test"]["auc"] <= summary["test"]["auc_delong_ci_high"]
    assert 0 <= summary["test"]["ece"] <= 1


def test_select_model_picks_the_best_validation_auc_on_shared_folds() -> None:
    rng = np.random.default_rng(1)
    # "strong" ranks well within each fold but its folds' probability scales differ
    # (pooling them would hurt it); "weak" trained fold 0 only
    folds = [scored(rng, 60, 3.0, prefix=f"f{f}_").assign(fold=f) for f in range(5)]
    for f, part in enumerate(folds):
        part["prob_1"] = 1 / (1 + np.exp(-(np.log(part["prob_1"] / (1 - part["prob_1"])) + 2.0 * (f - 2))))
    strong = pd.concat(folds, ignore_index=True)
    weak = scored(np.random.default_rng(5), 60, 1.0, prefix="f0_").assign(fold=0)
    weak["image_id"], weak["patient_id"], weak["label"] = folds[0]["image_id"], folds[0]["patient_id"], folds[0]["label"]
    choice = select_model({"weak": weak, "strong": strong})
    assert choice["shared_folds"] == [0]
    assert choice["selected"] == "strong"
    assert choice["scores"]["strong"] > choice["scores"]["weak"]
    with pytest.raises(ValueError, match="share no validation fold"):
        select_model({"a": weak, "b": folds[1]})


def test_pairwise_comparison_finds_the_better_model() -> None:
    rng = np.random.default_rng(2)
    strong, weak = scored(rng, 300, 4.0), scored(rng, 300, 0.0)
    result = pairwise_comparisons({"strong": strong, "weak": weak}, n_boot=200).iloc[0]
    assert result["difference"] > 0.2
    assert result["delong_p"] < 0.01 and result["bootstrap_p"] < 0.05
    assert result["ci_low"] > 0
    with pytest.raises(ValueError, match="different images"):
        pairwise_comparisons({"a": strong, "b": weak.iloc[:-1]})


def test_subgroups_join_the_manifest_and_name_a_missing_column() -> None:
    rng = np.random.default_rng(3)
    test = scored(rng, 80, 3.0)
    manifest = pd.DataFrame({"image_id": test["image_id"], "site": np.where(np.arange(80) < 40, "A", "B")})
    # site B's predictions are inverted: its AUC must come out far below site A's
    test.loc[40:, "prob_1"] = 1 - test.loc[40:, "prob_1"]
    test["prob_0"] = 1 - test["prob_1"]
    grouped = attach_groups(test, manifest, ["site"], "data/manifest.tsv")
    out = subgroup_table({"m": grouped}, {"m": 0.5}, ["site"], CFG).set_index("group")
    assert out.loc["A", "auc"] > 0.8 > 0.2 > out.loc["B", "auc"]
    with pytest.raises(ValueError, match=r"data/manifest.tsv: no column\(s\) scanner"):
        attach_groups(test, manifest, ["scanner"], "data/manifest.tsv")
