"""Per-case segmentation metrics as the field reports them: Dice, IoU, HD95 and NSD per
region (MONAI), volumes in millilitres, bootstrap summaries over cases, Bland-Altman
agreement of volumes and a paired Wilcoxon test between two models.

Arrays are label maps in SimpleITK array order (z, y, x) and ``spacing`` is given in the
same order, in millimetres, so distances and volumes come out in mm and ml.

Empty sets (they matter for BraTS, where enhancing tumour may be absent from a case):

* truth and prediction both empty: Dice 1, IoU 1, HD95 0 mm, NSD 1 (nothing to find,
  nothing found: a perfect answer);
* exactly one of them empty: Dice 0, IoU 0, HD95 NaN (a distance to nothing is
  undefined), NSD 0.

NaN values are left out of means; ``summarize_cases`` reports how many there were.
Because "both empty" scores 1, a model that never predicts a rare region (a lesion absent
from most cases) still gets a high mean Dice for it; ``summarize_cases`` therefore also
counts, per region, the cases that hold it, those where it was found, and the false
alarms (:func:`detection_counts`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from casebook.analysis.stats import bootstrap_ci

if TYPE_CHECKING:
    import torch

Regions = dict[str, list[int]]

CASE_METRICS = ("dice", "iou", "hd95", "nsd")


def default_regions(label_names: dict[int, str]) -> Regions:
    """One region per foreground label, named by its name in snake_case.

    Label 0 is background and labels named "unused" are placeholders in some datasets'
    label tables (e.g. BraTS has no label 3), so neither becomes a region.
    """
    regions: Regions = {}
    for value, name in sorted(label_names.items()):
        if value <= 0 or name.strip().lower() == "unused":
            continue
        regions[_snake_case(name)] = [int(value)]
    return regions


def _snake_case(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def region_mask(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Boolean mask of the voxels whose label is any of ``values`` (the region's union)."""
    return np.isin(labels, np.asarray(list(values)))


def volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a boolean mask in millilitres (1 ml = 1000 mm^3)."""
    return float(mask.sum()) * float(np.prod(spacing)) / 1000.0


def _as_batch(mask: np.ndarray) -> torch.Tensor:
    # MONAI metrics take batch-first, channel-first tensors: (B=1, C=1, z, y, x).
    import torch  # here, not at the top: the comparison of models (summarize_seg) needs no torch

    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]


def _empty_convention(truth_empty: bool, pred_empty: bool) -> dict[str, float]:
    """The values the field uses when truth or prediction is empty (see the module docstring)."""
    if truth_empty and pred_empty:
        return {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "nsd": 1.0}
    return {"dice": 0.0, "iou": 0.0, "hd95": float("nan"), "nsd": 0.0}


def mask_metrics(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], *, nsd_tolerance_mm: float = 2.0) -> dict[str, float]:
    """Dice, IoU, HD95 (mm) and NSD at ``nsd_tolerance_mm`` of two boolean masks (MONAI).

    The single channel is the foreground itself, so every MONAI call needs
    ``include_background=True``: the distance metrics default to False and would
    otherwise drop the only channel.
    """
    # here, not at the top: MONAI and torch take seconds to import, and the comparison of
    # models (summarize_seg) and the figures use this module without them
    from monai.metrics import (
        compute_dice,
        compute_hausdorff_distance,
        compute_iou,
        compute_surface_dice,
    )

    truth_empty, pred_empty = not truth.any(), not pred.any()
    if truth_empty or pred_empty:
        # MONAI returns NaN or inf here and warns; the field's conventions are explicit.
        return _empty_convention(truth_empty, pred_empty)
    y_pred, y = _as_batch(pred), _as_batch(truth)
    # MONAI's prepare_spacing accepts only int/float elements (it rejects np.float32).
    spacing_mm = [float(s) for s in spacing]
    dice = compute_dice(y_pred, y, include_background=True, ignore_empty=False)
    iou = compute_iou(y_pred, y, include_background=True, ignore_empty=False)
    with warnings.catch_warnings():
        # MONAI 1.6 passes its own deprecated get_mask_edges(always_return_as_numpy=...)
        # internally; the warning is about MONAI's code, once per case, not ours.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=spacing_mm)
        # Distances are computed with the spacing, so the threshold is in mm (despite the
        # MONAI docstring's "pixels").
        nsd = compute_surface_dice(y_pred, y, class_thresholds=[float(nsd_tolerance_mm)], include_background=True, spacing=spacing_mm)
    return {"dice": float(dice), "iou": float(iou), "hd95": float(hd95), "nsd": float(nsd)}


def case_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float],
    regions: Regions,
    *,
    nsd_tolerance_mm: float = 2.0,
) -> list[dict]:
    """One dict per region: ``region, dice, iou, hd95, nsd, volume_true_ml, volume_pred_ml,
    empty_truth, empty_pred``.

    ``pred`` and ``truth`` are label maps (z, y, x); ``spacing`` is (z, y, x) in mm. A
    region counts all of its label values together (e.g. BraTS whole tumour = 1, 2, 4).
    HD95 is in mm; NSD is the fraction of both surfaces within ``nsd_tolerance_mm`` of
    the other. Empty truth or prediction: Dice/IoU/NSD 1 and HD95 0 when both are
    empty; Dice/IoU/NSD 0 and HD95 NaN when exactly one is.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    if len(spacing) != truth.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match the {truth.ndim}D arrays")
    rows = []
    for name, values in regions.items():
        p, t = region_mask(pred, values), region_mask(truth, values)
        rows.append(
            {
                "region": name,
                **mask_metrics(p, t, spacing, nsd_tolerance_mm=nsd_tolerance_mm),
                "volume_true_ml": volume_ml(t, spacing),
                "volume_pred_ml": volume_ml(p, spacing),
                "empty_truth": not t.any(),
                "empty_pred": not p.any(),
            }
        )
    return rows


def _nanmean_columns(values: np.ndarray, _unused: np.ndarray) -> dict[int, float]:
    with warnings.catch_warnings():  # a resample may hold only NaN (e.g. HD95 of absent regions)
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(values, axis=0)
    return dict(enumerate(means.tolist()))


def _metric_summary(values: np.ndarray, ci: tuple[float, float]) -> dict[str, float | int]:
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        nan = float("nan")
        return {"mean": nan, "sd": nan, "median": nan, "ci_low": nan, "ci_high": nan, "n": 0, "n_nan": int(values.size)}
    return {
        "mean": float(finite.mean()),
        "sd": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
        "median": float(np.median(finite)),
        "ci_low": ci[0],
        "ci_high": ci[1],
        "n": int(finite.size),
        "n_nan": int(values.size - finite.size),
    }


def detection_counts(rows: pd.DataFrame) -> dict[str, int]:
    """For one region's rows of a per-case table: the cases whose truth holds the region,
    those of them where the prediction overlaps it (Dice > 0), and the cases without it
    where some was predicted (false alarms)."""
    present = ~rows["empty_truth"].astype(bool)
    predicted = ~rows["empty_pred"].astype(bool)
    return {
        "cases_with_region": int(present.sum()),
        "found": int((present & (rows["dice"] > 0)).sum()),
        "false_alarm_cases": int((~present & predicted).sum()),
    }


def summarize_cases(table: pd.DataFrame, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Per region and metric: mean, sd, median, percentile-bootstrap CI of the mean, n, n_nan.

    ``table`` has one row per case and region (columns ``case_id, region`` and
    CASE_METRICS, and ``patient_id`` where known). Patients (else cases) are resampled with replacement (all metrics of a region from the
    same resample, with ``evaluate.bootstrap_ci``, seeded with ``seed``); NaN values
    (HD95 when exactly one of truth and prediction is empty) are left out of every mean
    and counted in ``n_nan``. Each region also has ``detection``
    (:func:`detection_counts`). ``mean_dice`` is the mean over regions of the region mean
    Dice.
    """
    regions: dict[str, dict] = {}
    for region, rows in table.groupby("region", sort=False):
        values = rows[list(CASE_METRICS)].to_numpy(dtype=float)
        # whole patients are resampled where the table has them (several time points of
        # one patient are not independent cases), else cases
        groups = rows["patient_id" if "patient_id" in rows.columns else "case_id"].to_numpy()
        cis = bootstrap_ci(values, values, groups, _nanmean_columns, n_boot=n_boot, level=level, seed=seed)
        regions[str(region)] = {
            metric: _metric_summary(values[:, j], cis.get(j, (float("nan"), float("nan")))) for j, metric in enumerate(CASE_METRICS)
        }
        regions[str(region)]["detection"] = detection_counts(rows)
    region_dice = [m["dice"]["mean"] for m in regions.values() if not np.isnan(m["dice"]["mean"])]
    return {
        "regions": regions,
        "n_cases": int(table["case_id"].nunique()),
        "ci_level": level,
        "ci_method": "percentile bootstrap over patients" if "patient_id" in table.columns else "percentile bootstrap over cases",
        "n_bootstrap": n_boot,
        "mean_dice": float(np.mean(region_dice)) if region_dice else float("nan"),
    }


def wilcoxon_paired(a: pd.Series, b: pd.Series) -> dict:
    """Wilcoxon signed-rank test of two models' per-case values on the same cases.

    The series are aligned on their index (case ids); cases missing or NaN in either are
    dropped. ``median_difference`` is the median of a - b. Zero differences are dropped,
    as in scipy's default; with fewer than 2 non-zero differences the test is undefined
    and statistic and p_value are NaN.
    """
    pairs = pd.concat({"a": a, "b": b}, axis=1, join="inner").dropna()
    diff = (pairs["a"] - pairs["b"]).to_numpy(dtype=float)
    n = int(diff.size)
    median = float(np.median(diff)) if n else float("nan")
    if np.count_nonzero(diff) < 2:
        return {"statistic": float("nan"), "p_value": float("nan"), "n": n, "median_difference": median}
    result = stats.wilcoxon(pairs["a"], pairs["b"])
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue), "n": n, "median_difference": median}
