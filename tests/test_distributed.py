"""Tests for data-parallel training (casebook.engine.distributed, ``fit(..., processes=2)``).

Two worker processes on CPU with the gloo backend train the tiny model of
test_train.py. Each launch costs a few seconds (every worker imports torch and MONAI),
so the module shares its runs between tests through module-scoped fixtures.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_cache import write_tiny_cache

from casebook.engine import distributed
from casebook.engine.checkpoint import BEST, CHECKPOINT
from casebook.tasks.classification.train import HISTORY_COLUMNS, fit, load_model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread in this process while the workers train (restored afterwards, so
    that later test modules keep their own setting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


N_IMAGES = 48
EPOCHS = 4
BATCHNORM_NET = {"name": "densenet", "kwargs": {"init_features": 8, "growth_rate": 8, "block_config": [1, 1]}}
# the same network with GroupNorm of one group (each sample normalised over its channels
# and pixels): no statistics across the samples of a batch, so sharding a batch changes nothing
GROUPNORM_NET = {"name": "densenet", "kwargs": {**BATCHNORM_NET["kwargs"], "norm": ["group", {"num_groups": 1}]}}
AUGMENT = {"flip": {"axes": [0, 1], "p": 0.5}, "noise": {"p": 0.5, "std": 0.1}}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> dict[str, Path]:
    """The tiny cache of tests/tiny_cache.py: 32 training and 16 validation images."""
    return write_tiny_cache(tmp_path_factory.mktemp("cache"), N_IMAGES)


def _cfg(network: dict, *, seed: int = 0, augment=None, optimizer: str = "adam") -> dict:
    return {
        "seed": seed,
        "device": "cpu",
        "network": copy.deepcopy(network),
        "train": {"epochs": EPOCHS, "batch_size": 8, "lr": 1e-2, "optimizer": optimizer, "schedule": {"name": "multistep"}},
        "augment": copy.deepcopy(augment),
    }


def _kwargs(cache, out_dir, **extra) -> dict:
    return {**cache, "fold": 0, "out_dir": out_dir, "num_classes": 2, "resume_key": "key", **extra}


def _history(out_dir: Path) -> pd.DataFrame:
    return pd.read_csv(out_dir / "history.tsv", sep="\t")


def _weights(out_dir: Path) -> dict[str, torch.Tensor]:
    """The weights after the last epoch."""
    return torch.load(out_dir / CHECKPOINT, weights_only=False)["model"]


def _difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Max abs difference and relative L2 difference ||a - b|| / ||b|| of the learnt
    parameters (BatchNorm running statistics left out: see the BatchNorm test)."""
    keys = [k for k in b if b[k].is_floating_point() and not k.endswith(("running_mean", "running_var"))]
    va = torch.cat([a[k].double().flatten() for k in keys])
    vb = torch.cat([b[k].double().flatten() for k in keys])
    return float((va - vb).abs().max()), float((va - vb).norm() / vb.norm())


class InterruptAfter:
    """on_epoch_end that fails after an epoch, as a killed job would (picklable: it runs in rank 0)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def __call__(self, epoch: int, row: dict) -> None:
        if epoch == self.epoch:
            raise RuntimeError(f"killed after epoch {epoch}")


# --------------------------------------------------------------------------------------
# runs shared by the tests
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_processes(cache, tmp_path_factory) -> tuple[Path, dict]:
    """GroupNorm, no augmentation, 2 processes (gloo), per-rank batch 4."""
    out = tmp_path_factory.mktemp("ddp2")
    return out, fit(_cfg(GROUPNORM_NET), **_kwargs(cache, out), processes=2)


@pytest.fixture(scope="module")
def one_process_same_sampler(cache, tmp_path_factory) -> Path:
    """The same training as one rank of a torchrun launch with one process: the DDP code
    path with world size 1, i.e. the same DistributedSampler order and batch of 8."""
    out = tmp_path_factory.mktemp("ddp1")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
            mp.setenv(name, value)
        mp.setenv("MASTER_PORT", str(distributed.free_port()))
        summary = fit(_cfg(GROUPNORM_NET), **_kwargs(cache, out), processes=1)
    assert summary["processes"] == 1 and not torch.distributed.is_initialized()
    return out


# --------------------------------------------------------------------------------------
# (a) two processes against one
# --------------------------------------------------------------------------------------


def test_two_processes_match_one_process_with_the_same_batches(two_processes, one_process_same_sampler, cache, tmp_path) -> None:
    """2 ranks x batch 4 against 1 process x batch 8 over the same sample order.

    The DistributedSampler deals each epoch's permutation out to the ranks in turn, so
    step k of the two ranks together sees items 8k..8k+7 of the permutation: the same
    global batches as a one-process run over that permutation. With a normalisation that
    does not mix the samples of a batch (GroupNorm) and no augmentation, the only
    difference is the order of float summation (the mean of two half-batch gradients,
    averaged by DDP's all-reduce, against one mean over 8). Measured after 16 Adam
    steps (seeds 0, 1, 2): 5e-8 to 1e-7 relative, 2e-7 to 7e-7 max abs. Tolerance:
    1e-5 relative, 1e-4 max abs; another seed (another initialisation) is ~1.1
    relative away.
    """
    ddp_out, summary = two_processes
    max_abs, rel = _difference(_weights(ddp_out), _weights(one_process_same_sampler))
    assert rel < 1e-5 and max_abs < 1e-4, (max_abs, rel)
    h2, h1 = _history(ddp_out), _history(one_process_same_sampler)
    for col in ("train_loss", "val_loss", "val_auc", "val_accuracy", "lr"):
        np.testing.assert_allclose(h2[col], h1[col], rtol=1e-4, atol=1e-4, err_msg=col)
    assert summary["processes"] == 2 and summary["device"] == "cpu"

    # the tolerance is meaningful: the same run with another seed is far outside it
    other = tmp_path / "seed1"
    fit(_cfg(GROUPNORM_NET, seed=1), **_kwargs(cache, other))
    assert _difference(_weights(other), _weights(one_process_same_sampler))[1] > 0.5


def test_two_processes_with_batchnorm_are_close_to_one_process(cache, tmp_path) -> None:
    """The default network (BatchNorm) with 2 processes against plain one-process training.

    Same seed, global batch 8, no augmentation; the results differ for two reasons:
    the one-process loader shuffles with its own generator, not the DistributedSampler's
    permutation (another order of the same samples), and torch 2.13's SyncBatchNorm
    does not run on CPU tensors, so each rank normalises with the statistics of its 4
    samples instead of 8 (and the running statistics kept are rank 0's). Measured: the
    learnt parameters are ~0.18 relative apart (either cause alone: ~0.15) and both reach
    a val AUC of 1.0 (seeds 1, 2: final AUCs within 0.016); another seed is ~1.1
    relative away. Tolerance: 0.5 relative and 0.05 AUC.
    """
    ddp_out, one = tmp_path / "ddp", tmp_path / "one"
    summary = fit(_cfg(BATCHNORM_NET), **_kwargs(cache, ddp_out), processes=2)
    reference = fit(_cfg(BATCHNORM_NET), **_kwargs(cache, one))
    rel = _difference(_weights(ddp_out), _weights(one))[1]
    assert rel < 0.5, rel
    assert summary["best_val_auc"] == pytest.approx(reference["best_val_auc"], abs=0.05)
    assert _history(ddp_out)["val_auc"].iloc[-1] == pytest.approx(_history(one)["val_auc"].iloc[-1], abs=0.05)

    other = tmp_path / "seed1"
    fit(_cfg(BATCHNORM_NET, seed=1), **_kwargs(cache, other))
    assert _difference(_weights(other), _weights(one))[1] > 0.5


def test_syncbatchnorm_does_not_run_on_cpu() -> None:
    """Why the CPU ranks keep their own BatchNorm: in training mode with a process group,
    torch 2.13's SyncBatchNorm refuses CPU tensors (it checks before it looks at the
    world size, so a group of one shows it; two gloo ranks fail the same way)."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{distributed.free_port()}", rank=0, world_size=1)
    try:
        bn = torch.nn.SyncBatchNorm(4).train()
        with pytest.raises(ValueError, match="SyncBatchNorm expected input tensor to be on GPU"):
            bn(torch.randn(2, 4, 3, 3))
    finally:
        torch.distributed.destroy_process_group()


# --------------------------------------------------------------------------------------
# (b) outputs
# --------------------------------------------------------------------------------------


def test_outputs_of_two_processes_load_as_one_process_outputs(two_processes, cache) -> None:
    out, summary = two_processes
    history = _history(out)
    assert list(history.columns) == HISTORY_COLUMNS
    assert history["epoch"].tolist() == list(range(1, EPOCHS + 1))
    np.testing.assert_allclose(history["lr"], [1e-2, 1e-2, 1e-3, 1e-4], rtol=1e-6)
    assert summary["n_train"] == 32 and summary["n_val"] == 16 and summary["epochs"] == EPOCHS

    # model.pt: the plain network's state dict (no "module." prefix), as evaluate loads it
    saved = torch.load(out / "model.pt", weights_only=True)
    assert saved["epoch"] == summary["best_epoch"] and not any(k.startswith("module.") for k in saved["state_dict"])
    model = load_model(out / "model.pt", GROUPNORM_NET, spatial_dims=2, in_channels=1, num_classes=2)
    assert not model.training
    images = torch.from_numpy(np.load(cache["images_path"])[32:])
    labels = np.arange(N_IMAGES)[32:] % 2
    with torch.no_grad():
        probs = torch.softmax(model(images), dim=1)[:, 1].numpy()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(labels, probs) == pytest.approx(summary["best_val_auc"], abs=1e-6)
    assert summary["best_val_auc"] > 0.9
    # only rank 0 wrote: no stray files
    assert sorted(p.name for p in out.iterdir()) == sorted([BEST, CHECKPOINT, "history.tsv", "model.pt"])


# --------------------------------------------------------------------------------------
# (c) resume, (d) failures
# --------------------------------------------------------------------------------------


def test_a_worker_failure_fails_the_call_and_a_rerun_resumes_exactly(cache, tmp_path) -> None:
    """With augmentation (each rank draws its own random numbers): rank 0 fails after
    epoch 2 while rank 1 waits for it at the barrier; the call fails with rank 0's
    message (no hang); the rerun resumes after epoch 2 (every rank's random state
    restored) and ends where an uninterrupted run ends, bit for bit."""
    cfg = _cfg(GROUPNORM_NET, augment=AUGMENT)
    reference, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    fit(cfg, **_kwargs(cache, reference), processes=2)

    start = time.monotonic()
    with pytest.raises(distributed.WorkerError, match=r"training process 0 of 2 failed: RuntimeError: killed after epoch 2"):
        distributed.launch(fit, 2, (cfg,), _kwargs(cache, resumed, on_epoch_end=InterruptAfter(2), processes=2), timeout=120)
    assert time.monotonic() - start < 60
    assert _history(resumed)["epoch"].tolist() == [1, 2]
    rank_rng = torch.load(resumed / CHECKPOINT, weights_only=False)["rank_rng"]
    assert len(rank_rng) == 2 and not torch.equal(rank_rng[0]["rng"]["torch"], rank_rng[1]["rng"]["torch"])

    fit(cfg, **_kwargs(cache, resumed), processes=2)
    pd.testing.assert_frame_equal(_history(resumed).drop(columns="seconds"), _history(reference).drop(columns="seconds"))
    wa, wb = _weights(reference), _weights(resumed)
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    best_a = torch.load(reference / "model.pt", weights_only=True)
    best_b = torch.load(resumed / "model.pt", weights_only=True)
    assert best_a["epoch"] == best_b["epoch"]
    for name in best_a["state_dict"]:
        assert torch.equal(best_a["state_dict"][name], best_b["state_dict"][name]), name


def test_a_bad_config_in_the_workers_raises_its_error_in_the_caller(cache, tmp_path) -> None:
    """A failure before the process group forms (a device name torch does not know)."""
    cfg = {**_cfg(GROUPNORM_NET), "device": "gpu"}
    start = time.monotonic()
    with pytest.raises(distributed.WorkerError, match=r"training process \d of 2 failed: RuntimeError: .*device string: gpu") as info:
        distributed.launch(fit, 2, (cfg,), _kwargs(cache, tmp_path, processes=2), timeout=120)
    assert time.monotonic() - start < 60
    assert "Traceback" in str(info.value) and "select_device" in str(info.value)
    assert not (tmp_path / "model.pt").exists()


# --------------------------------------------------------------------------------------
# the launcher's plumbing
# --------------------------------------------------------------------------------------


def test_batch_size_is_split_among_the_ranks() -> None:
    rank = distributed.Rank(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    data = torch.utils.data.TensorDataset(torch.arange(32))
    loader = rank.loader(data, batch_size=8, seed=3)
    assert loader.batch_size == 4 and loader.drop_last
    loader.sampler.set_epoch(5)
    mine = torch.cat([b[0] for b in loader]).tolist()
    other = distributed.Rank(rank=0, world_size=2, local_rank=0, device=torch.device("cpu")).loader(data, batch_size=8, seed=3)
    other.sampler.set_epoch(5)
    theirs = torch.cat([b[0] for b in other]).tolist()
    assert sorted(mine + theirs) == list(range(32))  # disjoint shards that cover the epoch
    with pytest.raises(ValueError, match="smaller than the 2 processes"):
        rank.loader(data, batch_size=1, seed=0)


def test_worker_environment_is_recognised(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.is_worker() and distributed.is_main_process()
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    assert distributed.is_worker() and not distributed.is_main_process()
    with pytest.raises(ValueError, match="WORLD_SIZE=2 processes, but processes=3"):
        distributed.init(3, torch.device("cpu"))


@pytest.mark.integration
def test_the_train_rule_trains_data_parallel_when_its_job_has_two_gpus(tmp_path):
    """Through Snakemake: 'gpu: 2' (here --set-resources) runs the train job as two ranks."""
    from workflow_helpers import copy_workflow, make_tiny, snakemake

    workdir = copy_workflow(tmp_path / "wf")
    make_tiny(workdir)
    model = "results/pneumonia_cxr/models/densenet_small/fold_0"
    snakemake(workdir, f"{model}/model.pt", "--set-resources", "train:gpu=2")
    log = (workdir / "logs/pneumonia_cxr/train/densenet_small/fold_0.log").read_text()
    assert "[rank 0]" in log and "[rank 1]" in log
    history = pd.read_csv(workdir / f"{model}/history.tsv", sep="\t")
    # make_tiny: 6 epochs on 32-px radiographs (0.78 measured on fold 0 of 3); untrained about 0.5
    assert len(history) == 6 and history["val_auc"].iloc[-1] > 0.7
    card = json.loads((workdir / f"{model}/metadata.json").read_text())
    assert card["processes"] == 2 and card["network"]["name"] == "densenet"
