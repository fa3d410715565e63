"""The comparison of a study's arms on the same test patients.

Each arm was trained with the same seeds at every level; its score at a level is the
mean over seeds (AUC, AUPRC, sensitivity at a fixed specificity), with the spread
across seeds and the percentile bootstrap CI over test patients of that mean (every
seed's predictions resampled together). Each arm is compared with the reference arm by
the paired bootstrap over patients of the difference of the seed-mean AUCs; a
difference is called only where its interval excludes 0. The "labels saved" read-out
(label-fraction sweeps) is the smallest fraction at which an arm's mean AUC reaches the
reference arm's at the largest fraction."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from casebook.analysis.stats import bootstrap_ci, paired_bootstrap_test


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half), the value scikit-learn
    gives, without its per-call overhead: the bootstrap calls it thousands of times."""
    ranks = rankdata(scores)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (AUPRC) as scikit-learn defines it: the precision at each
    distinct threshold weighted by the recall it adds."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    tp = np.cumsum(hits)[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall_gain = np.diff(np.r_[0, tp]) / tp[-1]
    return float(np.sum(precision * recall_gain))


def sensitivity_at(labels: np.ndarray, scores: np.ndarray, specificity: float) -> float:
    """Sensitivity at the lowest threshold that keeps at least ``specificity`` of the
    negatives at or below it (the empirical quantile, no interpolation: with 10
    negatives and 0.9, the ninth smallest)."""
    negatives, positives = scores[labels == 0], scores[labels == 1]
    threshold = np.quantile(negatives, specificity, method="inverted_cdf")
    return float(np.mean(positives > threshold))


def mean_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The mean over seeds (columns) of the ROC AUC."""
    return float(np.mean([roc_auc(labels, scores[:, j]) for j in range(scores.shape[1])]))


def per_seed_metrics(specificity: float) -> Callable[[np.ndarray, np.ndarray], dict[str, float]]:
    """Metrics of a (n_images, n_seeds) score matrix, each the mean over seeds (NaN
    when the labels have one class only)."""

    def metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        if np.unique(labels).size < 2:
            return {"auc": np.nan, "auprc": np.nan, "sensitivity": np.nan}
        cols = [scores[:, j] for j in range(scores.shape[1])]
        return {
            "auc": mean_auc(labels, scores),
            "auprc": float(np.mean([average_precision(labels, c) for c in cols])),
            "sensitivity": float(np.mean([sensitivity_at(labels, c, specificity) for c in cols])),
        }

    return metrics


def score_matrix(predictions: pd.DataFrame, model: str, level: str, seeds: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, patients and the (n_images, n_seeds) probabilities of one arm at one
    level, the images in one order for every arm (by id)."""
    part = predictions[(predictions["model"] == model) & (predictions["level"] == level)]
    wide = part.pivot_table(index=["image_id", "patient_id", "label"], columns="seed", values="prob").sort_index()
    missing = sorted(set(seeds) - set(wide.columns))
    if missing or wide.isna().any().any():
        raise ValueError(
            f"model {model!r} at level {level}: its predictions.tsv files (arms/{model}/seed_<s>/) lack seed(s) "
            f"{missing or 'none'} or some test images of a seed; every seed must score every test image"
        )
    return wide.index.get_level_values("label").to_numpy(), wide.index.get_level_values("patient_id").to_numpy(), wide[seeds].to_numpy()


def summarize(predictions: pd.DataFrame, costs: pd.DataFrame, settings: dict[str, Any], kind: str) -> dict[str, Any]:
    """Every arm's scores per level with CIs, the paired differences against the
    reference arm, the costs at the largest level and the labels-saved read-out."""
    seeds = sorted(int(s) for s in settings["seeds"])
    models = list(dict.fromkeys(predictions["model"]))
    reference = settings.get("reference") or models[0]
    levels = sorted(set(predictions["level"]), key=float)
    n_boot, ci_level, spec = int(settings["n_bootstrap"]), float(settings["ci_level"]), float(settings["specificity"])
    metrics = per_seed_metrics(spec)
    rows, differences = [], []
    for model in models:
        for level in levels:
            labels, patients, scores = score_matrix(predictions, model, level, seeds)
            point = metrics(labels, scores)
            ci = bootstrap_ci(labels, scores, patients, metrics, n_boot=n_boot, level=ci_level, seed=0)
            spread = {
                k: float(np.std([metrics(labels, scores[:, [j]])[k] for j in range(len(seeds))], ddof=1)) if len(seeds) > 1 else 0.0
                for k in point
            }
            rows.append(
                {
                    "model": model,
                    "level": float(level),
                    **{
                        f"{k}{s}": v
                        for k, val in point.items()
                        for s, v in (("", val), ("_low", ci[k][0]), ("_high", ci[k][1]), ("_sd", spread[k]))
                    },
                }
            )
            if model != reference:
                _, _, ref_scores = score_matrix(predictions, reference, level, seeds)
                test = paired_bootstrap_test(
                    labels, scores, ref_scores, patients, statistic=mean_auc, n_boot=n_boot, level=ci_level, seed=0
                )
                differences.append(
                    {
                        "model": model,
                        "reference": reference,
                        "level": float(level),
                        **test,
                        "excludes_zero": bool(test["ci_low"] > 0 or test["ci_high"] < 0),
                    }
                )
    table = pd.DataFrame(rows)
    return {
        "kind": kind,
        "reference": reference,
        "seeds": seeds,
        "specificity": spec,
        "ci_level": ci_level,
        "scores": table.to_dict(orient="records"),
        "differences": differences,
        "costs": cost_table(costs, levels[-1]).to_dict(orient="records"),
        "labels_saved": labels_saved(table, reference) if kind == "label_fraction" else {},
    }


def cost_table(costs: pd.DataFrame, level: str) -> pd.DataFrame:
    """Each arm's costs at the largest level, averaged over seeds."""
    part = costs[costs["level"].astype(float) == float(level)]
    columns = ["parameters", "trainable_parameters", "macs_per_image", "train_images_per_s", "inference_images_per_s"]
    return part.groupby("model", sort=False)[columns].mean().reset_index()


def labels_saved(table: pd.DataFrame, reference: str) -> dict[str, float | None]:
    """Per arm: the smallest fraction whose mean AUC reaches the reference arm's at the
    largest fraction (None: no fraction does)."""
    top = table["level"].max()
    target = float(table[(table["model"] == reference) & (table["level"] == top)]["auc"].iloc[0])
    out: dict[str, float | None] = {}
    for model, part in table.groupby("model", sort=False):
        reached = part[part["auc"] >= target]["level"]
        out[model] = float(reached.min()) if len(reached) else None
    return {"target_auc": target, "fraction": out}


def read_arm_tables(paths: list[str]) -> pd.DataFrame:
    """The tables of every fit (``.../<model>/seed_<s>/<table>.tsv``) with model and
    seed columns, in the order of ``paths``."""
    frames = []
    for path in paths:
        seed_dir = Path(path).parent
        frame = pd.read_csv(path, sep="\t", dtype={"level": str, "image_id": str, "patient_id": str})
        frames.append(frame.assign(model=seed_dir.parent.name, seed=int(seed_dir.name.removeprefix("seed_"))))
    return pd.concat(frames, ignore_index=True)


def evaluate_stage(
    settings: dict[str, Any], *, title: str, inputs: dict[str, list[str]], outputs: dict[str, str], wildcards=None
) -> dict[str, Any]:
    """The comparison_evaluate rule: metrics.json, table.tsv and the figures."""
    from casebook import provenance
    from casebook.fileio import atomic_path, write_json
    from casebook.tasks.comparison import figures

    started, code = provenance.now(), provenance.code_state()
    kind = settings["sweep"]["kind"]
    summary = summarize(read_arm_tables(inputs["predictions"]), read_arm_tables(inputs["costs"]), settings, kind)
    write_json(outputs["metrics"], summary)
    with atomic_path(outputs["table"]) as tmp:
        pd.DataFrame(summary["scores"]).to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    figures.plot_curves(summary, title, outputs["curves"])
    figures.plot_cost(summary, title, outputs["cost"])
    figures.plot_differences(summary, title, outputs["differences"])
    provenance.write_record(
        outputs["provenance"],
        rule="comparison_evaluate",
        inputs=[*inputs["predictions"], *inputs["costs"]],
        outputs=[v for k, v in outputs.items() if k != "provenance"],
        params={"settings": settings},
        started=started,
        code=code,
        wildcards=wildcards,
    )
    return summary
