"""Tests for casebook.tasks.classification.train: learning on a tiny separable cache, outputs, and exact resume."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_cache import write_tiny_cache

from casebook.engine.checkpoint import CHECKPOINT, resume_key
from casebook.engine.optim import make_scheduler
from casebook.tasks.classification.data import CachedImages, make_loader, rows_for
from casebook.tasks.classification.networks import build_network
from casebook.tasks.classification.train import HISTORY_COLUMNS, auc_score, class_weights, fit, load_model, predict

torch.set_num_threads(1)

N_IMAGES = 48
NETWORK = {"name": "densenet", "kwargs": {"init_features": 8, "growth_rate": 8, "block_config": [1, 1]}}
AUGMENT = {"flip": {"axes": [0, 1], "p": 0.5}, "noise": {"p": 0.5, "std": 0.1}, "affine": {"p": 0.3, "degrees": 10}}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> dict[str, Path]:
    """The tiny cache of tests/tiny_cache.py: 32 training and 16 validation images."""
    return write_tiny_cache(tmp_path_factory.mktemp("cache"), N_IMAGES)


def _cfg(epochs: int, *, lr: float = 1e-2, seed: int = 0, augment=None) -> dict:
    return {
        "seed": seed,
        "device": "cpu",
        "network": copy.deepcopy(NETWORK),
        "train": {"epochs": epochs, "batch_size": 8, "lr": lr, "threads": 1, "schedule": {"name": "multistep"}},
        "augment": copy.deepcopy(augment),
    }


def _fit(cache, out_dir, cfg, **kwargs):
    return fit(cfg, **cache, fold=0, out_dir=out_dir, num_classes=2, **kwargs)


def _history(out_dir: Path) -> pd.DataFrame:
    return pd.read_csv(out_dir / "history.tsv", sep="\t")


def _val_auc(model, cache) -> float:
    index = pd.read_csv(cache["index_path"], sep="\t", dtype={"image_id": str, "patient_id": str})
    val_ids = json.loads(cache["splits_path"].read_text())["folds"][0]["val"]
    rows, labels = rows_for(index, val_ids)
    images = np.load(cache["images_path"], mmap_mode="r")
    probs, seen = predict(model, make_loader(CachedImages(images, labels, rows), batch_size=16, shuffle=False), "cpu")
    np.testing.assert_array_equal(seen, labels)
    return auc_score(seen, probs)


class Interrupt(Exception):
    pass


def _interrupt_after(epoch: int):
    def callback(e, row):
        if e == epoch:
            raise Interrupt(f"killed after epoch {e}")

    return callback


# --------------------------------------------------------------------------------------
# learning, outputs
# --------------------------------------------------------------------------------------


def test_training_learns_and_writes_its_outputs(cache, tmp_path) -> None:
    seen = []
    summary = _fit(cache, tmp_path, _cfg(6), on_epoch_end=lambda e, row: seen.append((e, row["val_auc"])))
    assert summary["best_val_auc"] > 0.9
    assert summary["n_train"] == 32 and summary["n_val"] == 16
    assert summary["input_shape"] == [1, 16, 16] and summary["spatial_dims"] == 2
    assert summary["device"] == "cpu"

    history = _history(tmp_path)
    assert list(history.columns) == HISTORY_COLUMNS
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    assert [e for e, _ in seen] == [1, 2, 3, 4, 5, 6]
    assert history["val_auc"].max() > 0.9
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    # multistep at 0.5 and 0.75 of the epochs: the lr of each epoch before its step
    np.testing.assert_allclose(history["lr"], [1e-2, 1e-2, 1e-2, 1e-3, 1e-4, 1e-4], rtol=1e-6)
    best = int(history["val_auc"].idxmax())
    assert summary["best_epoch"] == history["epoch"][best]

    # model.pt is the best epoch, and loads with load_model
    model = load_model(tmp_path / "model.pt", NETWORK, spatial_dims=2, in_channels=1, num_classes=2)
    assert not model.training
    assert _val_auc(model, cache) == pytest.approx(summary["best_val_auc"], abs=1e-6)
    assert torch.load(tmp_path / "model.pt", weights_only=True)["epoch"] == summary["best_epoch"]
    assert (tmp_path / CHECKPOINT).exists()


def test_untrained_networks_are_at_chance_on_average(cache) -> None:
    # for a random last layer the AUC is symmetric about 0.5: average over initialisations
    aucs = []
    for seed in range(8):
        torch.manual_seed(seed)
        model = build_network(NETWORK, spatial_dims=2, in_channels=1, num_classes=2).eval()
        aucs.append(_val_auc(model, cache))
    assert 0.3 < float(np.mean(aucs)) < 0.7
    assert float(np.mean(aucs)) < 0.9


# --------------------------------------------------------------------------------------
# resume
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run_a")
    _fit(cache, out, _cfg(5, augment=AUGMENT), resume_key="key")
    return out


def _assert_same_run(a: Path, b: Path) -> None:
    ha, hb = _history(a), _history(b)
    assert hb["epoch"].tolist() == ha["epoch"].tolist() == [1, 2, 3, 4, 5]
    for col in ("train_loss", "val_loss", "val_auc", "val_accuracy", "lr"):
        np.testing.assert_allclose(hb[col], ha[col], rtol=1e-6, atol=1e-6, err_msg=col)
    # the weights at the end are the same, bit for bit (CPU, deterministic)
    wa = torch.load(a / CHECKPOINT, weights_only=False)["model"]
    wb = torch.load(b / CHECKPOINT, weights_only=False)["model"]
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def test_resume_after_an_interruption_equals_an_uninterrupted_run(cache, uninterrupted, tmp_path) -> None:
    with pytest.raises(Interrupt):
        _fit(cache, tmp_path, _cfg(5, augment=AUGMENT), resume_key="key", on_epoch_end=_interrupt_after(2))
    assert _history(tmp_path)["epoch"].tolist() == [1, 2]

    epochs_run = []
    _fit(cache, tmp_path, _cfg(5, augment=AUGMENT), resume_key="key", on_epoch_end=lambda e, r: epochs_run.append(e))
    assert epochs_run == [3, 4, 5]  # resumed, not restarted
    _assert_same_run(uninterrupted, tmp_path)


def test_checkpoint_of_another_resume_key_is_ignored(cache, uninterrupted, tmp_path) -> None:
    # a different run (other seed and lr) left a checkpoint after epoch 2
    with pytest.raises(Interrupt):
        _fit(cache, tmp_path, _cfg(5, lr=3e-3, seed=5, augment=AUGMENT), resume_key="old", on_epoch_end=_interrupt_after(2))
    epochs_run = []
    _fit(cache, tmp_path, _cfg(5, augment=AUGMENT), resume_key="key", on_epoch_end=lambda e, r: epochs_run.append(e))
    assert epochs_run == [1, 2, 3, 4, 5]  # started afresh
    _assert_same_run(uninterrupted, tmp_path)


def test_resume_after_the_outputs_were_removed_keeps_the_best_model(cache, uninterrupted, tmp_path) -> None:
    with pytest.raises(Interrupt):
        _fit(cache, tmp_path, _cfg(5, augment=AUGMENT), resume_key="key", on_epoch_end=_interrupt_after(2))
    # what Snakemake does to the outputs of a failed job; the checkpoint is not an output
    (tmp_path / "model.pt").unlink(missing_ok=True)
    (tmp_path / "history.tsv").unlink(missing_ok=True)
    summary = _fit(cache, tmp_path, _cfg(5, augment=AUGMENT), resume_key="key")
    _assert_same_run(uninterrupted, tmp_path)
    best_a = torch.load(uninterrupted / "model.pt", weights_only=True)
    best_b = torch.load(tmp_path / "model.pt", weights_only=True)
    assert best_b["epoch"] == summary["best_epoch"] == best_a["epoch"]
    for name in best_a["state_dict"]:
        assert torch.equal(best_a["state_dict"][name], best_b["state_dict"][name]), name


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def test_resume_key_depends_on_config_fold_and_data() -> None:
    cfg = _cfg(3)
    key = resume_key(cfg, 0, {"images.npy": "sha256:aa"})
    assert key == resume_key(copy.deepcopy(cfg), 0, {"images.npy": "sha256:aa"})
    assert key != resume_key(_cfg(4), 0, {"images.npy": "sha256:aa"})
    assert key != resume_key(cfg, 1, {"images.npy": "sha256:aa"})
    assert key != resume_key(cfg, 0, {"images.npy": "sha256:bb"})


def test_class_weights_are_balanced() -> None:
    weights = class_weights(np.array([0, 0, 0, 1]), 2, "balanced")
    np.testing.assert_allclose(weights.numpy(), [4 / 6, 4 / 2])
    assert class_weights(np.array([0, 1]), 2, None) is None
    # a class absent from the training labels does not divide by zero
    assert torch.isfinite(class_weights(np.array([0, 0, 1]), 3, "balanced")).all()


def test_auc_score() -> None:
    assert np.isnan(auc_score(np.array([1, 1]), np.array([[0.2, 0.8], [0.4, 0.6]])))
    assert auc_score(np.array([0, 1]), np.array([[0.8, 0.2], [0.4, 0.6]])) == 1.0
    probs3 = np.eye(3)[[0, 1, 2, 0]] * 0.7 + 0.1
    assert auc_score(np.array([0, 1, 2, 0]), probs3) == 1.0


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ({"name": "multistep", "milestones": [0.5], "gamma": 0.5}, [1.0, 1.0, 0.5, 0.5]),
        ({"name": "none"}, [1.0, 1.0, 1.0, 1.0]),
        ({"name": "cosine"}, [1.0, 0.8535534, 0.5, 0.1464466]),
    ],
)
def test_schedules(schedule, expected) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_scheduler(optimizer, {"schedule": schedule}, epochs=4)
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="warmup"):
        make_scheduler(optimizer, {"schedule": {"name": "warmup"}}, epochs=4)


def test_a_finished_run_is_retrained_not_resumed(cache, tmp_path) -> None:
    _fit(cache, tmp_path, _cfg(3), resume_key="key")
    epochs_run = []
    _fit(cache, tmp_path, _cfg(3), resume_key="key", on_epoch_end=lambda e, row: epochs_run.append(e))
    assert epochs_run == [1, 2, 3]


def test_a_fold_the_split_lacks_is_named_with_the_folds_that_exist() -> None:
    from casebook.split import fold_split

    splits = {"folds": [{"train": ["a"], "val": ["b"]}], "test": ["c"]}
    assert fold_split(splits, 0, "s.json") == {"train": ["a"], "val": ["b"]}
    with pytest.raises(ValueError, match=r"s\.json: there is no fold 1; this split has 1 fold"):
        fold_split(splits, 1, "s.json")
