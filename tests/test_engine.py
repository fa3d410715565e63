"""Tests for the shared engine (casebook.engine): the one epoch loop trains every
family, data-parallel included. The loop's resume, best-epoch and history behaviour are
exercised through each family in test_train.py, test_seg_train.py and test_distributed.py;
here: segmentation trained data-parallel in two real processes (gloo on the CPU)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from seg_cases import preprocessed_brain

from casebook.engine.checkpoint import BEST, CHECKPOINT
from casebook.tasks.segmentation.train import HISTORY_COLUMNS, fit, load_seg_model, per_rank_batch, rank_share

UNET = {"name": "unet", "kwargs": {"channels": [8, 16], "strides": [2]}}


def test_rank_shares_are_equal_and_cover_every_case() -> None:
    ids = [f"c{i}" for i in range(5)]
    shares = [rank_share(ids, rank, 2) for rank in range(2)]
    assert [len(s) for s in shares] == [3, 3]  # one case repeated, so both ranks take as many steps
    assert set(shares[0]) | set(shares[1]) == set(ids)
    assert rank_share(ids, 0, 1) == ids
    assert per_rank_batch(4, 2) == 2
    with pytest.raises(ValueError, match="batch_size 1 is smaller than the 2 processes"):
        per_rank_batch(1, 2)


@pytest.fixture(scope="module")
def brain(tmp_path_factory) -> dict:
    return preprocessed_brain(tmp_path_factory.mktemp("engine_seg"))


def test_segmentation_trains_data_parallel_in_two_processes(brain, tmp_path) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = {
        "network": UNET,
        "train": {"epochs": 2, "batch_size": 4, "optimizer": "adamw", "lr": 0.01, "amp": False},
        "segmentation": {"patch_size": [16, 16, 16], "samples_per_volume": 2, "foreground_probability": 0.6},
        "seed": 0,
        "device": "cpu",
    }
    try:
        summary = fit(
            cfg, cases_dir=brain["cases"], seg_plan=brain["seg_plan"], splits=brain["splits"], fold=0, out_dir=tmp_path, processes=2
        )
    finally:
        torch.set_num_threads(before)
    assert summary["processes"] == 2 and summary["device"] == "cpu"
    history = pd.read_csv(tmp_path / "history.tsv", sep="\t")
    assert list(history.columns) == HISTORY_COLUMNS and list(history["epoch"]) == [1, 2]
    assert history["train_loss"].notna().all() and history["val_dice"].between(0, 1).all()
    # rank 0 wrote one set of files, loadable in one process, from the best epoch
    for name in ("model.pt", BEST, CHECKPOINT):
        assert (tmp_path / name).is_file()
    model, patch = load_seg_model(tmp_path / "model.pt", UNET, brain["seg_plan"])
    assert patch == [16, 16, 16] and not model.training
    assert torch.load(tmp_path / CHECKPOINT, weights_only=False)["state"]["complete"]
