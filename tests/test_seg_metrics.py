"""Segmentation metrics on tiny synthetic label maps whose answers can be worked out by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from casebook.analysis.stats import bland_altman
from casebook.tasks.segmentation.metrics import (
    CASE_METRICS,
    case_metrics,
    default_regions,
    summarize_cases,
    wilcoxon_paired,
)

SHAPE = (20, 20, 20)
ONE = {"fg": [1]}


def cube(lo: tuple[int, int, int], hi: tuple[int, int, int], label: int = 1, shape=SHAPE) -> np.ndarray:
    out = np.zeros(shape, dtype=np.uint8)
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = label
    return out


def sphere(radius: float, shape=SHAPE) -> np.ndarray:
    z, y, x = np.indices(shape) - (np.array(shape) // 2)[:, None, None, None]
    return (z**2 + y**2 + x**2 <= radius**2).astype(np.uint8)


def only(rows: list[dict], region: str = "fg") -> dict:
    (row,) = [r for r in rows if r["region"] == region]
    return row


def test_perfect_prediction():
    truth = sphere(6)
    m = only(case_metrics(truth.copy(), truth, (1.0, 1.0, 1.0), ONE))
    assert m["dice"] == pytest.approx(1.0)
    assert m["iou"] == pytest.approx(1.0)
    assert m["hd95"] == pytest.approx(0.0)
    assert m["nsd"] == pytest.approx(1.0)
    assert m["volume_pred_ml"] == m["volume_true_ml"]
    assert not m["empty_truth"] and not m["empty_pred"]


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize(("spacing", "mm_per_voxel"), [((3.0, 1.0, 1.0), 3.0), ((1.0, 1.0, 1.0), 1.0), ((1.0, 3.0, 1.0), 1.0)])
def test_hd95_of_a_z_shift_is_in_mm_along_z(k, spacing, mm_per_voxel):
    # Every top-face voxel of the shifted cube is exactly k slices from the true top face
    # (a sixth of the surface, more than 5%), and nothing is farther: HD95 = k * z spacing.
    # Only the z spacing may matter, which checks that spacing is read in (z, y, x) order.
    truth = cube((4, 4, 4), (12, 12, 12))
    pred = cube((4 + k, 4, 4), (12 + k, 12, 12))
    m = only(case_metrics(pred, truth, spacing, ONE))
    assert m["hd95"] == pytest.approx(k * mm_per_voxel)


def test_dice_and_iou_of_overlapping_cubes_match_hand_computation():
    truth = cube((2, 2, 2), (8, 8, 8))  # 6 * 6 * 6 = 216 voxels
    pred = cube((4, 3, 2), (10, 9, 6))  # 6 * 6 * 4 = 144 voxels
    overlap = 4 * 5 * 4  # z 4:8, y 3:8, x 2:6
    m = only(case_metrics(pred, truth, (1.0, 1.0, 1.0), ONE))
    assert m["dice"] == pytest.approx(2 * overlap / (216 + 144), abs=1e-6)
    assert m["iou"] == pytest.approx(overlap / (216 + 144 - overlap), abs=1e-6)


def test_nsd_tolerance_is_in_mm():
    truth = cube((4, 4, 4), (12, 12, 12))
    pred = cube((5, 4, 4), (13, 12, 12))  # one slice off
    thick = only(case_metrics(pred, truth, (3.0, 1.0, 1.0), ONE, nsd_tolerance_mm=2.0))
    assert 0.0 < thick["nsd"] < 1.0  # the caps are 3 mm apart: outside a 2 mm tolerance
    loose = only(case_metrics(pred, truth, (3.0, 1.0, 1.0), ONE, nsd_tolerance_mm=3.0))
    assert loose["nsd"] == pytest.approx(1.0)
    thin = only(case_metrics(pred, truth, (1.0, 1.0, 1.0), ONE, nsd_tolerance_mm=2.0))
    assert thin["nsd"] == pytest.approx(1.0)


def brats_like() -> np.ndarray:
    """Oedema (2) around a core (1) around an enhancing centre (4)."""
    truth = cube((2, 2, 2), (14, 14, 14), label=2)
    truth[4:12, 4:12, 4:12] = 1
    truth[6:10, 6:10, 6:10] = 4
    return truth


BRATS = {"whole_tumour": [1, 2, 4], "tumour_core": [1, 4], "enhancing_tumour": [4]}


def test_region_union_counts_labels_together():
    # The model finds the tumour's extent but calls all of it oedema: perfect whole
    # tumour, no core and no enhancing tumour; label 2 alone is only partly right.
    truth = brats_like()
    pred = np.where(truth > 0, 2, 0).astype(np.uint8)
    rows = case_metrics(pred, truth, (1.0, 1.0, 1.0), {**BRATS, "oedema": [2]})
    assert only(rows, "whole_tumour")["dice"] == pytest.approx(1.0)
    assert only(rows, "whole_tumour")["hd95"] == pytest.approx(0.0)
    for region in ("tumour_core", "enhancing_tumour"):
        m = only(rows, region)
        assert m["dice"] == 0.0 and m["nsd"] == 0.0 and math.isnan(m["hd95"])
        assert m["empty_pred"] and not m["empty_truth"]
    n_oedema, n_whole = int((truth == 2).sum()), int((truth > 0).sum())
    assert only(rows, "oedema")["dice"] == pytest.approx(2 * n_oedema / (n_oedema + n_whole), abs=1e-6)


def test_empty_conventions():
    empty = np.zeros(SHAPE, dtype=np.uint8)
    some = cube((4, 4, 4), (8, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN/inf warnings leak out of MONAI for empty masks
        both = only(case_metrics(empty, empty, (1.0, 1.0, 1.0), ONE))
        missed = only(case_metrics(empty, some, (1.0, 1.0, 1.0), ONE))
        invented = only(case_metrics(some, empty, (1.0, 1.0, 1.0), ONE))
    assert (both["dice"], both["iou"], both["hd95"], both["nsd"]) == (1.0, 1.0, 0.0, 1.0)
    assert both["empty_truth"] and both["empty_pred"]
    for m in (missed, invented):
        assert (m["dice"], m["iou"], m["nsd"]) == (0.0, 0.0, 0.0)
        assert math.isnan(m["hd95"])
    assert missed["empty_pred"] and not missed["empty_truth"]
    assert invented["empty_truth"] and not invented["empty_pred"]


def test_volumes_in_millilitres():
    truth = cube((0, 0, 0), (10, 10, 10))  # 1000 voxels
    pred = cube((0, 0, 0), (10, 10, 5))  # 500 voxels
    m = only(case_metrics(pred, truth, (2.0, 0.5, 0.5), ONE))  # 0.5 mm^3 per voxel
    assert m["volume_true_ml"] == pytest.approx(0.5)
    assert m["volume_pred_ml"] == pytest.approx(0.25)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="shape"):
        case_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), (1, 1, 1), ONE)
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1, 1), ONE)


def test_default_regions_snake_case_and_skip_unused():
    names = {0: "background", 1: "Liver", 2: "kidney", 3: "unused", 4: "liver lesion"}
    assert default_regions(names) == {"liver": [1], "kidney": [2], "liver_lesion": [4]}


def case_table(n_cases: int, seed: int = 1, regions=("a", "b")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_cases):
        for r, region in enumerate(regions):
            rows.append(
                {
                    "case_id": f"c{i:03d}",
                    "region": region,
                    "dice": float(np.clip(rng.normal(0.8 - 0.2 * r, 0.1), 0, 1)),
                    "iou": float(rng.uniform(0.4, 0.9)),
                    "hd95": float(rng.gamma(2.0, 2.0)),
                    "nsd": float(rng.uniform(0.5, 1.0)),
                    "volume_true_ml": 10.0,
                    "volume_pred_ml": 11.0,
                    "empty_truth": False,
                    "empty_pred": False,
                }
            )
    return pd.DataFrame(rows)


def test_summary_bootstrap_contains_the_mean_and_narrows_with_more_cases():
    small_table = case_table(10)
    # The same ten cases twelve times over: the same spread, twelve times the cases.
    large_table = pd.concat([small_table.assign(case_id=small_table["case_id"] + f"_{k}") for k in range(12)], ignore_index=True)
    small, large = summarize_cases(small_table, n_boot=400), summarize_cases(large_table, n_boot=400)
    assert small["n_cases"] == 10 and large["n_cases"] == 120
    assert small["ci_method"] == "percentile bootstrap over cases" and small["n_bootstrap"] == 400
    assert small["ci_level"] == 0.95
    for summary in (small, large):
        for region in ("a", "b"):
            for metric in CASE_METRICS:
                s = summary["regions"][region][metric]
                assert s["ci_low"] < s["mean"] < s["ci_high"]
                assert s["n_nan"] == 0
    for region in ("a", "b"):
        for metric in CASE_METRICS:
            assert large["regions"][region][metric]["mean"] == pytest.approx(small["regions"][region][metric]["mean"])
            width = {
                name: s["regions"][region][metric]["ci_high"] - s["regions"][region][metric]["ci_low"]
                for name, s in (("small", small), ("large", large))
            }
            assert width["large"] < 0.5 * width["small"]  # ~ 1 / sqrt(12) = 0.29
    expected = np.mean([small_table.query("region == @r")["dice"].mean() for r in ("a", "b")])
    assert small["mean_dice"] == pytest.approx(expected)


def test_summary_excludes_nan_and_counts_it_and_is_seeded():
    table = case_table(12)
    table.loc[(table["region"] == "b") & (table.index % 3 == 1), "hd95"] = np.nan
    s = summarize_cases(table, n_boot=300, seed=5)
    hd = s["regions"]["b"]["hd95"]
    finite = table.query("region == 'b'")["hd95"].dropna()
    assert (hd["n"], hd["n_nan"]) == (len(finite), 12 - len(finite))
    assert hd["mean"] == pytest.approx(finite.mean())
    assert hd["median"] == pytest.approx(finite.median())
    assert hd["sd"] == pytest.approx(finite.std(ddof=1))
    assert not math.isnan(hd["ci_low"])
    again = summarize_cases(table, n_boot=300, seed=5)
    assert again["regions"]["b"]["hd95"]["ci_low"] == hd["ci_low"]
    other = summarize_cases(table, n_boot=300, seed=6)
    assert other["regions"]["b"]["hd95"]["ci_low"] != hd["ci_low"]


def test_case_metrics_rows_feed_the_summary():
    truth = brats_like()
    rows = []
    for i, shift in enumerate((0, 1, 2)):
        pred = np.roll(truth, shift, axis=0)
        rows += [{"case_id": f"c{i}", **r} for r in case_metrics(pred, truth, (1.0, 1.0, 1.0), BRATS)]
    s = summarize_cases(pd.DataFrame(rows), n_boot=200)
    assert set(s["regions"]) == set(BRATS)
    assert s["regions"]["whole_tumour"]["dice"]["n"] == 3
    assert s["regions"]["whole_tumour"]["dice"]["ci_high"] == pytest.approx(1.0)  # the unshifted case


def test_bland_altman_of_a_constant_overestimate():
    true_ml = np.array([10.0, 25.0, 40.0, 55.0, 80.0])
    stats = bland_altman(true_ml, true_ml + 2.0)
    assert stats["bias"] == pytest.approx(2.0)
    assert stats["sd"] == pytest.approx(0.0, abs=1e-12)
    assert stats["loa_low"] == pytest.approx(2.0) and stats["loa_high"] == pytest.approx(2.0)
    assert stats["n"] == 5
    assert stats["pearson_r"] == pytest.approx(1.0)


def test_bland_altman_sign_limits_and_undefined_correlation():
    stats = bland_altman(np.array([10.0, 20.0, 30.0]), np.array([9.0, 20.0, 28.0]))  # diffs -1, 0, -2
    assert stats["bias"] == pytest.approx(-1.0)
    assert stats["sd"] == pytest.approx(1.0)
    assert (stats["loa_low"], stats["loa_high"]) == pytest.approx((-2.96, 0.96))
    assert math.isnan(bland_altman(np.full(4, 5.0), np.array([1.0, 2.0, 3.0, 4.0]))["pearson_r"])


def test_wilcoxon_consistent_improvement_and_identical_inputs():
    rng = np.random.default_rng(0)
    cases = [f"c{i:02d}" for i in range(12)]
    base = pd.Series(rng.uniform(0.6, 0.8, 12), index=cases)
    better = base + rng.uniform(0.01, 0.05, 12)
    result = wilcoxon_paired(better, base)
    assert result["n"] == 12
    assert result["p_value"] < 0.01  # exact: 2 / 2**12
    assert result["median_difference"] > 0
    shuffled = wilcoxon_paired(better, base.sample(frac=1.0, random_state=1))  # aligned on case id
    assert shuffled["p_value"] == pytest.approx(result["p_value"])
    same = wilcoxon_paired(base, base.copy())
    assert math.isnan(same["p_value"]) and math.isnan(same["statistic"])
    assert same["median_difference"] == 0.0 and same["n"] == 12


def test_a_region_never_predicted_is_reported_as_never_found_despite_its_mean_dice():
    # a lesion in 1 of 5 cases, never predicted; a false alarm in another case
    rows = [
        {"case_id": f"c{i}", "region": "lesion", "dice": d, "iou": d, "hd95": h, "nsd": d,
         "volume_true_ml": 0.0, "volume_pred_ml": 0.0, "empty_truth": et, "empty_pred": ep}
        for i, (d, h, et, ep) in enumerate([(0.0, np.nan, False, True), (0.0, np.nan, True, False)] + [(1.0, 0.0, True, True)] * 3)
    ]  # fmt: skip
    summary = summarize_cases(pd.DataFrame(rows), n_boot=50)["regions"]["lesion"]
    assert summary["dice"]["mean"] == pytest.approx(0.6)  # "both empty = 1" flatters it
    assert summary["detection"] == {"cases_with_region": 1, "found": 0, "false_alarm_cases": 1}
