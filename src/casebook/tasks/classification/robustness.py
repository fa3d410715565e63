"""Test metrics of a classifier over a sweep of perturbation severities, and the rule's stage.

The operating threshold is the one chosen on validation data by the evaluate rule
(``metrics.json``), so accuracy and balanced accuracy show how a deployed model, whose
threshold is fixed, degrades; the AUC shows whether the ranking survives at all.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from tqdm.auto import tqdm

from casebook.analysis.robustness import figures
from casebook.analysis.robustness.breakdown import breakdown
from casebook.analysis.robustness.perturbations import IDENTITY, UNITS, image_seeds, merged_severities, perturb
from casebook.analysis.robustness.sweep import test_subset, write_sweep
from casebook.engine.runtime import select_device
from casebook.fileio import read_json
from casebook.tasks.classification.cache import load_cache
from casebook.tasks.classification.data import CachedImages, make_loader, rows_for
from casebook.tasks.classification.metrics import point_metrics
from casebook.tasks.classification.train import load_model, predict

log = logging.getLogger(__name__)

SCORES = ("auc", "balanced_accuracy", "accuracy")
COLUMNS = ["perturbation", "severity", *SCORES, "n_images"]


def _scores(model, images: np.ndarray, labels: np.ndarray, threshold: float, device, batch_size: int) -> dict[str, float]:
    loader = make_loader(CachedImages(images, labels, np.arange(len(images))), batch_size=batch_size, shuffle=False)
    probs, _ = predict(model, loader, device)
    metrics = point_metrics(labels, probs, threshold)
    return {key: metrics[key] for key in SCORES}


def sweep(
    model: torch.nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    severities: dict[str, list[float]],
    *,
    metric: str = "auc",
    threshold: float = 0.5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> pd.DataFrame:
    """One row per (perturbation, severity): the metrics of ``model`` on the perturbed
    ``images`` (N, C, *spatial). Each perturbation's first row is the clean set (its
    identity severity: 0, or 1 for downsampling), computed once. Every image keeps its
    seed across perturbations and severities, so the severity alone changes."""
    unknown = set(severities) - set(IDENTITY)
    if unknown:
        raise ValueError(f"unknown perturbation(s) {sorted(unknown)}; known: {list(IDENTITY)}")
    labels = np.asarray(labels)
    seeds = image_seeds(seed, len(images))
    steps = [(name, float(s)) for name, levels in severities.items() for s in sorted(set(map(float, levels))) if s != IDENTITY[name]]
    clean = _scores(model, images, labels, threshold, device, batch_size)
    done = {(name, IDENTITY[name]): clean for name in severities}
    bar = tqdm(steps, desc="robustness", unit="step")
    for name, severity in bar:
        bar.set_postfix_str(f"{name} {severity:g}")
        done[(name, severity)] = _scores(model, perturb(images, name, severity, seeds), labels, threshold, device, batch_size)
        log.info("%s %g: %s %.4f (clean %.4f)", name, severity, metric, done[(name, severity)][metric], clean[metric])
    rows = [
        {"perturbation": name, "severity": severity, **done[(name, severity)], "n_images": len(images)}
        for name in severities
        for severity in [IDENTITY[name]] + [s for n, s in steps if n == name]
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def robustness_stage(
    model_cfg: dict[str, Any],
    cfg: dict[str, Any],
    *,
    inputs: dict[str, str],
    outputs: dict[str, str],
    class_names: list[str],
    title: str,
    wildcards: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The robustness rule: sweep the (capped) test set, write the table, the summary
    and the two figures. Returns the summary."""
    metric, margin = cfg.get("metric", "auc"), float(cfg.get("margin", 0.05))
    if metric not in SCORES:
        raise ValueError(f"robustness metric {metric!r} is not one of {list(SCORES)}")
    severities = merged_severities(cfg.get("perturbations"))
    if not severities:
        raise ValueError("robustness.perturbations skips every perturbation (all lists empty): nothing to sweep")
    seed = int(model_cfg.get("seed", 0))
    threshold = float(read_json(inputs["metrics"])["threshold"])
    images, _ = load_cache(inputs["images"])
    index = pd.read_csv(inputs["index"], sep="\t", dtype={"image_id": str, "patient_id": str})
    ids = test_subset(read_json(inputs["splits"])["test"], cfg.get("max_images"), seed)
    if not ids:
        raise ValueError(f"{inputs['splits']}: the test set is empty; nothing to perturb")
    rows, labels = rows_for(index, ids)
    test = np.asarray(images[rows])
    device = select_device(model_cfg.get("device", "auto"))
    # TorchIO's motion and downsampling resample with SimpleITK, which takes every core
    # by default: keep it within the job's threads, as torch is
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, torch.get_num_threads()))
    model = load_model(
        inputs["model"],
        model_cfg["network"],
        spatial_dims=test.ndim - 2,
        in_channels=test.shape[1],
        num_classes=len(class_names),
        device=device,
    )
    batch = int(model_cfg["train"].get("batch_size", 32)) * 2
    table = sweep(model, test, labels, severities, metric=metric, threshold=threshold, seed=seed, device=device, batch_size=batch)
    clean = float(table[metric].iloc[0])
    summary = {
        "metric": metric,
        "margin": margin,
        "clean": clean,
        "breakdown": breakdown(table, metric, margin),
        "severities": severities,
        "units": {name: UNITS[name] for name in severities},
        "threshold": threshold,
        "n_images": len(ids),
        "n_positive": int((labels == 1).sum()),
        "seed": seed,
    }
    write_sweep(
        table,
        summary,
        outputs,
        wildcards=wildcards,
        metric=metric,
        margin=margin,
        title=f"{title}: {metric.replace('_', ' ')} under perturbation",
    )
    figures.plot_perturbation_examples(
        _examples(test, labels, severities, seed), f"{title}: test image {ids[_example_index(labels)]}", outputs["examples"]
    )
    return summary


def _example_index(labels: np.ndarray) -> int:
    """The first positive test image (the finding the model must still see), else the first."""
    positive = np.flatnonzero(labels == 1)
    return int(positive[0]) if len(positive) else 0


def _examples(
    test: np.ndarray, labels: np.ndarray, severities: dict[str, list[float]], seed: int
) -> dict[str, list[tuple[float, np.ndarray]]]:
    """One test image at each severity, perturbed with the seed it had in the sweep, so
    the figure shows exactly what the model saw."""
    i = _example_index(labels)
    image, image_seed = test[i : i + 1], image_seeds(seed, len(test))[i : i + 1]
    return {
        name: [(IDENTITY[name], image[0])] + [(s, perturb(image, name, s, image_seed)[0]) for s in levels if s != IDENTITY[name]]
        for name, levels in severities.items()
    }
