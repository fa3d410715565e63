"""The evaluate_generation rule: every model's samples, each sampler, measured against
the held-out real test images in the judge's feature space (Fréchet distance with a
bootstrap CI, precision, recall), checked by the judge (does a sample of class c look
like class c?) and for memorization (a planted copy of a training image, the canary,
must be flagged), beside the real-against-real floor that a perfect generator scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from casebook import provenance
from casebook.analysis.stats import group_members, resample_groups
from casebook.fileio import atomic_path, read_json, write_json
from casebook.split import fold_split
from casebook.tasks.generation.data import ImageSet, load_images
from casebook.tasks.generation.judge import embed, load_judge, predict_proba, score_auc
from casebook.tasks.generation.metrics import FD_LABEL, frechet_distance, memorization, memorization_threshold, precision_recall
from casebook.tasks.generation.sampling import load_samples


def fd_with_ci(real: np.ndarray, real_patients: np.ndarray, fake: np.ndarray, *, n_boot: int, level: float, seed: int) -> dict[str, float]:
    """Fréchet distance, and its bias-corrected percentile interval over resampled real
    patients and resampled samples (each sample its own unit). Resampling with
    replacement repeats points, which shrinks the sets' spread and inflates the distance
    (it is biased in the sample size, Chong and Forsyth 2020): the interval is shifted by
    the bootstrap's estimate of that bias (mean of the resamples minus the estimate)."""
    rng = np.random.default_rng(seed)
    members = group_members(real_patients)
    values = []
    for _ in range(n_boot):
        idx = resample_groups(members, rng)
        values.append(frechet_distance(real[idx], fake[rng.integers(0, len(fake), len(fake))]))
    estimate = frechet_distance(real, fake)
    bias = float(np.mean(values)) - estimate
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha]) - bias
    return {"fd": estimate, "ci_low": max(float(low), 0.0), "ci_high": float(high)}


def judge_scores(judge, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The judge's accuracy and AUC on images whose class is ``labels``."""
    probs = predict_proba(judge, images)
    return {"judge_accuracy": float(np.mean(probs.argmax(1) == labels)), "judge_auc": score_auc(labels, probs)}


def evaluate_samples(
    name: str,
    key: str,
    samples: np.ndarray,
    labels: np.ndarray,
    judge,
    test: ImageSet,
    test_features: np.ndarray,
    train: ImageSet,
    threshold: dict[str, float],
    settings: dict[str, Any],
    seed: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One sampler's row of the table, and its memorization result (``threshold``: the
    study's, :func:`memorization_threshold`)."""
    features = embed(judge, samples)
    fd = fd_with_ci(
        test_features, test.patient, features, n_boot=int(settings["n_bootstrap_fd"]), level=float(settings["ci_level"]), seed=seed
    )
    memo = memorization(samples, train.images, threshold)
    row = {
        "model": name,
        "sampler": key,
        "n_samples": len(samples),
        "fd": fd["fd"],
        "fd_ci_low": fd["ci_low"],
        "fd_ci_high": fd["ci_high"],
        **{k: v for k, v in precision_recall(test_features, features, int(settings["k"])).items() if k != "k"},
        **judge_scores(judge, samples, labels),
        "memorized": memo["n_flagged"],
        "nearest_train_median": float(np.median(memo["distance"])),
    }
    return row, memo


def evaluate_stage(
    samples: dict[str, str],
    timings: dict[str, str],
    judge_path: str,
    images: str,
    splits: str,
    fold: int,
    settings: dict[str, Any],
    *,
    seed: int,
    outputs: dict[str, str],
    wildcards=None,
) -> dict[str, Any]:
    """``samples``/``timings``: model name to its sample rule's files."""
    started, code = provenance.now(), provenance.code_state()
    split = read_json(splits)
    part = fold_split(split, fold, splits)
    train, test = load_images(images, part["train"]), load_images(images, split["test"])
    judge = load_judge(judge_path)
    test_features = embed(judge, test.images)
    # the floor: real training images against the same test images
    floor = fd_with_ci(
        test_features,
        test.patient,
        embed(judge, train.images),
        n_boot=int(settings["n_bootstrap_fd"]),
        level=float(settings["ci_level"]),
        seed=seed,
    )
    threshold = memorization_threshold(train.images, test.images, float(settings["memorization_quantile"]))
    rows, memo_rows, shown = [], [], {}
    for name, path in samples.items():
        by_sampler, labels = load_samples(path)
        timing = pd.read_csv(timings[name], sep="\t").set_index("key")
        for key, images_ in by_sampler.items():
            row, memo = evaluate_samples(name, key, images_, labels, judge, test, test_features, train, threshold, settings, seed)
            row.update(seconds=float(timing.loc[key, "seconds"]), images_per_second=float(timing.loc[key, "images_per_second"]))
            rows.append(row)
            memo_rows += [
                {
                    "model": name,
                    "sampler": key,
                    "sample": i,
                    "label": int(labels[i]),
                    "nearest_train_image": train.image_id[j],
                    "distance": d,
                    "flagged": bool(f),
                }
                for i, (j, d, f) in enumerate(zip(memo["nearest_index"], memo["distance"], memo["flagged"]))
            ]
            shown[(name, key)] = (images_, labels, memo)
    canary = canary_check(train, test, float(settings["memorization_quantile"]))
    table = pd.DataFrame(rows)
    real = {**judge_scores(judge, test.images, test.labels), "fd_floor": floor["fd"], "fd_floor_ci": [floor["ci_low"], floor["ci_high"]]}
    metrics = {
        "fd_label": FD_LABEL,
        "fd_reference": "the test images (held-out patients); floor: the training images against them",
        "real_test": real,
        "samplers": table.to_dict(orient="records"),
        "memorization": {
            "threshold": threshold["threshold"],
            "quantile": float(settings["memorization_quantile"]),
            "canary": canary,
        },
        "n_train": len(train),
        "n_test": len(test),
    }
    with atomic_path(outputs["table"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    with atomic_path(outputs["memorization"]) as tmp:
        pd.DataFrame(memo_rows).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    write_json(outputs["metrics"], metrics)
    from casebook.tasks.generation.figures import plot_nearest_neighbours, plot_sample_grid, plot_sampler_steps

    title = settings.get("title", "")
    plot_sample_grid(test, shown, settings.get("class_names"), outputs["grid"], title=title)
    plot_nearest_neighbours(train, shown, outputs["neighbours"], title=title)
    plot_sampler_steps(table, floor["fd"], outputs["steps"], title=title)
    provenance.write_record(
        outputs["provenance"],
        rule="evaluate_generation",
        inputs=[judge_path, images, splits, *samples.values(), *timings.values()],
        outputs=[outputs[k] for k in ("table", "memorization", "metrics", "grid", "neighbours", "steps")],
        params={**settings, "fold": fold},
        seed=seed,
        started=started,
        code=code,
        wildcards=wildcards,
    )
    return metrics


def canary_check(train: ImageSet, test: ImageSet, quantile: float) -> dict[str, Any]:
    """The check on itself: a copy of a training image planted among samples must be
    flagged, and a held-out real image (another patient) should not be."""
    planted = np.stack([train.images[0], test.images[0]])
    result = memorization(planted, train.images, memorization_threshold(train.images, test.images[1:], quantile))
    return {
        "planted_copy_of": str(train.image_id[0]),
        "planted_flagged": bool(result["flagged"][0]),
        "held_out_image": str(test.image_id[0]),
        "held_out_flagged": bool(result["flagged"][1]),
    }
