"""Validation figures: each writes a readable, non-blank PNG for one and for three
runs/models, with NaN values (empty bins, missing CIs, one fold) in the data."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from casebook.analysis.stats import calibration
from casebook.tasks.classification.metrics import METRICS
from casebook.tasks.classification.validation.figures import plot_fold_spread, plot_pairwise, plot_reliability, plot_subgroups

MODELS = ["densenet", "resnet", "vit"]

# NaN handling must be deliberate, not numpy or matplotlib warning and carrying on
pytestmark = [pytest.mark.filterwarnings("error::RuntimeWarning"), pytest.mark.filterwarnings("error::UserWarning")]


def assert_drawn(path) -> None:
    """The PNG exists, is of a sensible size and has more than one distinct colour."""
    assert path.exists() and path.stat().st_size > 0
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] >= 150 and pixels.shape[1] >= 150
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 1


def reliability(seed: int, n_classes: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(n_classes) * 0.5, 300)
    labels = np.array([rng.choice(n_classes, p=p) for p in probs])
    return calibration(labels, probs, n_bins=15)


@pytest.mark.parametrize("n_runs", [1, 3])
def test_plot_reliability(tmp_path, n_runs):
    curves = {MODELS[i]: reliability(i) for i in range(n_runs)}
    curves[MODELS[0]]["bins"][3].update(n=0, mean_predicted=None, observed=None)  # an empty bin
    path = tmp_path / "reliability.png"
    plot_reliability(curves, "calibration", path)
    assert_drawn(path)


def test_plot_reliability_top_label(tmp_path):
    path = tmp_path / "reliability.png"
    plot_reliability({"vit": reliability(0, n_classes=4)}, "calibration, 4 classes", path)
    assert_drawn(path)


@pytest.mark.parametrize("n_folds, n_models", [(1, 1), (5, 3)])
def test_plot_fold_spread(tmp_path, n_folds, n_models):
    rng = np.random.default_rng(0)
    rows = [
        {"model": m, "fold": f, "auc": rng.uniform(0.7, 0.9), "sensitivity": rng.uniform(0.6, 0.9)}
        for m in MODELS[:n_models]
        for f in range(n_folds)
    ]
    per_fold = pd.DataFrame(rows)
    per_fold.loc[0, "sensitivity"] = np.nan
    pooled = {m: {"auc": 0.8, "sensitivity": np.nan if m == "resnet" else 0.75} for m in MODELS[:n_models]}
    path = tmp_path / "folds.png"
    plot_fold_spread(per_fold, pooled, ["auc", "sensitivity"], "cross-validation", path)
    assert_drawn(path)


@pytest.mark.parametrize("n_models", [1, 3])
def test_plot_subgroups(tmp_path, n_models):
    rng = np.random.default_rng(1)
    rows = []
    for model in MODELS[:n_models]:
        for column, groups in (("sex", ["F", "M"]), ("site", ["A", "B", "C"])):
            for group in groups:
                row = {"column": column, "group": group, "model": model, "n_patients": int(rng.integers(3, 50))}
                for key in METRICS:
                    value = rng.uniform(0.5, 0.95)
                    row.update({key: value, f"{key}_ci_low": value - 0.1, f"{key}_ci_high": min(value + 0.1, 1)})
                rows.append(row)
    table = pd.DataFrame(rows)
    table.loc[table["group"] == "C", ["auc_ci_low", "auc_ci_high"]] = np.nan  # too small for a CI
    table.loc[0, "auc"] = np.nan  # one class only
    path = tmp_path / "subgroups.png"
    plot_subgroups(table, ["auc", "sensitivity"], "subgroups", path)
    assert_drawn(path)


@pytest.mark.parametrize("n_models", [2, 3])
def test_plot_pairwise(tmp_path, n_models):
    pairs = [(a, b) for i, a in enumerate(MODELS[:n_models]) for b in MODELS[i + 1 : n_models]]
    rows = []
    for method in ("DeLong paired test", "paired bootstrap over patients"):
        for a, b in pairs:
            rows.append(
                {"model_a": a, "model_b": b, "difference": 0.03, "ci_low": -0.01, "ci_high": 0.07, "p_value": 0.0004, "method": method}
            )
    comparisons = pd.DataFrame(rows)
    comparisons.loc[0, ["ci_low", "ci_high", "p_value"]] = np.nan
    path = tmp_path / "pairwise.png"
    plot_pairwise(comparisons, "model comparison", path)
    assert_drawn(path)


def test_plot_subgroups_missing_group_value(tmp_path):
    # a NaN group (missing in the manifest) in a float column, and only two rows
    row = {key: 0.7 for key in METRICS} | {f"{key}_ci_low": 0.6 for key in METRICS} | {f"{key}_ci_high": 0.8 for key in METRICS}
    table = pd.DataFrame([row | {"group": 50.0, "n_patients": 12}, row | {"group": np.nan, "n_patients": np.nan}])
    table = table.assign(column="age", model="vit")
    path = tmp_path / "subgroups.png"
    plot_subgroups(table, ["auc"], "subgroups", path)
    assert_drawn(path)


def test_plot_pairwise_with_both_tests(tmp_path):
    comparisons = pd.DataFrame(
        [
            {
                "model_a": "densenet",
                "model_b": "vit",
                "difference": -0.02,
                "ci_low": -0.06,
                "ci_high": 0.01,
                "p_value": 0.21,
                "delong_p": 0.19,
                "method": "paired bootstrap over patients (CI, p); DeLong test (delong_p)",
            }
        ]
    )
    path = tmp_path / "pairwise.png"
    plot_pairwise(comparisons, "model comparison", path)
    assert_drawn(path)
