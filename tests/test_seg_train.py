"""Patch-based training of a 3D segmentation network (casebook.tasks.segmentation.train) on a
tiny synthetic brain MRI data set, on the CPU: it learns, it resumes, it reloads.

The data set is 10 subjects of 32 x 32 x 24 voxels at 6 x 6 x 7 mm; the network a
three-level UNet with 8-16-32 filters. The module runs in 15-30 s on two cores.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchio as tio
from seg_cases import preprocessed_brain

from casebook.engine.checkpoint import BEST, CHECKPOINT
from casebook.engine.runtime import seed_everything
from casebook.tasks.segmentation.evaluate import display_channel, pick_cases, regions_of
from casebook.tasks.segmentation.inference import predict_probabilities
from casebook.tasks.segmentation.networks import build_seg_network
from casebook.tasks.segmentation.train import (
    case_subject,
    fit,
    label_probabilities,
    load_seg_model,
    patch_loader,
    validate,
)

N_CLASSES = 4
UNET = {"name": "unet", "kwargs": {"channels": [8, 16, 32], "strides": [2, 2]}}


pytestmark = pytest.mark.usefixtures("torch_two_threads")


@pytest.fixture(scope="module")
def brain(tmp_path_factory) -> dict:
    """10 preprocessed synthetic subjects and a split: 3 test, 5 train, 2 validation."""
    root = tmp_path_factory.mktemp("seg_train")
    return preprocessed_brain(root)


def _cfg(**overrides) -> dict:
    cfg = {
        "network": UNET,
        "train": {"epochs": 4, "batch_size": 4, "optimizer": "adamw", "lr": 0.01, "amp": False},
        # auto patch: the budget gives 16 x 16 x 20 (z, y, x) for these cases
        "segmentation": {"patch_size": "auto", "max_patch_voxels": 6000, "samples_per_volume": 4, "foreground_probability": 0.6},
        "seed": 0,
        "device": "cpu",
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    return cfg


@pytest.fixture(scope="module")
def trained(brain, tmp_path_factory) -> dict:
    cfg = _cfg()
    out = tmp_path_factory.mktemp("trained")
    summary = fit(cfg, cases_dir=brain["cases"], seg_plan=brain["seg_plan"], splits=brain["splits"], fold=0, out_dir=out)
    return {"cfg": cfg, "out": out, "summary": summary}


def _whole_tumour_dice(model, brain, case_ids, patch) -> list[float]:
    """Whole-tumour (every foreground class) Dice of sliding-window predictions."""
    dice = []
    for case_id in case_ids:
        image = np.load(brain["cases"] / f"{case_id}.npy")
        truth = np.load(brain["cases"] / f"{case_id}_label.npy") > 0
        probs = predict_probabilities(model, image, patch, amp=False)
        assert probs.shape == (N_CLASSES, *truth.shape)
        np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)
        pred = probs.argmax(axis=0) > 0
        dice.append(2.0 * float((pred & truth).sum()) / float(pred.sum() + truth.sum()))
    return dice


# ------------------------------------------------------------------------- 1. it learns


def test_trained_unet_segments_held_out_cases_far_better_than_untrained(brain, trained):
    summary = trained["summary"]
    assert summary["patch_size"] == [16, 16, 20]
    assert (summary["epochs"], summary["n_train"], summary["n_val"]) == (4, 5, 2)
    assert (summary["in_channels"], summary["n_classes"], summary["device"]) == (4, N_CLASSES, "cpu")
    history = pd.read_csv(trained["out"] / "history.tsv", sep="\t")
    assert list(history["epoch"]) == [1, 2, 3, 4]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert summary["best_val_dice"] == pytest.approx(history["val_dice"].max(), abs=1e-5)

    model, patch = load_seg_model(trained["out"] / "model.pt", UNET, brain["seg_plan"])
    test_ids = brain["splits"]["test"]
    trained_dice = _whole_tumour_dice(model, brain, test_ids, patch)

    # the very network fit started from: same seed, same architecture, no training
    seed_everything(trained["cfg"]["seed"])
    untrained = build_seg_network(
        UNET, spatial_dims=3, in_channels=4, out_channels=N_CLASSES, patch_size=patch, spacing=brain["seg_plan"]["spacing_array_order"]
    )
    untrained_dice = _whole_tumour_dice(untrained, brain, test_ids, patch)
    print(f"whole-tumour Dice on held-out cases: trained {np.round(trained_dice, 3)}, untrained {np.round(untrained_dice, 3)}")
    assert min(trained_dice) > 0.5, trained_dice
    assert max(untrained_dice) < 0.5, untrained_dice


# ----------------------------------------------------------------- 4. reloading a model


def test_load_seg_model_returns_the_best_weights_and_their_patch(brain, trained):
    out = trained["out"]
    model, patch = load_seg_model(out / "model.pt", UNET, brain["seg_plan"])
    assert patch == trained["summary"]["patch_size"] == [16, 16, 20]
    assert not model.training
    best = torch.load(out / BEST, weights_only=True)
    assert best["epoch"] == trained["summary"]["best_epoch"] and best["patch_size"] == patch
    state = model.state_dict()
    assert state.keys() == best["state_dict"].keys()
    assert all(torch.equal(state[k], best["state_dict"][k]) for k in state)
    # model.pt is a copy of the best checkpoint, not of the last epoch's checkpoint
    assert (out / "model.pt").read_bytes() == (out / BEST).read_bytes()
    # and a network of another shape is refused rather than half loaded
    with pytest.raises(RuntimeError):
        load_seg_model(out / "model.pt", {"name": "unet", "kwargs": {"channels": [4, 8, 16], "strides": [2, 2]}}, brain["seg_plan"])


# ------------------------------------------------------------ 3. sampling of patches


def test_label_probabilities_split_the_foreground_share_evenly():
    probs = label_probabilities(4, 0.6)
    assert set(probs) == {0, 1, 2, 3}
    assert sum(probs.values()) == pytest.approx(1.0)
    assert probs[0] == pytest.approx(0.4)
    assert probs[1] == probs[2] == probs[3] == pytest.approx(0.2)
    assert label_probabilities(2, 1.0) == {0: 0.0, 1: 1.0}


def test_patch_loader_yields_batches_of_the_patch_shape_with_integer_labels(brain):
    ids = brain["splits"]["folds"][0]["train"]
    patch = [24, 32, 32]  # larger than every case along every axis: cases are padded
    assert all(any(s < p for s, p in zip(brain["seg_plan"]["cases"][i]["shape"], patch)) for i in ids)
    seed_everything(0)
    cfg = {"samples_per_volume": 2, "batch_size": 4, "foreground_probability": 0.5}
    loader = patch_loader([case_subject(brain["cases"], i, patch) for i in ids], patch, cfg, N_CLASSES, None)
    batches = list(loader)
    assert [len(b["case_id"]) for b in batches] == [4, 4, 2]  # 5 cases x 2 patches
    for batch in batches:
        image, label = batch["image"][tio.DATA], batch["label"][tio.DATA]
        assert image.shape[1:] == (4, *patch) and image.dtype == torch.float32
        assert label.shape[1:] == (1, *patch)
        assert not label.dtype.is_floating_point
        assert set(torch.unique(label).tolist()) <= {0, 1, 2, 3}
    assert sorted(c for b in batches for c in b["case_id"]) == sorted(ids * 2)


@pytest.mark.parametrize("foreground, expect_tumour", [(1.0, True), (0.0, False)])
def test_patch_centres_follow_the_foreground_probability(brain, foreground, expect_tumour):
    ids = brain["splits"]["folds"][0]["train"]
    patch = [8, 8, 8]
    seed_everything(1)
    cfg = {"samples_per_volume": 6, "batch_size": 30, "foreground_probability": foreground}
    batch = next(iter(patch_loader([case_subject(brain["cases"], i, patch) for i in ids], patch, cfg, N_CLASSES, None)))
    # TorchIO puts the sampled voxel at index size // 2 of an even-sized patch
    centres = batch["label"][tio.DATA][:, 0, 4, 4, 4]
    assert len(centres) == 30
    assert bool((centres > 0).all()) if expect_tumour else bool((centres == 0).all()), centres.tolist()


# --------------------------------------------------------------------------- 2. resume

RESUME_CFG = {
    "train": {"epochs": 3, "schedule": {"name": "cosine"}},
    "segmentation": {"patch_size": [16, 16, 16], "samples_per_volume": 2},
    # random flips and gamma: the data stream depends on the RNG state being restored
    "augment": {"flip": {"p": 0.5, "axes": [2]}, "gamma": {"p": 0.5, "log_gamma": 0.2}},
    "seed": 3,
}


class _Interrupted(Exception):
    pass


def _stop_after(epoch: int):
    def on_epoch_end(done: int, row: dict) -> None:
        if done == epoch:
            raise _Interrupted

    return on_epoch_end


def _resume_splits(brain) -> dict:
    fold = brain["splits"]["folds"][0]
    return {"test": brain["splits"]["test"], "folds": [{"train": fold["train"][:4], "val": fold["val"][:1]}]}


@pytest.fixture(scope="module")
def uninterrupted(brain, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    fit(
        _cfg(**RESUME_CFG),
        cases_dir=brain["cases"],
        seg_plan=brain["seg_plan"],
        splits=_resume_splits(brain),
        fold=0,
        out_dir=out,
        resume_key="k",
    )
    return torch.load(out / CHECKPOINT, weights_only=False)


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _interrupt_and_resume(brain, out: Path) -> dict:
    """Stop a run after epoch 2 of 3 (an exception from on_epoch_end, as a killed job),
    then call fit again; what the second call did and logged."""
    kwargs = {
        "cases_dir": brain["cases"],
        "seg_plan": brain["seg_plan"],
        "splits": _resume_splits(brain),
        "fold": 0,
        "out_dir": out,
        "resume_key": "k",
    }
    with pytest.raises(_Interrupted):
        fit(_cfg(**RESUME_CFG), on_epoch_end=_stop_after(2), **kwargs)
    after_two = torch.load(out / CHECKPOINT, weights_only=False)
    assert after_two["state"]["epoch"] == 2 and not after_two["state"].get("complete")
    assert not (out / "model.pt").exists()
    epochs_run: list[int] = []
    logger, handler = logging.getLogger("casebook.engine.loop"), _ListHandler()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        summary = fit(_cfg(**RESUME_CFG), on_epoch_end=lambda e, row: epochs_run.append(e), **kwargs)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    final = torch.load(out / CHECKPOINT, weights_only=False)
    return {"summary": summary, "epochs_run": epochs_run, "final": final, "log": "\n".join(handler.messages), "out": out}


@pytest.fixture(scope="module")
def resumed(brain, tmp_path_factory) -> dict:
    """An interrupted-then-resumed run of the code as it is."""
    return _interrupt_and_resume(brain, tmp_path_factory.mktemp("resumed"))


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fit_resumes_from_its_checkpoint_after_an_interruption(resumed, uninterrupted):
    assert "resuming from" in resumed["log"] and "after epoch 2" in resumed["log"], resumed["log"]
    assert resumed["epochs_run"] == [3]  # only the missing epoch is trained
    history = pd.read_csv(resumed["out"] / "history.tsv", sep="\t")
    assert list(history["epoch"]) == [1, 2, 3]
    assert [r["epoch"] for r in resumed["final"]["state"]["history"]] == [1, 2, 3]
    assert resumed["final"]["state"]["complete"] and (resumed["out"] / "model.pt").exists()
    assert resumed["summary"]["epochs"] == 3
    # the epochs before the interruption are the uninterrupted run's, exactly
    for before, after in zip(uninterrupted["state"]["history"][:2], resumed["final"]["state"]["history"][:2]):
        assert before["train_loss"] == after["train_loss"] and before["val_dice"] == after["val_dice"]
    # the optimiser and the cosine schedule continued rather than restarted
    assert resumed["final"]["scheduler"]["last_epoch"] == uninterrupted["scheduler"]["last_epoch"] == 3
    assert [r["lr"] for r in resumed["final"]["state"]["history"]] == [r["lr"] for r in uninterrupted["state"]["history"]]


def test_resumed_weights_equal_an_uninterrupted_run(resumed, uninterrupted):
    assert resumed["final"]["state"]["history"][2]["train_loss"] == uninterrupted["state"]["history"][2]["train_loss"]
    assert _same_weights(resumed["final"]["model"], uninterrupted["model"])


def test_a_checkpoint_of_another_config_is_not_resumed(brain, resumed, tmp_path, caplog):
    out = tmp_path / "other"
    shutil.copytree(resumed["out"], out)
    ckpt = torch.load(out / CHECKPOINT, weights_only=False)
    ckpt["state"]["complete"] = False  # pretend it was interrupted, under key "k"
    torch.save(ckpt, out / CHECKPOINT)
    cfg = _cfg(**{**RESUME_CFG, "train": {"epochs": 1}})
    with caplog.at_level(logging.INFO, logger="casebook.engine"):
        fit(
            cfg, cases_dir=brain["cases"], seg_plan=brain["seg_plan"], splits=_resume_splits(brain), fold=0, out_dir=out, resume_key="other"
        )
    assert "starting afresh" in caplog.text and "resuming" not in caplog.text
    assert list(pd.read_csv(out / "history.tsv", sep="\t")["epoch"]) == [1]


# ------------------------------------------------------------- evaluation helpers


def test_regions_display_channel_and_picked_cases():
    seg_plan = {"label_values": [0, 1, 2, 4], "class_names": ["background", "necrotic core", "edema", "enhancing tumour"],
                "channel_names": ["T1", "T1c", "T2", "FLAIR"]}  # fmt: skip
    regions = {"whole_tumour": [1, 2, 4], "tumour_core": [1, 4], "enhancing_tumour": [4]}
    assert regions_of({"regions": regions}, seg_plan) == regions
    default = regions_of({}, seg_plan)
    assert sorted(default.values()) == [[1], [2], [4]]
    assert display_channel({"display_channel": "FLAIR"}, seg_plan) == 3
    assert display_channel({}, seg_plan) == 0
    with pytest.raises(ValueError, match="'DWI' is not a channel"):
        display_channel({"display_channel": "DWI"}, seg_plan)

    table = pd.DataFrame({"case_id": ["a", "a", "b", "b", "c", "c", "d", "d"], "dice": [0.9, 0.7, 0.2, 0.4, 0.6, 0.6, 0.95, 0.85]})
    assert pick_cases(table) == [("best", "d"), ("median", "c"), ("worst", "b")]
    assert pick_cases(table[table["case_id"] == "a"]) == [("best", "a")]


# ------------------------------------------------------------- checkpoint selection


class _Oracle(torch.nn.Module):
    """Predicts the class index written in its input image (one-hot logits)."""

    def __init__(self, n_classes: int):
        super().__init__()
        self.n_classes = n_classes
        self.unused = torch.nn.Parameter(torch.zeros(1))  # predict_logits reads the device

    def forward(self, x):
        return 10.0 * torch.nn.functional.one_hot(x[:, 0].round().long(), self.n_classes).movedim(-1, 1).float()


def test_checkpoint_score_prefers_a_model_that_finds_a_rare_class(tmp_path: Path):
    # 3 validation cases; class 2 (a lesion) lies in one of them. A model that never
    # predicts it must score lower than one that finds it with a few false voxels elsewhere:
    # per-case Dice averaged with "empty in both = 1" ranks them the other way round
    # (lesion 2/3 against 1/3), and so kept the abdominal checkpoints that never saw lesions.
    shape, ids = (8, 8, 8), ["a", "b", "c"]
    labels = {c: np.zeros(shape, np.uint8) for c in ids}
    for c in ids:
        labels[c][:4] = 1  # an organ everywhere
    labels["c"][5:7, 2:6, 2:6] = 2  # the lesion, in one case only
    silent = {c: np.where(labels[c] == 2, 0, labels[c]) for c in ids}
    finder = {c: labels[c].copy() for c in ids}
    for c in ("a", "b"):
        finder[c][7, 0, :2] = 2  # two false lesion voxels in each lesion-free case
    scores = {}
    for name, preds in (("silent", silent), ("finder", finder)):
        folder = tmp_path / name
        folder.mkdir()
        for c in ids:
            np.save(folder / f"{c}.npy", preds[c][None].astype(np.float32))  # the oracle's input
            np.save(folder / f"{c}_label.npy", labels[c])
        loss = lambda logits, label: torch.zeros(())  # noqa: E731 (the loss is not under test)
        _, scores[name] = validate(_Oracle(3), folder, ids, list(shape), 3, loss, {}, amp=False)
    assert scores["silent"] == pytest.approx(0.5)  # organ 1, lesion 0
    assert scores["finder"] == pytest.approx((1 + 2 * 32 / (2 * 32 + 4)) / 2)
