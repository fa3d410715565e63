"""Tests for casebook.tasks.classification.evaluate: metrics, threshold choice and patient-level bootstrap CIs."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from casebook.analysis.stats import bootstrap_ci
from casebook.tasks.classification.evaluate import prediction_table, roc_table
from casebook.tasks.classification.metrics import METRICS, choose_threshold, evaluate_predictions, point_metrics, predict_labels


def _binary(p1) -> np.ndarray:
    p1 = np.asarray(p1, dtype=float)
    return np.c_[1 - p1, p1]


LABELS = np.array([0, 0, 0, 1, 1, 1])
PERFECT = _binary([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])


def _noisy(n=80, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    return y, _binary(p)


def test_perfect_predictions_score_one() -> None:
    m = point_metrics(LABELS, PERFECT)
    assert set(m) == set(METRICS)
    assert m == {k: 1.0 for k in METRICS}


def test_inverted_predictions_score_zero() -> None:
    m = point_metrics(LABELS, PERFECT[:, ::-1])
    assert m["auc"] == 0.0
    assert m["accuracy"] == 0.0
    assert m["sensitivity"] == 0.0
    assert m["specificity"] == 0.0


def test_hand_computed_confusion() -> None:
    # tp=2 fn=1 tn=2 fp=1 at threshold 0.5
    probs = _binary([0.2, 0.4, 0.6, 0.3, 0.7, 0.9])
    m = point_metrics(LABELS, probs, threshold=0.5)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["auc"] == pytest.approx(7 / 9)  # 7 of the 9 positive-negative pairs ranked right
    # the threshold moves the operating point, not the AUC
    low = point_metrics(LABELS, probs, threshold=0.25)
    assert low["sensitivity"] == 1.0 and low["specificity"] == pytest.approx(1 / 3)
    assert low["auc"] == m["auc"]


def test_threshold_is_inclusive() -> None:
    assert predict_labels(_binary([0.5, 0.49999]), 0.5).tolist() == [1, 0]


def test_multiclass_metrics() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2])
    probs = np.eye(3)[labels] * 0.7 + 0.1
    assert point_metrics(labels, probs) == {k: 1.0 for k in METRICS}
    wrong = np.eye(3)[(labels + 1) % 3] * 0.7 + 0.1
    m = point_metrics(labels, wrong)
    assert m["accuracy"] == 0.0 and m["sensitivity"] == 0.0
    assert m["specificity"] == pytest.approx(0.5)  # each class: 2 of its 4 negatives called negative
    assert predict_labels(wrong).tolist() == ((labels + 1) % 3).tolist()


def test_single_class_gives_nan_auc_not_an_error() -> None:
    m = point_metrics(np.ones(4, dtype=int), _binary([0.2, 0.6, 0.7, 0.9]))
    assert np.isnan(m["auc"])
    assert m["accuracy"] == 0.75


def test_youden_threshold_separates_separable_data() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(30, int), np.ones(20, int)]
    p = np.r_[rng.uniform(0.05, 0.35, 30), rng.uniform(0.4, 0.6, 20)]  # all positives below 0.5
    t = choose_threshold(y, p)
    assert p[y == 0].max() < t <= p[y == 1].min()
    assert (predict_labels(_binary(p), t) == y).all()
    assert point_metrics(y, _binary(p), t)["accuracy"] == 1.0
    assert point_metrics(y, _binary(p), 0.5)["accuracy"] < 1.0


def test_threshold_rules() -> None:
    y, probs = _noisy()
    assert choose_threshold(y, probs[:, 1], 0.3) == 0.3
    assert 0.0 <= choose_threshold(y, probs[:, 1]) <= 1.0
    assert choose_threshold(np.zeros(5, int), np.linspace(0, 1, 5)) == 0.5
    with pytest.raises(ValueError, match="f1max"):
        choose_threshold(y, probs[:, 1], "f1max")


def _light(labels, probs) -> dict[str, float]:
    """A cheap statistic for the tests that only need many bootstrap draws."""
    pred = probs[:, 1] >= 0.5
    return {"auc": float(skm.roc_auc_score(labels, probs[:, 1])), "accuracy": float((pred == labels).mean())}


def test_bootstrap_ci_brackets_the_estimate() -> None:
    y, probs = _noisy()
    point = point_metrics(y, probs)
    ci = bootstrap_ci(y, probs, np.arange(len(y)), lambda a, b: point_metrics(a, b), n_boot=60, seed=1)
    assert set(ci) == set(METRICS)
    for key in ("auc", "accuracy", "f1", "sensitivity", "specificity"):
        low, high = ci[key]
        assert low < point[key] < high


def test_bootstrap_ci_is_deterministic_per_seed() -> None:
    y, probs = _noisy()
    groups = np.arange(len(y))
    ci = bootstrap_ci(y, probs, groups, _light, n_boot=100, seed=1)
    assert ci == bootstrap_ci(y, probs, groups, _light, n_boot=100, seed=1)
    assert ci != bootstrap_ci(y, probs, groups, _light, n_boot=100, seed=2)
    narrow = bootstrap_ci(y, probs, groups, _light, n_boot=100, seed=1, level=0.5)
    assert narrow["auc"][1] - narrow["auc"][0] < ci["auc"][1] - ci["auc"][0]
    assert ci["auc"][0] < narrow["auc"][0] and narrow["auc"][1] < ci["auc"][1]


def test_bootstrap_resamples_whole_patients() -> None:
    # patient "a" has 1 image, patient "b" 9: resampling patients gives 2, 10 or 18 images
    y = np.array([0] + [1] * 9)
    probs = _binary(np.linspace(0.1, 0.9, 10))
    sizes = []

    def stat(labels, p):
        sizes.append(len(labels))
        # all images of a patient come together (b's 9 images are a block)
        assert int((labels == 1).sum()) % 9 == 0
        return {"n": float(len(labels))}

    ci = bootstrap_ci(y, probs, np.array(["a"] + ["b"] * 9), stat, n_boot=50, seed=0)
    assert set(sizes) <= {2, 10, 18} and len(set(sizes)) > 1
    assert ci["n"][0] < ci["n"][1]
    sizes.clear()
    per_image = bootstrap_ci(y, probs, np.arange(10), lambda a, b: {"n": float(len(a))}, n_boot=50, seed=0)
    assert per_image["n"] == (10.0, 10.0)


def test_grouped_ci_is_wider_when_images_of_a_patient_agree() -> None:
    # 12 patients, 8 identical images each: per-image resampling overstates the evidence
    rng = np.random.default_rng(0)
    patient_label = np.array([0, 1] * 6)
    patient_p = np.clip(0.3 * patient_label + 0.7 * rng.random(12), 0, 1)
    y, p = np.repeat(patient_label, 8), np.repeat(patient_p, 8)
    groups = np.repeat(np.arange(12), 8)
    grouped = bootstrap_ci(y, _binary(p), groups, _light, n_boot=200, seed=0)
    per_image = bootstrap_ci(y, _binary(p), np.arange(len(y)), _light, n_boot=200, seed=0)
    for key in ("auc", "accuracy"):
        width_grouped = grouped[key][1] - grouped[key][0]
        width_image = per_image[key][1] - per_image[key][0]
        assert np.isfinite(width_grouped) and np.isfinite(width_image)
        assert width_grouped > width_image


def _table(y, probs, patients) -> pd.DataFrame:
    return pd.DataFrame({"patient_id": patients, "label": y, "prob_0": probs[:, 0], "prob_1": probs[:, 1]})


def test_evaluate_predictions_keys_and_values() -> None:
    y, probs = _noisy(60, seed=3)
    patients = [f"p{i // 2}" for i in range(60)]
    test = _table(y, probs, patients)
    vy, vprobs = _noisy(40, seed=4)
    val = _table(vy, vprobs, [f"v{i}" for i in range(40)])
    out = evaluate_predictions(test, val, n_classes=2, n_boot=60, seed=0)

    for key in out:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", key), key
    for key in METRICS:
        assert key in out and f"{key}_ci_low" in out and f"{key}_ci_high" in out
        assert out[f"{key}_ci_low"] <= out[f"{key}_ci_high"]
    assert {"auc", "auc_ci_low", "auc_ci_high", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1"} <= set(out)
    assert out["auc_ci_low"] <= out["auc"] <= out["auc_ci_high"]
    # the threshold is chosen on the validation table, then applied to the test table
    threshold = choose_threshold(vy, vprobs[:, 1])
    assert out["threshold"] == threshold
    assert out["accuracy"] == point_metrics(y, probs, threshold)["accuracy"]
    assert out["n_test_images"] == 60 and out["n_test_patients"] == 30
    assert out["n_bootstrap"] == 60 and out["n_classes"] == 2
    assert out == evaluate_predictions(test, val, n_classes=2, n_boot=60, seed=0)


def test_evaluate_predictions_fixed_threshold_and_multiclass() -> None:
    y, probs = _noisy(30, seed=5)
    test = _table(y, probs, [f"p{i}" for i in range(30)])
    assert evaluate_predictions(test, test, n_classes=2, threshold_rule=0.7, n_boot=20)["threshold"] == 0.7
    labels = np.arange(30) % 3
    p3 = np.eye(3)[labels] * 0.5 + 0.5 / 3
    table = pd.DataFrame({"patient_id": [f"p{i}" for i in range(30)], "label": labels, **{f"prob_{k}": p3[:, k] for k in range(3)}})
    out = evaluate_predictions(table, table, n_classes=3, n_boot=20)
    assert out["auc"] == 1.0 and out["accuracy"] == 1.0
    assert out["threshold"] == 0.5


def test_prediction_table_follows_the_requested_order() -> None:
    index = pd.DataFrame({"row": [0, 1, 2], "image_id": ["a", "b", "c"], "patient_id": ["pa", "pb", "pc"], "label": [0, 1, 1]})
    probs = _binary([0.9, 0.2, 0.6])
    table = prediction_table(index, ["c", "a", "b"], probs, threshold=0.5)
    assert table["image_id"].tolist() == ["c", "a", "b"]
    assert table["label"].tolist() == [1, 0, 1]
    assert table["prob_1"].tolist() == [0.9, 0.2, 0.6]
    assert table["prediction"].tolist() == [1, 0, 1]
    assert "prediction" not in prediction_table(index, ["a"], probs[:1]).columns


def test_roc_table_runs_from_the_corner_to_the_corner_and_matches_the_auc() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    prob = np.clip(labels * 0.3 + rng.uniform(0, 0.7, 100), 0, 1)
    table = roc_table(pd.DataFrame({"label": labels, "prob_0": 1 - prob, "prob_1": prob}))
    assert set(table["curve"]) == {"positive"}
    assert (table["fpr"].iloc[0], table["tpr"].iloc[0]) == (0, 0)
    assert (table["fpr"].iloc[-1], table["tpr"].iloc[-1]) == (1, 1)
    assert np.trapezoid(table["tpr"], table["fpr"]) == pytest.approx(skm.roc_auc_score(labels, prob))


def test_roc_table_has_one_curve_per_class_for_several_classes() -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), 60)
    frame = pd.DataFrame({"label": np.arange(60) % 3, **{f"prob_{k}": probs[:, k] for k in range(3)}})
    assert sorted(roc_table(frame)["curve"].unique()) == ["class 0 vs rest", "class 1 vs rest", "class 2 vs rest"]
