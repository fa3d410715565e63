"""Validation statistics: DeLong variance, CI and paired test, the paired bootstrap over
patients, calibration bins and errors, fold aggregation and subgroup metrics."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from casebook.analysis.stats import (
    _structural_components,
    calibration,
    delong_auc_variance,
    delong_ci,
    delong_test,
    fold_aggregate,
    paired_bootstrap_test,
)
from casebook.tasks.classification.metrics import METRICS
from casebook.tasks.classification.validation.subgroups import subgroup_metrics


def scored_cases(n: int, shift: float, seed: int, noise: float = 1.0):
    """Labels (about 40 % positive) and a score that is shifted up by ``shift`` for positives."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(int)
    return labels, shift * labels + rng.normal(0, noise, n)


# --------------------------------------------------------------------------- DeLong


def test_delong_auc_equals_sklearn_with_ties():
    labels, scores = scored_cases(150, 1.0, seed=1)
    scores = np.round(scores, 1)  # many ties: they must count 1/2, as in sklearn
    auc, var = delong_auc_variance(labels, scores)
    assert auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert var > 0


def test_delong_tiny_example_by_hand():
    # positives 0.8, 0.5; negatives 0.5, 0.2. Pair kernel psi(pos, neg) = 1 if pos > neg,
    # 1/2 if tied: (0.8, 0.5) 1, (0.8, 0.2) 1, (0.5, 0.5) 1/2, (0.5, 0.2) 1 -> AUC 3.5/4.
    # V10 (per positive, mean over negatives): 0.8 -> 1, 0.5 -> (1/2 + 1)/2 = 0.75.
    # V01 (per negative, mean over positives): 0.5 -> (1 + 1/2)/2 = 0.75, 0.2 -> 1.
    # S10 = S01 = var([1, 0.75], ddof=1) = 0.25**2 / 2 = 0.03125;
    # variance = S10/m + S01/n = 0.03125/2 + 0.03125/2 = 0.03125.
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.8, 0.5, 0.5, 0.2])
    auc, v10, v01 = _structural_components(labels, scores[None, :])
    np.testing.assert_allclose(auc, [0.875])
    np.testing.assert_allclose(v10, [[1.0, 0.75]])
    np.testing.assert_allclose(v01, [[0.75, 1.0]])
    assert delong_auc_variance(labels, scores) == pytest.approx((0.875, 0.03125))


def test_delong_components_equal_the_pair_kernel():
    # the midrank shortcut against the definition: psi(pos, neg) = 1 if pos > neg, 1/2
    # if tied, V10 = row means (per positive), V01 = column means (per negative)
    labels, scores = scored_cases(60, 1.0, seed=13)
    scores = np.round(scores)  # ties within and between the classes
    pos, neg = scores[labels == 1], scores[labels == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    auc, v10, v01 = _structural_components(labels, scores[None, :])
    np.testing.assert_allclose(v10[0], psi.mean(axis=1))
    np.testing.assert_allclose(v01[0], psi.mean(axis=0))
    np.testing.assert_allclose(auc[0], psi.mean())


def test_delong_variance_agrees_with_bootstrap():
    labels, scores = scored_cases(200, 1.0, seed=2)
    _, var = delong_auc_variance(labels, scores)
    # DeLong's variance is conditional on the numbers of positives and negatives, so the
    # bootstrap resamples within each class
    rng = np.random.default_rng(3)
    pos, neg = scores[labels == 1], scores[labels == 0]
    aucs = []
    for _ in range(2000):
        p, n = rng.choice(pos, pos.size), rng.choice(neg, neg.size)
        aucs.append((p[:, None] > n[None, :]).mean() + 0.5 * (p[:, None] == n[None, :]).mean())
    assert var == pytest.approx(np.var(aucs), rel=0.25)


def test_delong_ci_contains_auc_inside_unit_interval():
    labels, scores = scored_cases(200, 1.0, seed=4)
    auc, low, high = delong_ci(labels, scores)
    assert 0 <= low < auc < high <= 1
    # near the edge the plain normal interval would pass 1; the logit one must not
    labels, scores = scored_cases(30, 3.5, seed=5)
    auc, low, high = delong_ci(labels, scores)
    _, var = delong_auc_variance(labels, scores)
    assert 0.9 < auc < 1 and auc + 1.96 * np.sqrt(var) > 1
    assert low < auc < high < 1
    # wider level, wider interval
    _, low99, high99 = delong_ci(labels, scores, level=0.99)
    assert low99 < low and high99 > high


def test_delong_ci_at_perfect_separation():
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert delong_ci(labels, np.arange(6.0)) == (1.0, 1.0, 1.0)
    assert delong_ci(labels, -np.arange(6.0)) == (0.0, 0.0, 0.0)


def test_delong_test_detects_a_better_scorer():
    labels, good = scored_cases(300, 1.5, seed=6)
    random = np.random.default_rng(7).normal(size=300)
    result = delong_test(labels, good, random)
    assert result["auc_a"] == pytest.approx(roc_auc_score(labels, good))
    assert result["auc_b"] == pytest.approx(roc_auc_score(labels, random))
    assert result["difference"] == pytest.approx(result["auc_a"] - result["auc_b"])
    assert result["p_value"] < 0.01 and result["z"] > 0
    assert result["method"] == "DeLong paired test"
    assert delong_test(labels, random, good)["z"] == pytest.approx(-result["z"])


def test_delong_test_size_under_the_null():
    # two equally good scorers that share the latent signal (so are correlated)
    rng = np.random.default_rng(8)
    p_values = []
    for _ in range(200):
        labels = (rng.random(120) < 0.5).astype(int)
        latent = labels + rng.normal(0, 1, 120)
        a, b = latent + rng.normal(0, 0.7, 120), latent + rng.normal(0, 0.7, 120)
        p_values.append(delong_test(labels, a, b)["p_value"])
    p_values = np.array(p_values)
    assert 0.02 <= np.mean(p_values < 0.05) <= 0.10
    assert 0.3 < np.median(p_values) < 0.7  # roughly uniform, not piled up at 0 or 1


def test_delong_test_identical_and_degenerate_scorers():
    labels, scores = scored_cases(100, 1.0, seed=9)
    same = delong_test(labels, scores, scores.copy())
    assert same["difference"] == 0 and same["se"] == 0 and same["z"] == 0 and same["p_value"] == 1
    # perfect against inverted: every structural component constant, so se = 0
    labels = np.array([0, 0, 1, 1])
    flipped = delong_test(labels, np.arange(4.0), -np.arange(4.0))
    assert flipped["difference"] == 1 and flipped["z"] == np.inf and flipped["p_value"] == 0


def test_delong_rejects_one_class():
    with pytest.raises(ValueError):
        delong_auc_variance(np.zeros(5), np.arange(5.0))


# ------------------------------------------------------------------ paired bootstrap


def patient_cases(n_patients: int, seed: int, images_per_patient: int = 1):
    """Per-patient label and two scores (a good, b random), each patient's row repeated."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n_patients) < 0.4).astype(int)
    a = 1.2 * labels + rng.normal(0, 1, n_patients)
    b = rng.normal(0, 1, n_patients)
    patients = np.arange(n_patients)
    rep = lambda x: np.repeat(x, images_per_patient)  # noqa: E731
    return rep(labels), rep(a), rep(b), rep(patients)


def test_paired_bootstrap_resamples_patients_not_images():
    labels, a, b, patients = patient_cases(60, seed=10)
    single = paired_bootstrap_test(labels, a, b, patients, n_boot=300)
    # five identical images per patient: no new information
    labels5, a5, b5, patients5 = patient_cases(60, seed=10, images_per_patient=5)
    by_patient = paired_bootstrap_test(labels5, a5, b5, patients5, n_boot=300)
    by_image = paired_bootstrap_test(labels5, a5, b5, np.arange(labels5.size), n_boot=300)
    width = lambda r: r["ci_high"] - r["ci_low"]  # noqa: E731
    assert by_patient["difference"] == pytest.approx(single["difference"])
    assert width(by_patient) == pytest.approx(width(single))  # same patients drawn: same AUCs
    assert width(by_image) < 0.7 * width(single)  # treating images as independent: too narrow


def test_paired_bootstrap_different_and_identical_scorers():
    labels, a, b, patients = patient_cases(150, seed=11, images_per_patient=2)
    result = paired_bootstrap_test(labels, a, b, patients, n_boot=400, seed=1)
    assert result["difference"] == pytest.approx(roc_auc_score(labels, a) - roc_auc_score(labels, b))
    assert result["p_value"] < 0.01 and 0 < result["ci_low"] < result["difference"] < result["ci_high"]
    assert result["n_boot"] == 400 and result["method"] == "paired bootstrap over patients"
    same = paired_bootstrap_test(labels, a, a.copy(), patients, n_boot=200)
    assert same["difference"] == 0 and same["p_value"] == 1 and same["ci_low"] == same["ci_high"] == 0


def test_paired_bootstrap_skips_single_class_resamples_and_takes_a_statistic():
    labels = np.array([1, 0, 0, 0, 0])
    a, b = np.array([0.9, 0.1, 0.2, 0.3, 0.4]), np.array([0.5, 0.6, 0.2, 0.3, 0.4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # skipped, not scored: sklearn would warn (or raise)
        result = paired_bootstrap_test(labels, a, b, np.arange(5), n_boot=200)
    assert result["n_skipped"] > 0 and np.isfinite(result["p_value"])
    accuracy = lambda y, s: float(np.mean((s >= 0.5) == y))  # noqa: E731
    result = paired_bootstrap_test(labels, a, b, np.arange(5), statistic=accuracy, n_boot=50)
    assert result["difference"] == pytest.approx(1.0 - 0.8)  # b: 0.5 and 0.6 called positive


# ---------------------------------------------------------------------- calibration


def test_calibrated_probabilities_have_small_ece_overconfident_large():
    rng = np.random.default_rng(12)
    p = rng.random(20000)
    labels = (rng.random(20000) < p).astype(int)
    good = calibration(labels, np.column_stack([1 - p, p]))
    assert good["ece"] < 0.02 and good["kind"] == "positive-class"
    pushed = np.where(p > 0.5, 0.99, 0.01)
    bad = calibration(labels, np.column_stack([1 - pushed, pushed]))
    assert bad["ece"] > 0.15 and bad["mce"] >= bad["ece"]
    assert sum(b["n"] for b in bad["bins"]) == 20000
    # the bins agree with scikit-learn's curve where it reports one (non-empty bins)
    prob_true, prob_pred = calibration_curve(labels, p, n_bins=10)
    filled = [b for b in good["bins"] if b["n"]]
    np.testing.assert_allclose([b["observed"] for b in filled], prob_true)
    np.testing.assert_allclose([b["mean_predicted"] for b in filled], prob_pred)


def test_calibration_hand_example_two_bins():
    # bin [0, 0.5]: p 0.1, 0.3, 0.4 (mean 0.8/3), labels 0, 1, 1 (observed 2/3): gap 0.4
    # bin (0.5, 1]: p 0.9 (mean 0.9), label 1 (observed 1): gap 0.1
    # ECE = 3/4 * 0.4 + 1/4 * 0.1 = 0.325 (weighted by bin size: unweighted would be 0.25);
    # MCE 0.4; Brier = (0.1^2 + 0.7^2 + 0.6^2 + 0.1^2) / 4 = 0.87 / 4 = 0.2175
    p = np.array([0.1, 0.3, 0.4, 0.9])
    result = calibration(np.array([0, 1, 1, 1]), np.column_stack([1 - p, p]), n_bins=2)
    assert result["ece"] == pytest.approx(0.325)
    assert result["mce"] == pytest.approx(0.4)
    assert result["brier"] == pytest.approx(0.2175)
    assert [(b["bin_low"], b["bin_high"], b["n"]) for b in result["bins"]] == [(0.0, 0.5, 3), (0.5, 1.0, 1)]
    assert result["bins"][0]["mean_predicted"] == pytest.approx(0.8 / 3)
    assert result["bins"][0]["observed"] == pytest.approx(2 / 3)
    assert result["bins"][1]["observed"] == pytest.approx(1.0)


def test_calibration_edges_and_empty_bins():
    # 0 and 0.5 belong to the first bin (closed right, as sklearn), 1.0 to the last
    p = np.array([0.0, 0.5, 1.0])
    result = calibration(np.array([0, 1, 1]), np.column_stack([1 - p, p]), n_bins=4)
    assert [b["n"] for b in result["bins"]] == [1, 1, 0, 1]
    empty = result["bins"][2]
    assert empty["mean_predicted"] is None and empty["observed"] is None
    json.dumps(result, allow_nan=False)  # empty bins are null, not NaN


def test_calibration_top_label_multiclass():
    probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.2, 0.5, 0.3]])
    labels = np.array([0, 2, 0, 1])
    # confidence 0.9, 0.9 -> bin (0.8, 1]: one correct (observed 0.5), gap 0.4
    # confidence 0.5, 0.5 -> bin (0.4, 0.6]: both correct (observed 1), gap 0.5
    # Brier (summed over classes): 0.015, 1.715, 0.38, 0.38 -> mean 0.6225
    result = calibration(labels, probs, n_bins=5)
    assert result["kind"] == "top-label"
    assert result["ece"] == pytest.approx(0.45) and result["mce"] == pytest.approx(0.5)
    assert result["brier"] == pytest.approx(0.6225)
    assert [b["n"] for b in result["bins"]] == [0, 0, 2, 0, 2]


# ------------------------------------------------------------ folds and subgroups


def test_fold_aggregate():
    per_fold = pd.DataFrame({"fold": [0, 1, 2], "auc": [0.8, 0.9, 1.0], "f1": [0.5, np.nan, 0.7]})
    out = fold_aggregate(per_fold, ["auc", "f1"])
    assert out["auc"] == pytest.approx({"mean": 0.9, "sd": 0.1, "min": 0.8, "max": 1.0, "n_folds": 3})
    assert out["f1"]["n_folds"] == 2 and out["f1"]["mean"] == pytest.approx(0.6)
    one = fold_aggregate(per_fold.iloc[:1], ["auc"])["auc"]
    assert one["mean"] == 0.8 and np.isnan(one["sd"]) and one["n_folds"] == 1


def subgroup_table() -> pd.DataFrame:
    """Site A predicted perfectly, B inverted (10 patients x 2 images each), C two patients
    of both classes, D six patients all negative."""
    rows = []
    for site, n_patients, rule in (("A", 10, "right"), ("B", 10, "inverted"), ("C", 2, "right"), ("D", 6, "negative")):
        for p in range(n_patients):
            label = 0 if rule == "negative" else p % 2
            for j in range(2):
                correct = rule != "inverted"
                p1 = (0.8 + 0.01 * p if label else 0.2 - 0.01 * p) if correct else (0.2 if label else 0.8)
                rows.append(
                    {"image_id": f"{site}{p}_{j}", "patient_id": f"{site}{p}", "label": label, "prob_0": 1 - p1, "prob_1": p1, "site": site}
                )
    return pd.DataFrame(rows)


def test_subgroup_metrics():
    table = subgroup_metrics(subgroup_table(), "site", threshold=0.5, n_classes=2, n_boot=100, level=0.95, seed=0, min_patients=5)
    table = table.set_index("group")
    assert list(table.index) == ["A", "B", "C", "D"]
    assert list(table["n_patients"]) == [10, 10, 2, 6] and list(table["n_images"]) == [20, 20, 4, 12]
    assert list(table["n_positive"]) == [10, 10, 2, 0]
    assert table.loc["A", "auc"] == 1 and table.loc["B", "auc"] == 0
    assert (table.loc["A", "auc_ci_low"], table.loc["A", "auc_ci_high"]) == (1, 1)
    assert (table.loc["B", "auc_ci_low"], table.loc["B", "auc_ci_high"]) == (0, 0)
    assert table.loc["A", "sensitivity"] == 1 and table.loc["B", "sensitivity"] == 0
    # C: too few patients for a CI, but both classes, so a point AUC
    assert table.loc["C", "auc"] == 1 and np.isnan(table.loc["C", "auc_ci_low"])
    # D: one class: no AUC and no CI, though enough patients
    assert np.isnan(table.loc["D", "auc"]) and np.isnan(table.loc["D", "auc_ci_high"])
    assert table.loc["D", "specificity"] == 1
    for key in METRICS:
        assert {key, f"{key}_ci_low", f"{key}_ci_high"} <= set(table.columns)
    # the threshold is applied: at 0.85 only the highest site-A positives count
    high = subgroup_metrics(subgroup_table(), "site", threshold=0.85, n_classes=2, n_boot=20, level=0.95, seed=0, min_patients=5)
    assert high.set_index("group").loc["A", "sensitivity"] < 1
