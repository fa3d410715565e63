"""Tests for casebook.split: patient-level stratified splits and the leakage check."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from casebook.split import LeakageError, check_leakage, make_splits, split_table


def _patients(manifest: pd.DataFrame, ids) -> set[str]:
    return set(manifest.set_index("image_id").loc[list(ids), "patient_id"])


def _prevalence(manifest: pd.DataFrame, ids) -> float:
    return float(manifest.set_index("image_id").loc[list(ids), "label"].mean())


@pytest.fixture
def manifest(make_manifest) -> pd.DataFrame:
    m = make_manifest(n_patients=60, positive_every=3)
    assert m["patient_id"].value_counts().max() > 1  # several images per patient
    return m


def test_splits_are_patient_disjoint_and_cover_everything(manifest: pd.DataFrame) -> None:
    splits = make_splits(manifest, k=3, test_fraction=0.2, seed=0)
    all_ids = set(manifest["image_id"])
    test = set(splits["test"])
    assert len(splits["folds"]) == 3
    assert 0.1 < len(test) / len(all_ids) < 0.3
    vals = []
    for fold in splits["folds"]:
        train, val = set(fold["train"]), set(fold["val"])
        assert train | val | test == all_ids
        assert not (train & val) and not (train & test) and not (val & test)
        p_train, p_val, p_test = (_patients(manifest, s) for s in (train, val, test))
        assert not (p_train & p_val), "a patient in train and val"
        assert not (p_train & p_test), "a patient in train and test"
        assert not (p_val & p_test), "a patient in val and test"
        vals.append(val)
        assert fold["train"] == sorted(fold["train"]) and fold["val"] == sorted(fold["val"])
    # the validation sets partition the non-test pool
    assert set().union(*vals) == all_ids - test
    assert sum(len(v) for v in vals) == len(all_ids - test)
    assert check_leakage(splits, manifest)["status"] == "ok"


def test_stratification_roughly_holds(manifest: pd.DataFrame) -> None:
    overall = manifest["label"].mean()
    splits = make_splits(manifest, k=3, seed=0)
    assert abs(_prevalence(manifest, splits["test"]) - overall) < 0.12
    for fold in splits["folds"]:
        assert abs(_prevalence(manifest, fold["val"]) - overall) < 0.12
        assert abs(_prevalence(manifest, fold["train"]) - overall) < 0.12


def test_same_seed_same_splits_other_seed_other_splits(manifest: pd.DataFrame) -> None:
    a = make_splits(manifest, k=3, seed=7)
    b = make_splits(manifest.copy(), k=3, seed=7)
    c = make_splits(manifest, k=3, seed=8)
    assert a == b
    assert a["seed"] == 7 and c["seed"] == 8
    assert (a["test"], a["folds"]) != (c["test"], c["folds"])


def test_medmnist_style_source_split_is_honoured(make_manifest) -> None:
    names = {0: "train", 1: "val", 2: "test"}
    # one image per patient as MedMNIST, the split from the source
    m = make_manifest(n_patients=30, max_images=1, source_split=lambda p: names[p % 3] if p >= 3 else "train")
    splits = make_splits(m, k=5, seed=0)
    by = m.groupby("source_split")["image_id"].apply(sorted).to_dict()
    assert splits["test"] == by["test"]
    assert len(splits["folds"]) == 1  # k is ignored: the source defines one fold
    assert splits["folds"][0] == {"train": by["train"], "val": by["val"]}
    assert "source" in splits["method"]


def test_source_split_can_be_ignored(make_manifest) -> None:
    names = {0: "train", 1: "val", 2: "test"}
    m = make_manifest(n_patients=30, source_split=lambda p: names[p % 3])
    splits = make_splits(m, k=3, seed=0, use_source_split=False)
    assert len(splits["folds"]) == 3
    assert splits["test"] != sorted(m.loc[m["source_split"] == "test", "image_id"])
    check_leakage(splits, m)


def test_source_test_without_source_val_gives_k_folds_of_the_rest(make_manifest) -> None:
    m = make_manifest(n_patients=40, source_split=lambda p: "test" if p % 5 == 0 else "train")
    splits = make_splits(m, k=4, seed=0)
    assert splits["test"] == sorted(m.loc[m["source_split"] == "test", "image_id"])
    assert len(splits["folds"]) == 4
    for fold in splits["folds"]:
        assert not set(fold["val"]) & set(splits["test"])
    check_leakage(splits, m)


def test_too_few_patients_for_k_folds(make_manifest) -> None:
    m = make_manifest(n_patients=4, positive_every=2)
    with pytest.raises(ValueError, match="patients"):
        make_splits(m, k=5, test_fraction=0.5, seed=0)


def test_check_leakage_names_the_leaking_patient(manifest: pd.DataFrame) -> None:
    splits = make_splits(manifest, k=3, seed=0)
    fold = splits["folds"][0]
    # a patient with at least two images in train: move one of them into test
    pid = manifest.set_index("image_id").loc[fold["train"], "patient_id"].value_counts().index[0]
    moved = sorted(set(manifest.loc[manifest["patient_id"] == pid, "image_id"]) & set(fold["train"]))[0]
    leaky = copy.deepcopy(splits)
    for f in leaky["folds"]:
        for name in ("train", "val"):
            if moved in f[name]:
                f[name].remove(moved)
    leaky["test"].append(moved)
    with pytest.raises(LeakageError, match=pid):
        check_leakage(leaky, manifest)


def test_check_leakage_refuses_unknown_and_repeated_images(manifest: pd.DataFrame) -> None:
    splits = make_splits(manifest, k=3, seed=0)
    unknown = copy.deepcopy(splits)
    unknown["folds"][1]["val"].append("nobody_0")
    with pytest.raises(LeakageError, match="nobody_0"):
        check_leakage(unknown, manifest)
    repeated = copy.deepcopy(splits)
    repeated["folds"][0]["train"].append(repeated["folds"][0]["train"][0])
    with pytest.raises(LeakageError, match="two sets"):
        check_leakage(repeated, manifest)


def test_check_leakage_summary(manifest: pd.DataFrame) -> None:
    splits = make_splits(manifest, k=3, seed=0)
    summary = check_leakage(splits, manifest)
    assert summary == {
        "status": "ok",
        "n_folds": 3,
        "n_test_images": len(splits["test"]),
        "n_patients": manifest["patient_id"].nunique(),
    }


def test_split_table_counts(manifest: pd.DataFrame) -> None:
    splits = make_splits(manifest, k=3, seed=0)
    table = split_table(splits, manifest).fillna(0)
    assert len(table) == 2 * 3 + 1
    assert table[["fold", "set"]].iloc[-1].tolist() == ["all", "test"]
    label_of = manifest.set_index("image_id")["label"]
    for row in table.itertuples(index=False):
        ids = splits["test"] if row.set == "test" else splits["folds"][int(row.fold.split("_")[1])][row.set]
        assert row.n_images == len(ids)
        assert row.n_patients == len(_patients(manifest, ids))
        assert row.n_label_0 == int((label_of.loc[ids] == 0).sum())
        assert row.n_label_1 == int((label_of.loc[ids] == 1).sum())
        assert row.n_label_0 + row.n_label_1 == row.n_images
    n_pool = len(manifest) - len(splits["test"])
    for fold in range(3):
        part = table[table["fold"] == f"fold_{fold}"]
        assert part["n_images"].sum() == n_pool
    assert np.isclose(table.loc[table["set"] == "val", "n_images"].sum(), n_pool)


def _subsets(make_manifest, n_subsets: int = 4) -> pd.DataFrame:
    """A manifest whose patients lie in LUNA16-style source folds subset0, subset1, ..."""
    return make_manifest(n_patients=24, source_split=lambda p: f"subset{p % n_subsets}")


def test_source_folds_are_the_split_luna16_style(make_manifest) -> None:
    manifest = _subsets(make_manifest)
    splits = make_splits(manifest, k=5, seed=0, source_folds={"test": ["subset3"], "folds": ["subset0", "subset1", "subset2"]})
    by_subset = {name: sorted(group["image_id"]) for name, group in manifest.groupby("source_split")}
    assert splits["test"] == by_subset["subset3"]
    assert len(splits["folds"]) == 3  # the listed folds, not k
    for fold, name in zip(splits["folds"], ["subset0", "subset1", "subset2"]):
        assert fold["val"] == by_subset[name]
        assert fold["train"] == sorted(i for other in ("subset0", "subset1", "subset2") if other != name for i in by_subset[other])
    check_leakage(splits, manifest)
    # the same folds whatever the seed: they are the source's
    assert (
        make_splits(manifest, seed=7, source_folds={"test": ["subset3"], "folds": ["subset0", "subset1", "subset2"]})["folds"]
        == splits["folds"]
    )


@pytest.mark.parametrize(
    ("source_folds", "message"),
    [
        (
            {"test": ["subset3"], "folds": ["subset0", "subset1"]},
            r"image\(s\) lie in source folds .* does not list: \['subset2'\] \(e\.g\. image p\d+_\d\)",
        ),
        ({"test": ["subset3"], "folds": ["subset0", "subset1", "subset2", "subset7"]}, r"\['subset7'\].*hold no image"),
        ({"test": ["subset3"], "folds": ["subset0", "subset1", "subset2", "subset3"]}, r"\['subset3'\] listed twice"),
        ({"test": ["subset3"], "folds": ["subset0"]}, r"at least two source folds"),
    ],
)
def test_source_folds_that_do_not_fit_the_data_are_refused_naming_them(make_manifest, source_folds, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_splits(_subsets(make_manifest), source_folds=source_folds)


def test_a_patient_in_two_source_folds_is_refused_as_leakage(make_manifest) -> None:
    manifest = _subsets(make_manifest)
    two_images = manifest[manifest["patient_id"].map(manifest["patient_id"].value_counts()) > 1]["patient_id"].iloc[0]
    rows = manifest.index[manifest["patient_id"] == two_images]
    moved = "subset1" if manifest.loc[rows[0], "source_split"] != "subset1" else "subset2"
    manifest.loc[rows[1], "source_split"] = moved
    splits = make_splits(manifest, source_folds={"test": ["subset3"], "folds": ["subset0", "subset1", "subset2"]})
    with pytest.raises(LeakageError, match=two_images):
        check_leakage(splits, manifest)
