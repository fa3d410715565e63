"""The utility of synthetic data (issue 15, 6.6a): the judge's architecture trained on
a patient-level fraction of the real training images alone, on the samples alone (train
on synthetic, test on real), and on both; every arm validated and tested on real images
only, with the AUC's bootstrap CI over test patients and the paired bootstrap of
real + synthetic against real only at each fraction.

The leakage guard: the generative model must have been trained on this fold's training
images only (its model card lists them), never on a validation or test image."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from casebook import provenance
from casebook.analysis.stats import bootstrap_ci, paired_bootstrap_test
from casebook.fileio import atomic_path, read_json, write_json
from casebook.split import fold_split
from casebook.tasks.generation.data import ImageSet, load_images
from casebook.tasks.generation.judge import fit_classifier, predict_proba, score_auc
from casebook.tasks.generation.sampling import load_samples


class LeakageError(ValueError):
    """Samples of a model that saw validation or test images."""


def check_generator_data(card: dict[str, Any], card_path: str, train_ids: Sequence[str], held_out_ids: Sequence[str]) -> None:
    """Refuse a generative model whose training images include a held-out image, or
    that was trained on other images than this fold's training split."""
    trained = set(card["data"]["train_image_ids"])
    leaked = sorted(trained & set(held_out_ids))
    if leaked:
        raise LeakageError(
            f"{card_path}: the generative model was trained on {len(leaked)} validation or test image(s) "
            f"(e.g. {leaked[:3]}); its samples cannot be used to train a model evaluated on them"
        )
    foreign = sorted(trained - set(train_ids))
    if foreign:
        raise LeakageError(
            f"{card_path}: the generative model was trained on {len(foreign)} image(s) outside this fold's training split (e.g. {foreign[:3]})"
        )


def patient_fraction(images: ImageSet, fraction: float, seed: int) -> ImageSet:
    """The images of ``fraction`` of the patients of each class (at least one each),
    drawn with ``seed``: a smaller hospital, not fewer images of every patient."""
    if fraction >= 1:
        return images
    rng = np.random.default_rng(seed)
    keep = []
    table = pd.DataFrame({"patient": images.patient, "label": images.labels}).drop_duplicates("patient")
    for _, group in table.groupby("label"):
        n = max(1, int(round(fraction * len(group))))
        keep += list(rng.choice(group["patient"].to_numpy(), size=n, replace=False))
    return images.subset(np.isin(images.patient, keep))


def _auc_ci(labels: np.ndarray, probs: np.ndarray, patients: np.ndarray, n_boot: int, level: float, seed: int) -> tuple[float, float]:
    ci = bootstrap_ci(labels, probs, patients, lambda y, p: {"auc": score_auc(y, p)}, n_boot=n_boot, level=level, seed=seed)
    return ci["auc"]


def run_arms(
    train: ImageSet,
    val: ImageSet,
    test: ImageSet,
    synthetic: np.ndarray,
    synthetic_labels: np.ndarray,
    n_classes: int,
    settings: dict[str, Any],
    seed: int,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Every arm's test AUC (rows) and the paired comparisons (real + synthetic minus
    real only, per fraction and repeat)."""
    judge_cfg = settings.get("judge") or {}
    n_boot, level = int(settings["n_bootstrap"]), float(settings["ci_level"])
    rows, comparisons = [], []

    def arm(name: str, fraction: float, repeat: int, images: np.ndarray, labels: np.ndarray, n_real: int) -> np.ndarray:
        fitted = fit_classifier(images, labels, val.images, val.labels, n_classes, judge_cfg, seed + repeat)
        probs = predict_proba(fitted.model, test.images)
        low, high = _auc_ci(test.labels, probs, test.patient, n_boot, level, seed)
        rows.append(
            {
                "arm": name,
                "fraction": fraction,
                "repeat": repeat,
                "n_real": n_real,
                "n_synthetic": len(images) - n_real,
                "val_auc": fitted.best_val_auc,
                "test_auc": score_auc(test.labels, probs),
                "ci_low": low,
                "ci_high": high,
            }
        )
        return probs

    for repeat in range(int(settings["repeats"])):
        arm("synthetic only", 0.0, repeat, synthetic, synthetic_labels, 0)
        for fraction in settings["fractions"]:
            real = patient_fraction(train, float(fraction), seed + repeat)
            real_only = arm("real only", float(fraction), repeat, real.images, real.labels, len(real))
            both = arm(
                "real + synthetic",
                float(fraction),
                repeat,
                np.concatenate([real.images, synthetic]),
                np.concatenate([real.labels, synthetic_labels]),
                len(real),
            )
            test_result = paired_bootstrap_test(
                test.labels, both, real_only, test.patient, statistic=score_auc, n_boot=n_boot, seed=seed, level=level
            )
            comparisons.append(
                {"fraction": float(fraction), "repeat": repeat, "n_real_patients": int(np.unique(real.patient).size), **test_result}
            )
    return pd.DataFrame(rows), comparisons


def utility_stage(
    samples: str,
    card: str,
    images: str,
    splits: str,
    fold: int,
    n_classes: int,
    settings: dict[str, Any],
    *,
    seed: int,
    outputs: dict[str, str],
    wildcards=None,
) -> dict[str, Any]:
    started, code = provenance.now(), provenance.code_state()
    split = read_json(splits)
    part = fold_split(split, fold, splits)
    check_generator_data(read_json(card), card, part["train"], [*part["val"], *split["test"]])
    train, val, test = (load_images(images, ids) for ids in (part["train"], part["val"], split["test"]))
    by_sampler, labels = load_samples(samples)
    key = settings.get("sampler") or next(iter(by_sampler))
    if key not in by_sampler:
        raise ValueError(f"{samples}: no samples of sampler {key!r} (generation.utility.sampler); it has {sorted(by_sampler)}")
    table, comparisons = run_arms(train, val, test, by_sampler[key], labels, n_classes, settings, seed)
    with atomic_path(outputs["table"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    result = {
        "sampler": key,
        "metric": "test ROC AUC",
        "arms": table.to_dict(orient="records"),
        "real_plus_synthetic_minus_real": comparisons,
    }
    write_json(outputs["metrics"], result)
    from casebook.tasks.generation.figures import plot_utility

    plot_utility(table, comparisons, outputs["figure"], title=settings.get("title", ""))
    provenance.write_record(
        outputs["provenance"],
        rule="utility_generation",
        inputs=[samples, card, images, splits],
        outputs=[outputs["table"], outputs["metrics"], outputs["figure"]],
        params={**settings, "fold": fold},
        seed=seed,
        started=started,
        code=code,
        wildcards=wildcards,
    )
    return result
