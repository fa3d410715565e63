"""Patient-level, stratified, seeded splits, made once and saved (as nnU-Net's
``splits_final.json``), and the leakage check that guards every evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from casebook.fileio import atomic_path, read_json, write_json
from casebook.layout import read_manifest

SETS = ("train", "val", "test")


class LeakageError(RuntimeError):
    """A patient appears in more than one of train, validation and test."""


def _stratified_group_folds(frame: pd.DataFrame, k: int, seed: int) -> list[np.ndarray]:
    """Row positions of each of k patient-disjoint, label-stratified folds."""
    # here, not at the top: scikit-learn takes a second or more to import, and the
    # check_leakage rule (this module's other stage) does not split
    from sklearn.model_selection import StratifiedGroupKFold

    n_patients = frame["patient_id"].nunique()
    if n_patients < k:
        raise ValueError(f"cannot make {k} patient-level folds from {n_patients} patients")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    # segmentation-only data sets have no image label: stratify on nothing (group k-fold)
    labels = frame["label"].fillna(0).astype(int)
    return [held for _, held in splitter.split(frame, labels, groups=frame["patient_id"])]


def _ids(frame: pd.DataFrame, positions: np.ndarray | None = None) -> list[str]:
    rows = frame if positions is None else frame.iloc[positions]
    return sorted(rows["image_id"].tolist())


def make_splits(
    manifest: pd.DataFrame,
    *,
    k: int = 5,
    test_fraction: float = 0.2,
    seed: int = 0,
    use_source_split: bool = True,
    source_folds: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Split a manifest into a held-out test set and k cross-validation folds.

    * With ``source_folds`` (``{"test": [...], "folds": [...]}``, values of the
      manifest's ``source_split``), the source's own folds are the split
      (:func:`source_fold_splits`: LUNA16's subsets).
    * If the source defines its own test split (``source_split == "test"``) and
      ``use_source_split`` is set, that is the test set; if it also defines a
      validation split, that gives the single fold the source defines (k is then 1),
      which is how published MedMNIST figures are measured.
    * Otherwise the test set is one patient-level stratified fold of size about
      ``test_fraction``, and the rest is cut into ``k`` patient-level stratified folds.
    """
    if source_folds:
        return source_fold_splits(manifest, test=source_folds["test"], folds=source_folds["folds"], seed=seed)
    sources = set(manifest["source_split"].astype(str)) - {""}
    if use_source_split and "test" in sources:
        test = manifest[manifest["source_split"] == "test"]
        pool = manifest[manifest["source_split"] != "test"]
        method = "source test split"
    else:
        n_test_folds = max(2, round(1 / test_fraction))
        test_pos = _stratified_group_folds(manifest, n_test_folds, seed)[0]
        test = manifest.iloc[test_pos]
        pool = manifest.drop(index=manifest.index[test_pos])
        method = f"patient-level stratified test fold (1/{n_test_folds})"

    if use_source_split and {"train", "val"} <= sources:
        folds = [{"train": _ids(pool[pool["source_split"] == "train"]), "val": _ids(pool[pool["source_split"] == "val"])}]
        method += ", source train/val split"
    else:
        held = _stratified_group_folds(pool, k, seed)
        folds = []
        for i in range(k):
            val_pos = held[i]
            train_pos = np.setdiff1d(np.arange(len(pool)), val_pos)
            folds.append({"train": _ids(pool, train_pos), "val": _ids(pool, val_pos)})
        method += f", {k} patient-level stratified folds"
    return {"method": method, "seed": seed, "test": _ids(test), "folds": folds}


def source_fold_splits(manifest: pd.DataFrame, *, test: list[str], folds: list[str], seed: int = 0) -> dict[str, Any]:
    """The source's own folds as the split (LUNA16's ten subsets, its ten-fold protocol):
    the images of the ``test`` folds are the test set, and fold i validates on the images
    of ``folds[i]`` and trains on those of the other listed folds. Every image must be in
    a listed fold (an unlisted one would silently leave the study), and every listed fold
    must have images; a patient whose images lie in two folds is refused by
    :func:`check_leakage`."""
    test, folds = [str(t) for t in test], [str(f) for f in folds]
    repeated = sorted({name for name in test + folds if (test + folds).count(name) > 1})
    if repeated:
        raise ValueError(f"split.source_folds: {repeated} listed twice (a source fold is either a test fold or one cross-validation fold)")
    if len(folds) < 2:
        raise ValueError(f"split.source_folds.folds: cross-validation needs at least two source folds, got {folds}")
    source = manifest["source_split"].fillna("").astype(str)
    unlisted = manifest[~source.isin(test + folds)]
    if len(unlisted):
        names = sorted(set(source[unlisted.index]))
        raise ValueError(
            f"{len(unlisted)} image(s) lie in source folds that split.source_folds does not list: {names} "
            f"(e.g. image {unlisted['image_id'].iloc[0]}); list them under 'test' or 'folds'"
        )
    empty = [name for name in test + folds if not (source == name).any()]
    if empty:
        raise ValueError(f"split.source_folds lists {empty}, which hold no image of the data set (its source folds: {sorted(set(source))})")
    members = {name: _ids(manifest[source == name]) for name in folds}
    return {
        "method": f"source folds: test {test}, {len(folds)} cross-validation folds {folds}",
        "seed": seed,
        "test": _ids(manifest[source.isin(test)]),
        "folds": [{"train": sorted(i for other in folds if other != name for i in members[other]), "val": members[name]} for name in folds],
    }


def split_table(splits: dict[str, Any], manifest: pd.DataFrame) -> pd.DataFrame:
    """Images, patients and per-class counts of every set of every fold (for the report)."""
    labels = manifest.set_index("image_id")
    rows = []
    for fold, sets in enumerate(splits["folds"]):
        for name in ("train", "val"):
            rows.append(_set_row(f"fold_{fold}", name, labels.loc[sets[name]]))
    rows.append(_set_row("all", "test", labels.loc[splits["test"]]))
    return pd.DataFrame(rows)


def _set_row(fold: str, name: str, part: pd.DataFrame) -> dict[str, Any]:
    row = {"fold": fold, "set": name, "n_images": len(part), "n_patients": part["patient_id"].nunique()}
    for label, count in part["label"].value_counts().sort_index().items():
        row[f"n_label_{label}"] = int(count)
    return row


def check_leakage(splits: dict[str, Any], manifest: pd.DataFrame) -> dict[str, Any]:
    """Raise LeakageError if any patient appears in two of train, val and test of a fold.

    Also refuses image ids that are unknown to the manifest or used twice. Returns a
    summary of what was checked, written to the leakage report.
    """
    patient_of = manifest.set_index("image_id")["patient_id"]
    problems = []
    for fold, sets in enumerate(splits["folds"]):
        members = {"train": sets["train"], "val": sets["val"], "test": splits["test"]}
        unknown = sorted(set().union(*members.values()) - set(patient_of.index))
        if unknown:
            problems.append(f"fold {fold}: image ids not in the manifest: {unknown[:5]}")
            continue
        patients = {name: set(patient_of.loc[ids]) for name, ids in members.items()}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = sorted(patients[a] & patients[b])
            if shared:
                problems.append(f"fold {fold}: {len(shared)} patient(s) in both {a} and {b}, e.g. {shared[:5]}")
        images = [i for ids in members.values() for i in ids]
        if len(images) != len(set(images)):
            problems.append(f"fold {fold}: an image is in two sets")
    if problems:
        raise LeakageError("patient leakage between splits:\n  " + "\n  ".join(problems))
    return {
        "status": "ok",
        "n_folds": len(splits["folds"]),
        "n_test_images": len(splits["test"]),
        "n_patients": int(manifest["patient_id"].nunique()),
    }


def split_stage(dataset_dir, cfg: dict[str, Any], *, splits_out, table_out) -> dict[str, Any]:
    """The split rule: read the manifest, split, write splits.json and the count table."""
    manifest = read_manifest(Path(dataset_dir) / "manifest.tsv")
    splits = make_splits(
        manifest,
        k=cfg.get("k", 5),
        test_fraction=cfg.get("test_fraction", 0.2),
        seed=cfg["seed"],
        use_source_split=cfg.get("use_source_split", True),
        source_folds=cfg.get("source_folds"),
    )
    check_leakage(splits, manifest)
    write_json(splits_out, splits)
    with atomic_path(table_out) as tmp:
        split_table(splits, manifest).fillna(0).to_csv(tmp, sep="\t", index=False)
    return splits


def leakage_stage(dataset_dir, splits_path, report_out) -> dict[str, Any]:
    """The check_leakage rule: re-read what is on disk and refuse any leak."""
    manifest = read_manifest(Path(dataset_dir) / "manifest.tsv", check_files=False)
    summary = check_leakage(read_json(splits_path), manifest)
    write_json(report_out, summary)
    return summary


def fold_split(splits: dict[str, Any], fold: int, where: str | Path = "splits.json") -> dict[str, list[str]]:
    """The train/val ids of one fold, or an error saying which folds exist."""
    folds = splits["folds"]
    if not 0 <= fold < len(folds):
        raise ValueError(
            f"{where}: there is no fold {fold}; this split has {len(folds)} fold(s) (0-{len(folds) - 1}), "
            "e.g. one when the source defines its own validation split (MedMNIST), where 'folds: all' still asks "
            "for split.k folds: set 'folds: [0]' in the case study"
        )
    return folds[fold]
