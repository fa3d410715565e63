"""The training subsets of a sweep, drawn at patient level.

``label_fraction``: a fraction of the training patients of each class keeps its labels
(a learning curve). ``prevalence``: the positive class thinned (or the negatives, above
the natural prevalence) until positives are that share of the training patients (a
rare-disease study). Within a seed, each class's patients are permuted once and every
level takes a prefix of that order, so a learning curve's subsets are nested (a larger
fraction adds patients to a smaller one's, never swaps them) and a prevalence sweep's
positives are (its negatives are all of them up to the natural prevalence, then a
shrinking prefix). Validation and test patients are never drawn."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from casebook import provenance
from casebook.fileio import read_json, write_json
from casebook.split import fold_split
from casebook.tasks.comparison.data import load_images

KINDS = ("label_fraction", "prevalence")


class SubsetError(ValueError):
    """A sweep level that cannot be drawn from the training patients."""


def patient_labels(patient: np.ndarray, label: np.ndarray) -> pd.Series:
    """One label per patient: the highest of its images' (a patient with any positive
    image is a positive patient)."""
    return pd.Series(label).groupby(np.asarray(patient)).max().sort_index()


def class_orders(labels: pd.Series, seed: int) -> dict[int, list[str]]:
    """Each class's patients in one seeded random order (sorted first: the order does not
    depend on the order the patients were listed in)."""
    rng = np.random.default_rng(seed)
    return {int(c): list(rng.permutation(sorted(group.index))) for c, group in labels.groupby(labels)}


def _first(order: list[str], count: float, class_name: str, what: str) -> list[str]:
    """The first ``count`` (rounded) patients of a class's order; an error naming the
    level and the class when that leaves the class empty."""
    n = int(round(count))
    if n < 1:
        raise SubsetError(
            f"comparison.sweep.levels: {what} leaves class {class_name!r} empty ({count:.2f} of its {len(order)} "
            f"training patients rounds to 0); raise the level or use more patients"
        )
    return order[: min(n, len(order))]


def label_fraction(orders: dict[int, list[str]], level: float, class_names: Sequence[str]) -> list[str]:
    """``level`` of each class's patients (stratified: the class balance is kept)."""
    if not 0 < level <= 1:
        raise SubsetError(f"label_fraction {level:g} is not in (0, 1]")
    return sorted(p for c, order in orders.items() for p in _first(order, level * len(order), class_names[c], f"label_fraction {level:g}"))


def prevalence(orders: dict[int, list[str]], level: float, class_names: Sequence[str]) -> list[str]:
    """Positives (class 1) as ``level`` of the patients: positives thinned while the
    level is below the natural prevalence, negatives thinned above it."""
    if len(orders) != 2 or not 0 < level < 1:
        raise SubsetError(f"prevalence {level:g}: a prevalence sweep needs two classes and a level in (0, 1)")
    negatives, positives = orders[0], orders[1]
    n_pos = min(len(positives), level / (1 - level) * len(negatives))
    n_neg = min(len(negatives), n_pos * (1 - level) / level)
    what = f"prevalence {level:g}"
    return sorted(_first(positives, n_pos, class_names[1], what) + _first(negatives, n_neg, class_names[0], what))


def draw_subsets(
    labels: pd.Series, kind: str, levels: Sequence[float], seeds: Sequence[int], class_names: Sequence[str]
) -> dict[str, dict[str, list[str]]]:
    """seed -> level -> training patients (each class a prefix of its seeded order)."""
    if kind not in KINDS:
        raise SubsetError(f"unknown sweep kind {kind!r}; known: {list(KINDS)}")
    missing = sorted(set(range(len(class_names))) - set(labels.astype(int)))
    if missing:
        raise SubsetError(f"the study fold's training split has no patient of class {[class_names[c] for c in missing]}")
    draw = label_fraction if kind == "label_fraction" else prevalence
    out = {}
    for seed in seeds:
        orders = class_orders(labels, int(seed))
        out[str(seed)] = {f"{level:g}": draw(orders, float(level), class_names) for level in sorted(levels)}
    return out


def subsets_stage(
    images_path: str,
    splits_path: str,
    settings: dict[str, Any],
    seed: int,
    class_names: Sequence[str],
    outputs: dict[str, str],
    wildcards=None,
) -> dict[str, Any]:
    """The comparison_subsets rule: one seed's subsets (level -> training patients of the
    study fold) in ``seed_<s>.json``, one file per seed so that adding a seed leaves the
    other seeds' fits alone, and its provenance record."""
    started, code = provenance.now(), provenance.code_state()
    images = load_images(images_path)
    fold = fold_split(read_json(splits_path), int(settings["fold"]), splits_path)
    train = images.of_ids(fold["train"])
    sweep = settings["sweep"]
    try:
        subsets = draw_subsets(patient_labels(train.patient, train.label), sweep["kind"], sweep["levels"], [seed], class_names)[str(seed)]
    except SubsetError as exc:
        raise SubsetError(f"{splits_path} (fold {settings['fold']}, seed {seed}): {exc}") from None
    doc = {"kind": sweep["kind"], "fold": int(settings["fold"]), "seed": seed, "subsets": subsets}
    write_json(outputs["subsets"], doc)
    provenance.write_record(
        outputs["provenance"],
        rule="comparison_subsets",
        inputs=[images_path, splits_path],
        outputs=[outputs["subsets"]],
        params=settings,
        seed=seed,
        started=started,
        code=code,
        wildcards=wildcards,
    )
    return doc
