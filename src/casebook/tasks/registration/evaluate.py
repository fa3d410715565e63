"""The evaluate_registration rule: every method on the test pairs.

Methods: ``unregistered`` (the zero field: what the pair's labels overlap before any
registration), the classical baseline ``simpleitk`` (:mod:`.baselines`), and each
trained model. Per test pair and method (:mod:`.metrics`): Dice and HD95 of the warped
moving labels against the fixed labels, SDlogJ and the share of folding pixels of the
field, its error against the true field, and the seconds the method took for that one
pair (a network: one forward pass at batch size 1, after a warm-up; the rule's threads).
Per method: means with percentile bootstrap CIs over patients; each model against the
unregistered pair and against the baseline, paired over patients."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch

from casebook import provenance
from casebook.analysis.stats import mean_ci, paired_difference
from casebook.engine.runtime import select_device
from casebook.fileio import atomic_path, read_json, write_json
from casebook.tasks.registration import figures
from casebook.tasks.registration.baselines import simpleitk_field
from casebook.tasks.registration.fields import warp
from casebook.tasks.registration.metrics import field_error_mm, jacobian_stats, label_overlap
from casebook.tasks.registration.pairs import Pairs, load_pairs
from casebook.tasks.registration.train import image_batch, load_registrar

UNREGISTERED = "unregistered"
BASELINE = "simpleitk"
#: Summarized per method; higher is better only for Dice.
METRICS = ("dice", "hd95", "sdlogj", "folding_percent", "field_error_mm", "seconds")


def _network_method(model: torch.nn.Module) -> Callable[[np.ndarray, np.ndarray, tuple], np.ndarray]:
    device = next(model.parameters()).device

    @torch.no_grad()
    def run(moving: np.ndarray, fixed: np.ndarray, _spacing) -> np.ndarray:
        return model(image_batch(moving[None]).to(device), image_batch(fixed[None]).to(device))[0].cpu().numpy()

    return run


def methods_of(nets: dict[str, torch.nn.Module], settings: dict[str, Any], seed: int, failures: list[list[str]]) -> dict[str, Callable]:
    """Each method as a function (moving, fixed, spacing) -> field; the baseline appends
    the stages that failed on each pair to ``failures``."""
    methods: dict[str, Callable] = {UNREGISTERED: lambda m, _f, _s: np.zeros((2, *m.shape), np.float32)}

    def baseline(moving, fixed, spacing):
        ddf, failed = simpleitk_field(moving, fixed, tuple(spacing), settings.get("simpleitk"), seed)
        failures.append(failed)
        return ddf

    if BASELINE in settings.get("baselines", [BASELINE]):
        methods[BASELINE] = baseline
    for name, model in nets.items():
        methods[name] = _network_method(model)
    return methods


def score_pairs(pairs: Pairs, methods: dict[str, Callable], labels: list[int]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """One row per pair and method, and each method's fields (N, 2, rows, columns)."""
    rows, fields = [], {}
    for name, method in methods.items():
        method(pairs.moving[0], pairs.fixed[0], pairs.spacing[0])  # warm-up: the first call pays for set-up
        out = []
        for i in range(len(pairs)):
            start = time.perf_counter()
            ddf = np.asarray(method(pairs.moving[i], pairs.fixed[i], pairs.spacing[i]), dtype=np.float32)
            seconds = 0.0 if name == UNREGISTERED else time.perf_counter() - start  # nothing to run
            spacing = tuple(float(s) for s in pairs.spacing[i])
            warped = warp(torch.from_numpy(pairs.moving_label[i][None, None]), torch.from_numpy(ddf[None]), labels=True)[0, 0].numpy()
            rows.append(
                {
                    "pair": i,
                    "image_id": pairs.image_id[i],
                    "patient_id": pairs.patient[i],
                    "method": name,
                    **label_overlap(warped, pairs.fixed_label[i], labels, spacing),
                    **jacobian_stats(ddf),
                    "field_error_mm": field_error_mm(ddf, pairs.true_ddf[i], pairs.fixed_roi[i], spacing),
                    "seconds": seconds,
                }
            )
            out.append(ddf)
        fields[name] = np.stack(out)
    return pd.DataFrame(rows), fields


def summarize(table: pd.DataFrame, models: list[str], *, n_boot: int, level: float, seed: int) -> dict[str, Any]:
    """Each method's mean metrics with CIs; each model against the unregistered pair and
    the baseline (when run), paired over patients; the baseline's time over each model's."""
    wide = {m: rows.sort_values("pair").reset_index(drop=True) for m, rows in table.groupby("method", sort=False)}
    patients = wide[UNREGISTERED]["patient_id"].to_numpy()
    # a metric is taken over the pairs where every method has it: no Dice where the fixed
    # slice has none of the labels, no field error for inter-patient pairs (no true field)
    scored = {k: np.logical_and.reduce([np.isfinite(w[k].to_numpy()) for w in wide.values()]) for k in METRICS}
    present = [k for k in METRICS if scored[k].any()]

    def values(method: str, k: str) -> np.ndarray:
        return wide[method][k].to_numpy()[scored[k]]

    methods = {m: {k: mean_ci(values(m, k), patients[scored[k]], n_boot, level, seed) for k in present} for m in wide}
    against = [UNREGISTERED] + ([BASELINE] if BASELINE in wide else [])
    comparisons = {
        model: {
            other: {k: paired_difference(values(model, k), values(other, k), patients[scored[k]], n_boot=n_boot, level=level, seed=seed)
                    for k in ("dice", "hd95", "field_error_mm") if k in present}
            for other in against
        }
        for model in models
    }  # fmt: skip
    speedup = {m: methods[BASELINE]["seconds"]["mean"] / methods[m]["seconds"]["mean"] for m in models} if BASELINE in wide else {}
    return {
        "methods": methods,
        "comparisons": comparisons,
        "baseline_time_over_model_time": speedup,
        "metrics": present,
        "n_pairs_scored": {k: int(scored[k].sum()) for k in present},
        "ci_level": level,
        "n_bootstrap": n_boot,
        "ci_method": "percentile bootstrap over patients",
    }


def evaluate_stage(
    models: dict[str, dict[str, Any]],
    settings: dict[str, Any],
    *,
    inputs: dict[str, Any],
    outputs: dict[str, str],
    labels: dict[int, str],
    title: str,
    seed: int,
    wildcards=None,
) -> dict[str, Any]:
    """``models`` maps a model name to its config and ``inputs['models']`` lists their
    ``model.pt`` in the same order; ``labels`` maps each scored label value to its name."""
    started, code = provenance.now(), provenance.code_state()
    clash = sorted(set(models) & {UNREGISTERED, BASELINE})
    if clash:
        raise ValueError(f"model name(s) {clash} are taken by the unregistered pair or the classical baseline: rename the model(s)")
    test = load_pairs(inputs["pairs"], read_json(inputs["splits"])["test"])
    nets = {
        name: load_registrar(path, cfg["network"], select_device(cfg.get("device", "auto")))
        for (name, cfg), path in zip(models.items(), inputs["models"])
    }
    failures: list[list[str]] = []
    table, fields = score_pairs(test, methods_of(nets, settings, seed, failures), sorted(labels))
    with atomic_path(outputs["per_pair"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    with atomic_path(outputs["fields"]) as tmp:
        with open(tmp, "wb") as handle:  # every method's test fields, for the cine's ejection fraction
            np.savez_compressed(handle, **fields)
    metrics = summarize(
        table, list(models), n_boot=int(settings.get("n_bootstrap", 1000)), level=float(settings.get("ci_level", 0.95)), seed=seed
    )
    failed = [f for f in failures[1:] if f]  # failures[0]: the warm-up, on the first pair again
    metrics["baseline_failures"] = {
        "pairs": len(failed),
        "affine": sum("affine" in f for f in failed),
        "bspline": sum("bspline" in f for f in failed),
    }
    metrics.update(
        task="registration",
        pairing=settings.get("pairing", "known"),
        labels={str(k): v for k, v in labels.items()},
        n_test_pairs=len(test),
        n_test_patients=int(len(set(test.patient))),
        threads={"torch": torch.get_num_threads(), "itk": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()},
    )
    write_json(outputs["metrics"], metrics)
    example = int(np.nanargmin(table[table["method"] == UNREGISTERED]["dice"].to_numpy()))  # the worst-aligned pair shows most
    figures.plot_checkerboards(test, fields, example, f"{title}: test pair {test.image_id[example]}", outputs["checkerboard"])
    known = {"true field": test.true_ddf} if np.isfinite(test.true_ddf).all() else {}
    figures.plot_jacobians({**known, **fields}, example, f"{title}: Jacobian determinant", outputs["jacobian"])
    figures.plot_metrics(metrics, f"{title}: {len(test)} test pairs", outputs["summary"])
    provenance.write_record(
        outputs["provenance"],
        rule="evaluate_registration",
        inputs=[inputs["pairs"], inputs["splits"], *inputs["models"]],
        outputs=[outputs[k] for k in ("per_pair", "metrics", "fields", "checkerboard", "jacobian", "summary")],
        params={"registration": settings, "models": models},
        seed=seed,
        started=started,
        code=code,
        wildcards=wildcards,
    )
    return metrics
