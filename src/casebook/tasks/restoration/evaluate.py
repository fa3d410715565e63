"""The evaluate_restoration rule: every method on the test slices at every level of the
degradation (each dose, slice-thickness factor, source channel or hole size).

Methods: the degraded input itself (the low-dose image; the B-spline interpolation of
the thick slices; the histogram-matched source; the biharmonic inpainting of a hole),
each classical baseline (its parameter tuned on the validation slices of the fold, per
level), and each trained model. Per test slice: PSNR and SSIM on the case study's
window (inside the hole only, the known pixels pasted back, for a missing region). Per
level and method: the means with percentile bootstrap CIs over patients, and each
model's paired difference against the input and against the best baseline (the one with
the highest validation PSNR at that level; paired bootstrap over patients)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from casebook import provenance
from casebook.analysis.stats import mean_ci, paired_difference
from casebook.engine.runtime import select_device
from casebook.fileio import atomic_path, read_json, write_json
from casebook.split import fold_split
from casebook.tasks.restoration import figures
from casebook.tasks.restoration.baselines import BASELINES, tune
from casebook.tasks.restoration.data import region_masks
from casebook.tasks.restoration.degradations import INPUT_LABELS, degradation
from casebook.tasks.restoration.metrics import SOFT_TISSUE, image_quality, region_quality
from casebook.tasks.restoration.simulate import load_pairs
from casebook.tasks.restoration.train import load_denoiser, restore

METRICS = ("psnr", "ssim", "ms_ssim")


def restored_by_method(
    models: dict[str, Any], baselines: dict[str, dict], noisy: np.ndarray, window, input_label: str
) -> dict[str, np.ndarray]:
    """Every method's output for a stack of degraded slices (``input_label``: the input's)."""
    out = {input_label: noisy}
    for name, params in baselines.items():
        out[name] = np.stack([BASELINES[name](x, **params) for x in noisy])
    for name, model in models.items():
        out[name] = restore(model, noisy, window)
    return out


def restored_key(method: str, level: float) -> str:
    """How ``restored.npz`` names one method's test outputs at one level."""
    return f"{method}@{level:g}"


def paste_outside(restored: np.ndarray, known: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """``restored`` inside each image's region (row, column, height, width) and ``known``
    outside it: an inpainting method is asked for the missing pixels only."""
    return np.where(region_masks(regions, np.shape(known)[1:]), restored, known)


def summarize(
    table: pd.DataFrame,
    models: list[str],
    best_baselines: dict[float, str | None],
    input_label: str,
    *,
    n_boot: int,
    level: float,
    seed: int,
) -> dict[str, Any]:
    """Per level: each method's mean metrics with CIs; each model against the input and
    against that level's best baseline (chosen on the validation slices), paired over
    patients."""
    levels = {}
    for at, rows in table.groupby("level", sort=True):
        wide = {m: rows[rows["method"] == m].sort_values("slice") for m in rows["method"].unique()}
        patients = wide[input_label]["patient_id"].to_numpy()
        present = [k for k in METRICS if k in rows.columns]  # MS-SSIM needs images large enough
        methods = {m: {k: mean_ci(w[k].to_numpy(), patients, n_boot, level, seed) for k in present} for m, w in wide.items()}
        best_baseline = best_baselines.get(at)
        comparisons = {}
        for model in models:
            against = [input_label] + ([best_baseline] if best_baseline else [])
            comparisons[model] = {
                other: {
                    k: paired_difference(
                        wide[model][k].to_numpy(), wide[other][k].to_numpy(), patients, n_boot=n_boot, level=level, seed=seed
                    )
                    for k in present
                }
                for other in against
            }
        levels[f"{at:g}"] = {"methods": methods, "best_baseline": best_baseline, "comparisons": comparisons}
    return {"levels": levels, "ci_level": level, "n_bootstrap": n_boot, "ci_method": "percentile bootstrap over patients"}


def evaluate_stage(
    models: dict[str, dict[str, Any]],
    settings: dict[str, Any],
    *,
    inputs: dict[str, Any],
    outputs: dict[str, str],
    fold: int,
    title: str,
    seed: int,
    wildcards=None,
) -> dict[str, Any]:
    """``models`` maps a model name to its config and ``inputs['models']`` lists their
    ``model.pt`` in the same order."""
    started, code = provenance.now(), provenance.code_state()
    splits = read_json(inputs["splits"])
    window = settings.get("window", SOFT_TISSUE)
    kind = degradation(settings)
    test, val = load_pairs(inputs["pairs"], splits["test"]), load_pairs(inputs["pairs"], fold_split(splits, fold, inputs["splits"])["val"])
    clash = sorted(set(models) & {*INPUT_LABELS, *BASELINES})
    if clash:
        raise ValueError(f"model name(s) {clash} are taken by the degraded input or a classical baseline: rename the model(s)")
    nets = {
        name: load_denoiser(path, cfg["network"], select_device(cfg.get("device", "auto")))
        for (name, cfg), path in zip(models.items(), inputs["models"])
    }
    score = lambda restored, reference: image_quality(restored, reference, window, ms_ssim=False)["psnr"]  # noqa: E731
    rows, examples, example_regions, tuned, best, restored_all = [], {}, {}, {}, {}, {}
    for level in sorted(set(test.level.tolist())):
        at, at_val = test.at_level(level), val.at_level(level)
        fits = {b: tune(b, at_val.noisy, at_val.reference, score) for b in settings.get("baselines", list(BASELINES))}
        params = {b: fit[0] for b, fit in fits.items()}
        tuned[f"{level:g}"] = {b: {**fit[0], "validation_psnr": fit[1]} for b, fit in fits.items()}
        best[level] = max(fits, key=lambda b: fits[b][1]) if fits else None
        outputs_by_method = restored_by_method(nets, params, at.noisy, window, kind.input_label)
        if at.region is not None:  # a missing region: the known pixels are kept, the region is scored
            outputs_by_method = {m: paste_outside(r, at.reference, at.region) for m, r in outputs_by_method.items()}
        for method, restored in outputs_by_method.items():
            quality = (
                image_quality(restored, at.reference, window)
                if at.region is None
                else region_quality(restored, at.reference, at.region, window)
            )
            rows += [
                {
                    "slice": i,
                    "image_id": at.image_id[i],
                    "patient_id": p,
                    "level": level,
                    "method": method,
                    **{k: quality[k][i] for k in METRICS if k in quality},
                }  # fmt: skip
                for i, p in enumerate(at.patient)
            ]
        examples[level] = {"reference": at.reference[0], **{m: r[0] for m, r in outputs_by_method.items()}}
        restored_all.update({restored_key(m, level): r.astype(np.float32) for m, r in outputs_by_method.items()})
        example_regions[level] = None if at.region is None else tuple(int(v) for v in at.region[0])
    table = pd.DataFrame(rows)
    with atomic_path(outputs["restored"]) as tmp:
        with open(tmp, "wb") as handle:  # for the downstream segmentation
            np.savez_compressed(handle, **restored_all)
    with atomic_path(outputs["per_image"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    metrics = summarize(
        table, list(models), best, kind.input_label,
        n_boot=int(settings.get("n_bootstrap", 1000)), level=float(settings.get("ci_level", 0.95)), seed=seed,
    )  # fmt: skip
    metrics.update(
        task="restoration",
        degradation=kind.name,
        level_name=kind.level_name,
        input_method=kind.input_label,
        window=list(window),
        units=kind.units,
        fold=fold,
        baseline_params=tuned,
        n_test_slices=int(len(test) / max(1, len(set(test.level.tolist())))),
    )
    write_json(outputs["metrics"], metrics)
    hardest = kind.hardest(list(examples))
    figures.plot_panels(
        examples[hardest], window, kind, f"{title}: {kind.describe(hardest)}", outputs["panels"], region=example_regions[hardest]
    )
    figures.plot_metric_vs_level(metrics, kind, f"{title}: test slices", outputs["curves"])
    provenance.write_record(
        outputs["provenance"],
        rule="evaluate_restoration",
        inputs=[inputs["pairs"], inputs["splits"], *inputs["models"]],
        outputs=[outputs["per_image"], outputs["metrics"], outputs["restored"], outputs["panels"], outputs["curves"]],
        params={"restoration": settings, "models": models, "fold": fold},
        seed=seed,
        started=started,
        code=code,
        wildcards=wildcards,
    )
    return metrics
