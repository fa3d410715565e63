"""The one epoch loop every task family trains with.

A family builds its network, data and optimizer, and hands the loop a
:class:`Trainer`: what one training epoch does and how the model is validated (the
two hooks in which families differ, as MONAI's trainers differ only in their
iteration). The loop owns the rest: resuming from a checkpoint made under the same
config and data, the best epoch by the family's validation metric, the history
(``history.tsv``), a checkpoint after every epoch, ``model.pt`` at the end, progress
bars, and the data-parallel bookkeeping (rank 0 validates and writes every file).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from casebook.engine import distributed
from casebook.engine.checkpoint import BEST, CHECKPOINT, resumable_checkpoint, rng_state, save_torch, set_rng_state
from casebook.engine.runtime import seed_rng, select_device
from casebook.fileio import atomic_path

log = logging.getLogger(__name__)


@dataclass
class Trainer:
    """What a family hands the loop.

    ``train_epoch(epoch)`` trains one epoch and returns this rank's mean training loss;
    ``validate()`` returns the validation columns of the epoch's history row (rank 0
    only), among them ``metric``, the one that picks the best epoch (higher is better).
    ``net`` is what is saved (the network without its data-parallel wrapper);
    ``generator``, when the training loader has one, is saved and restored with the
    global random streams so that a resumed run draws what the first run would have.
    ``best_extra`` is stored beside the best weights (e.g. the patch size)."""

    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_epoch: Callable[[int], float]
    validate: Callable[[], dict[str, float]]
    metric: str
    columns: list[str]
    generator: torch.Generator | None = None
    best_extra: dict[str, Any] = field(default_factory=dict)


def data_parallel(fit_one: Callable[..., Any], cfg: dict[str, Any], processes: int = 1, **kwargs: Any) -> Any:
    """``fit_one(cfg, ddp=..., **kwargs)`` in one process (``ddp=None``), or as one rank in
    each of ``processes`` worker processes (see casebook.engine.distributed); returns
    rank 0's result. Under torchrun (a worker already), trains as this rank.
    ``fit_one`` must be a module-level function (the workers unpickle it by name)."""
    if processes > 1 and not distributed.is_worker():
        return distributed.launch(data_parallel, processes, (fit_one, cfg, processes), kwargs)
    ddp = distributed.init(processes, select_device(cfg.get("device", "auto"))) if distributed.is_worker() else None
    try:
        return fit_one(cfg, ddp=ddp, **kwargs)
    finally:
        if ddp is not None:
            ddp.close()


def run_epochs(
    trainer: Trainer,
    *,
    out_dir: Path,
    epochs: int,
    resume_key: str,
    desc: str,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    ddp: distributed.Rank | None = None,
) -> dict[str, Any] | None:
    """Train ``epochs`` epochs (after those a resumed checkpoint already did) and write
    ``model.pt``, ``history.tsv`` and the checkpoints into ``out_dir``. Returns the
    state (history, best epoch and metric, ``best``) on rank 0, None on other ranks.
    ``on_epoch_end(epoch, row)`` runs on rank 0 after each epoch's files are written."""
    ckpt_path = out_dir / CHECKPOINT
    state: dict[str, Any] = {"epoch": 0, "best": -np.inf, "best_epoch": 0, "history": []}
    if ckpt_path.exists():
        state = _resume(ckpt_path, resume_key, trainer, state, ddp)
    is_main = ddp is None or ddp.is_main
    if state["epoch"] == 0 and is_main:  # a fresh start must not inherit a best model of an earlier run
        (out_dir / BEST).unlink(missing_ok=True)
    epoch_range = range(state["epoch"] + 1, epochs + 1)
    bar = tqdm(epoch_range, desc=desc, unit="epoch", initial=state["epoch"], total=epochs, disable=not is_main)
    for epoch in bar:
        start = time.perf_counter()
        lr = trainer.optimizer.param_groups[0]["lr"]
        train_loss = trainer.train_epoch(epoch)
        trainer.scheduler.step()
        rank_rng = None
        if ddp:
            train_loss = ddp.mean(train_loss)  # equal shards: the mean over the whole epoch
            rank_rng = ddp.gather(rng_state(trainer.generator))  # every rank's, to resume exactly
            if not ddp.is_main:  # rank 0 validates and writes the files meanwhile
                ddp.barrier()
                continue
        row = {"epoch": epoch, "train_loss": train_loss, **trainer.validate(), "lr": lr}
        row["seconds"] = time.perf_counter() - start
        _end_epoch(trainer, state, row, out_dir, resume_key, rank_rng)
        bar.set_postfix(loss=f"{train_loss:.3f}", **{trainer.metric: f"{row[trainer.metric]:.3f}"})
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in row.items()})
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if ddp:
            ddp.barrier()
    if not is_main:
        return None
    _finish(trainer, state, out_dir, resume_key)
    return state


def _end_epoch(trainer: Trainer, state: dict[str, Any], row: dict[str, Any], out_dir: Path, resume_key: str, rank_rng) -> None:
    """Record the epoch: history, best weights when the metric improved, checkpoint."""
    state["history"].append(row)
    state["epoch"] = row["epoch"]
    if row[trainer.metric] > state["best"]:
        state["best"], state["best_epoch"] = row[trainer.metric], row["epoch"]
        best = {"state_dict": trainer.net.state_dict(), "epoch": row["epoch"], trainer.metric: row[trainer.metric]}
        save_torch(out_dir / BEST, {**best, **trainer.best_extra})
    _save_checkpoint(out_dir / CHECKPOINT, resume_key, trainer, state, rank_rng)
    write_history(out_dir / "history.tsv", state["history"], trainer.columns)


def _finish(trainer: Trainer, state: dict[str, Any], out_dir: Path, resume_key: str) -> None:
    """``model.pt`` from the best epoch; the checkpoint marked complete."""
    if not (out_dir / BEST).exists():  # the metric was NaN every epoch (e.g. one class only)
        nan = {"state_dict": trainer.net.state_dict(), "epoch": state["epoch"], trainer.metric: float("nan")}
        save_torch(out_dir / BEST, {**nan, **trainer.best_extra})
    with atomic_path(out_dir / "model.pt") as tmp:
        shutil.copyfile(out_dir / BEST, tmp)
    # a finished run is not resumed: a forced rerun (snakemake --forcerun train) retrains
    state["complete"] = True
    _save_checkpoint(out_dir / CHECKPOINT, resume_key, trainer, state)
    write_history(out_dir / "history.tsv", state["history"], trainer.columns)


def write_history(path: Path, history: list[dict[str, Any]], columns: list[str]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(history, columns=columns).to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def _save_checkpoint(path: Path, resume_key: str, trainer: Trainer, state: dict[str, Any], rank_rng=None) -> None:
    ckpt = {
        "resume_key": resume_key,
        "model": trainer.net.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        **rng_state(trainer.generator),
        "state": state,
    }
    if rank_rng is not None:  # data-parallel: the random state of every rank
        ckpt["rank_rng"] = rank_rng
    save_torch(path, ckpt)


def _resume(path: Path, resume_key: str, trainer: Trainer, state: dict[str, Any], ddp) -> dict[str, Any]:
    ckpt = resumable_checkpoint(path, resume_key)
    if ckpt is None:
        return state
    trainer.net.load_state_dict(ckpt["model"])
    trainer.optimizer.load_state_dict(ckpt["optimizer"])
    trainer.scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt, trainer.generator)
    if ddp is not None:
        rank_rng = ckpt.get("rank_rng") or []
        if len(rank_rng) == ddp.world_size:
            set_rng_state(rank_rng[ddp.rank], trainer.generator)
        elif ddp.rank:  # made with another number of processes: continue, though not as that run would have
            seed_rng(int(ckpt["state"]["epoch"]) * 1000 + ddp.rank)
    log.info("resuming from %s after epoch %d", path, ckpt["state"]["epoch"])
    return ckpt["state"]
