"""Family-free statistics: the patient-level bootstrap, DeLong variance, confidence interval and paired
test of ROC AUCs, a paired bootstrap test over patients, calibration (reliability bins,
ECE, Brier), the spread of metrics over cross-validation folds, and metrics per subgroup.

scikit-learn and scipy give the AUC, the Brier score, midranks and the normal
distribution; what they lack (DeLong's method, patient-level paired resampling,
calibration bins with counts) is written here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import expit, logit

# --------------------------------------------------------------------------- DeLong


def _binary_labels(labels) -> np.ndarray:
    labels = np.asarray(labels).astype(int)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("DeLong's method needs binary labels 0/1")
    if np.unique(labels).size < 2:
        raise ValueError("the AUC needs both a positive and a negative case")
    return labels


def _structural_components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong's structural components of k scorers (``scores`` is (k, N)).

    Fast midrank algorithm (Sun & Xu 2014): with midranks tx within the positives, ty
    within the negatives and tz within all cases, tz - tx of a positive counts the
    negatives below it (ties count 1/2), so no m x n comparison matrix is needed.
    Returns auc (k,), v10 (k, m): per positive the share of negatives it beats, and
    v01 (k, n): per negative the share of positives that beat it.
    """
    pos, neg = scores[:, labels == 1], scores[:, labels == 0]
    m, n = pos.shape[1], neg.shape[1]
    tx = stats.rankdata(pos, axis=1)  # "average" = midranks, so ties count 1/2
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.hstack([pos, neg]), axis=1)
    auc = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return auc, v10, v01


def _sample_var(values: np.ndarray) -> float:
    # one case of a class gives no spread estimate: NaN rather than numpy's warning
    return float(np.var(values, ddof=1)) if values.size > 1 else float("nan")


def delong_auc_variance(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """ROC AUC and its DeLong variance var(V10)/m + var(V01)/n (DeLong et al. 1988).

    ``labels`` are 0/1 (both present), ``scores`` higher for class 1. The variance is
    NaN when a class has a single case.
    """
    labels = _binary_labels(labels)
    auc, v10, v01 = _structural_components(labels, np.asarray(scores, dtype=float)[None, :])
    return float(auc[0]), _sample_var(v10[0]) / v10.shape[1] + _sample_var(v01[0]) / v01.shape[1]


def delong_ci(labels: np.ndarray, scores: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(auc, low, high): DeLong confidence interval of the ROC AUC.

    The normal approximation is made on the logit of the AUC (standard error by the
    delta method, se / (auc (1 - auc))) and transformed back, so the bounds stay inside
    [0, 1] and are asymmetric near the edges. At AUC 0 or 1 the logit is infinite; there
    the plain normal interval auc +/- z se, clipped to [0, 1], is used.
    """
    auc, var = delong_auc_variance(labels, scores)
    z = stats.norm.ppf(0.5 + level / 2)
    se = np.sqrt(var)
    if 0 < auc < 1:
        centre, half = logit(auc), z * se / (auc * (1 - auc))
        return auc, float(expit(centre - half)), float(expit(centre + half))
    return auc, float(np.clip(auc - z * se, 0, 1)), float(np.clip(auc + z * se, 0, 1))


def delong_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> dict:
    """Paired DeLong test of two correlated ROC AUCs measured on the same cases.

    z = (auc_a - auc_b) / se, two-sided normal p-value. The variance of the difference
    is computed from the differences of the structural components, which equals
    var_a + var_b - 2 cov_ab but is exactly 0 (not a rounding residue) for identical
    scorers. With se = 0: identical AUCs give z = 0 and p = 1; different ones (possible
    only when both scorers separate the classes perfectly, one of them inverted) give
    an infinite z and p = 0.
    """
    labels = _binary_labels(labels)
    scores = np.vstack([np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)])
    auc, v10, v01 = _structural_components(labels, scores)
    difference = float(auc[0] - auc[1])
    var = _sample_var(v10[0] - v10[1]) / v10.shape[1] + _sample_var(v01[0] - v01[1]) / v01.shape[1]
    se = float(np.sqrt(var))
    if se > 0 or np.isnan(se):
        z = difference / se
    else:
        z = 0.0 if difference == 0 else float(np.copysign(np.inf, difference))
    p_value = float(2 * stats.norm.sf(abs(z)))
    return {
        "auc_a": float(auc[0]),
        "auc_b": float(auc[1]),
        "difference": difference,
        "se": se,
        "z": float(z),
        "p_value": p_value,
        "method": "DeLong paired test",
    }


# ------------------------------------------------------------------ paired bootstrap


def group_members(groups) -> list[np.ndarray]:
    """The indices of each group (patient), groups in sorted order, indices ascending."""
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.cumsum(np.bincount(inverse))[:-1])


def resample_groups(members: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One bootstrap draw of whole groups: as many groups as there are, with
    replacement, every index of each drawn group (a patient's images together)."""
    return np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])


def paired_bootstrap_test(
    labels: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    groups: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    skip_single_class: bool = True,
) -> dict:
    """Paired bootstrap of statistic(a) - statistic(b), resampling whole groups.

    ``groups`` are patient ids: a patient's images are correlated, so they are drawn
    together (and for both models at once: the pairing removes the case-to-case
    variation the models share). ``statistic(labels, scores)`` defaults to the ROC AUC.
    Resamples with a single class are skipped (the AUC is undefined there) unless
    ``skip_single_class`` is false (a statistic of the scores alone, such as a mean
    PSNR, with constant ``labels``); ``n_boot`` is the number drawn, ``n_skipped`` how
    many were skipped.

    ``difference`` is the statistic on the full data, ``ci_low``/``ci_high`` the
    percentile interval of the resampled differences. The two-sided p-value is
    2 * min(share of differences <= 0, share >= 0), capped at 1: the smallest level at
    which the percentile interval would exclude 0. Identical scorers give p = 1.
    """
    if not statistic:
        # scikit-learn is imported where it is used: the segmentation comparison (bootstrap_ci,
        # no AUC) should not pay for it
        from sklearn.metrics import roc_auc_score

        statistic = roc_auc_score
    labels, scores_a, scores_b = np.asarray(labels), np.asarray(scores_a), np.asarray(scores_b)
    members = group_members(groups)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = resample_groups(members, rng)
        if skip_single_class and np.unique(labels[idx]).size < 2:
            continue
        diffs.append(statistic(labels[idx], scores_a[idx]) - statistic(labels[idx], scores_b[idx]))
    diffs = np.asarray(diffs, dtype=float)
    diffs = diffs[~np.isnan(diffs)]
    alpha = (1 - level) / 2
    if diffs.size:
        low, high = np.quantile(diffs, [alpha, 1 - alpha])
        p_value = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))
    else:
        low = high = p_value = float("nan")
    return {
        "difference": float(statistic(labels, scores_a) - statistic(labels, scores_b)),
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": float(p_value),
        "n_boot": int(n_boot),
        "n_skipped": int(n_boot - diffs.size),
        "method": "paired bootstrap over patients",
    }


# ---------------------------------------------------------------------- calibration


def _null_safe(value: float) -> float | None:
    # empty bins have no mean: None is written as JSON null, NaN would be invalid JSON
    return None if np.isnan(value) else float(value)


def calibration(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict:
    """Reliability bins, expected and maximum calibration error and Brier score.

    Two classes: bins of p(class 1) against the share of positives ("positive-class").
    More classes: bins of the top-label confidence max_k p_k against the share of
    correct arg-max predictions ("top-label"). ``n_bins`` equal-width bins on [0, 1],
    assigned as sklearn.calibration.calibration_curve does: (low, high], the first bin
    [0, high], so 0 and 1.0 both fall inside.

    ece = sum over bins of n_b / N * |observed_b - mean_predicted_b|; mce the largest
    such gap over non-empty bins. brier: sklearn's brier_score_loss (binary: on p(class
    1); multi-class: mean over cases of the squared error to the one-hot label, summed
    over classes, range [0, 2]). Every bin is listed; empty ones have n = 0 and
    mean_predicted / observed None.
    """
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] < 2 or len(labels) != len(probs) or not len(labels):
        raise ValueError("calibration needs (N, K) probabilities with K >= 2 and N labels, N > 0")
    from sklearn.metrics import brier_score_loss  # here, not at the top: see paired_bootstrap_test

    n_classes = probs.shape[1]
    if n_classes == 2:
        kind, confidence, outcome = "positive-class", probs[:, 1], labels == 1
        brier = brier_score_loss(labels, probs[:, 1], pos_label=1)
    else:
        kind, confidence, outcome = "top-label", probs.max(axis=1), probs.argmax(axis=1) == labels
        brier = brier_score_loss(labels, probs, labels=list(range(n_classes)))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.digitize(confidence, edges[1:-1], right=True)
    counts = np.bincount(which, minlength=n_bins)
    filled = counts > 0
    mean_predicted = np.full(n_bins, np.nan)
    observed = np.full(n_bins, np.nan)
    mean_predicted[filled] = np.bincount(which, weights=confidence, minlength=n_bins)[filled] / counts[filled]
    observed[filled] = np.bincount(which, weights=outcome.astype(float), minlength=n_bins)[filled] / counts[filled]
    gap = np.abs(observed - mean_predicted)[filled]
    bins = [
        {
            "bin_low": float(edges[b]),
            "bin_high": float(edges[b + 1]),
            "n": int(counts[b]),
            "mean_predicted": _null_safe(mean_predicted[b]),
            "observed": _null_safe(observed[b]),
        }
        for b in range(n_bins)
    ]
    return {
        "ece": float(np.sum(counts[filled] / len(labels) * gap)),
        "mce": float(gap.max()),
        "brier": float(brier),
        "n_bins": int(n_bins),
        "kind": kind,
        "bins": bins,
    }


# ------------------------------------------------------------ folds and subgroups


def fold_aggregate(per_fold: pd.DataFrame, metrics: Sequence[str]) -> dict[str, dict]:
    """Mean, SD (ddof=1), min and max of each metric over cross-validation folds.

    ``per_fold`` has one row per fold. NaN values (a metric undefined in a fold) are left
    out and ``n_folds`` counts the folds with a value; with one such fold the SD is NaN.
    """
    out = {}
    for metric in metrics:
        values = pd.to_numeric(per_fold[metric], errors="coerce").dropna().to_numpy(dtype=float)
        n = values.size
        out[metric] = {
            "mean": float(values.mean()) if n else float("nan"),
            "sd": float(values.std(ddof=1)) if n > 1 else float("nan"),
            "min": float(values.min()) if n else float("nan"),
            "max": float(values.max()) if n else float("nan"),
            "n_folds": int(n),
        }
    return out


def bootstrap_ci(
    labels: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs, resampling whole patients (``groups``) with replacement.

    Images of one patient are correlated, so resampling images would make the
    intervals too narrow.
    """
    rng = np.random.default_rng(seed)
    members = group_members(groups)
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        idx = resample_groups(members, rng)
        for key, value in statistic(labels[idx], probs[idx]).items():
            samples.setdefault(key, []).append(value)
    alpha = (1 - level) / 2
    return {key: (float(np.nanquantile(vals, alpha)), float(np.nanquantile(vals, 1 - alpha))) for key, vals in samples.items()}


def mean_ci(values: np.ndarray, groups: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """The mean of per-image ``values`` with its percentile bootstrap CI over patients
    (``groups``)."""
    values = np.asarray(values, dtype=float)
    ci = bootstrap_ci(values, values, np.asarray(groups), lambda _l, v: {"mean": float(np.mean(v))}, n_boot=n_boot, level=level, seed=seed)[
        "mean"
    ]
    return {"mean": float(np.mean(values)), "ci_low": ci[0], "ci_high": ci[1]}


def _mean(_labels: np.ndarray, values: np.ndarray) -> float:
    return float(np.mean(values))


def paired_difference(
    a: np.ndarray, b: np.ndarray, groups: Sequence[str], *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict:
    """Mean of ``a`` minus mean of ``b`` (per-image values of two methods on the same
    images), with the percentile CI and p-value of the paired bootstrap over patients
    (``groups``)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    constant = np.zeros(len(a))
    return paired_bootstrap_test(
        constant, a, b, np.asarray(groups), statistic=_mean, n_boot=n_boot, seed=seed, level=level, skip_single_class=False
    )


def bland_altman(true_ml: np.ndarray, pred_ml: np.ndarray) -> dict:
    """Agreement of predicted and true values (Bland and Altman; volumes in ml, an ejection
    fraction in points); differences are pred - true.

    ``bias`` is the mean difference (positive: the model over-segments), ``sd`` its sample
    SD, the limits of agreement bias -/+ 1.96 sd. ``pearson_r`` is of pred vs true, NaN
    when either has fewer than 2 distinct values (the correlation is undefined).
    """
    true_ml, pred_ml = np.asarray(true_ml, dtype=float), np.asarray(pred_ml, dtype=float)
    keep = ~(np.isnan(true_ml) | np.isnan(pred_ml))
    true_ml, pred_ml = true_ml[keep], pred_ml[keep]
    diff = pred_ml - true_ml
    n = int(diff.size)
    bias = float(diff.mean()) if n else float("nan")
    sd = float(diff.std(ddof=1)) if n > 1 else float("nan")
    distinct = min(np.unique(true_ml).size, np.unique(pred_ml).size)
    r = float(stats.pearsonr(true_ml, pred_ml).statistic) if distinct >= 2 else float("nan")
    return {"bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd, "n": n, "pearson_r": r}
