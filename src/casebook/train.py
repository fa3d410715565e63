"""Training of a MONAI classifier on the preprocessed cache of one fold.

Deterministic on CPU (seeded, deterministic algorithms); CUDA when present. A
checkpoint is written every epoch and a rerun resumes from it (same config only);
the best epoch by validation AUC is kept as ``model.pt``; ``history.tsv`` has one row
per epoch and ``metadata.json`` is the model card. ``processes`` > 1 trains
data-parallel (DistributedDataParallel) in that many processes: see casebook.distributed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from monai.utils import set_determinism
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from casebook import distributed, provenance
from casebook.augment import build_augmentation
from casebook.data import CachedImages, make_loader, rows_for
from casebook.fileio import atomic_path, read_json, write_json
from casebook.models import build_network
from casebook.preprocess import load_cache

log = logging.getLogger(__name__)

# Neither is a Snakemake output, so a failed or killed job keeps them for its rerun;
# model.pt (an output, deleted by Snakemake when a job fails) is copied from BEST at the end.
CHECKPOINT = "last_checkpoint.pt"
BEST = "best_checkpoint.pt"
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_auc", "val_accuracy", "lr", "seconds"]


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch and ask for deterministic algorithms.

    On CUDA, cuBLAS needs CUBLAS_WORKSPACE_CONFIG for determinism, and some kernels
    (e.g. 3D adaptive pooling backward) have no deterministic version: those warn
    instead of failing, so GPU runs are reproducible only up to such kernels.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_determinism(seed=seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    random.seed(seed)
    np.random.seed(seed)


def make_optimizer(params, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    name = cfg.get("optimizer", "adam").lower()
    lr, wd = float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=float(cfg.get("momentum", 0.9)), nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: dict[str, Any], epochs: int):
    """``multistep`` (milestones as fractions of the epochs, as MedMNIST does), ``cosine`` or ``none``."""
    sched = cfg.get("schedule", {"name": "none"})
    name = sched.get("name", "none")
    if name == "multistep":
        milestones = [round(f * epochs) for f in sched.get("milestones", [0.5, 0.75])]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=sched.get("gamma", 0.1))
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"unknown schedule {name!r}")


def auc_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC (one-vs-rest macro for more than two classes); NaN if only one class."""
    if len(np.unique(labels)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    return float(roc_auc_score(labels, probs, multi_class="ovr", labels=list(range(probs.shape[1]))))


def train_epoch(model, loader, optimizer, loss_fn, device) -> float:
    model.train()
    total, n = 0.0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        n += len(y)
    return total / max(n, 1)


@torch.no_grad()
def predict(model, loader, device) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and labels over a loader."""
    model.eval()
    probs, labels = [], []
    for x, y in loader:
        probs.append(torch.softmax(model(x.to(device)), dim=1).float().cpu().numpy())
        labels.append(y.numpy())
    return np.concatenate(probs), np.concatenate(labels)


def class_weights(labels: np.ndarray, num_classes: int, mode: str | None) -> torch.Tensor | None:
    """``balanced`` weights (n / (k * n_c)), as scikit-learn defines them, or None."""
    if not mode:
        return None
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    return torch.tensor(len(labels) / (num_classes * np.maximum(counts, 1)), dtype=torch.float32)


def fit(
    cfg: dict[str, Any],
    *,
    images_path: str | Path,
    index_path: str | Path,
    splits_path: str | Path,
    fold: int,
    out_dir: str | Path,
    num_classes: int,
    resume_key: str = "",
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """Train one model on one fold; return a summary (best epoch, best val AUC, ...).

    ``cfg`` holds ``network``, ``train`` and ``augment`` of the case study plus ``seed``
    and ``device``. ``resume_key`` identifies the config and data: a checkpoint made
    under another key is ignored rather than resumed.

    ``processes`` > 1 trains data-parallel in that many worker processes (one GPU each
    on CUDA): each sees its shard of every epoch with ``batch_size // processes`` per
    batch, rank 0 validates on the whole validation set and writes every file, and
    ``on_epoch_end`` runs in rank 0 (so it must be picklable). In a process that
    torchrun started (see casebook.distributed) this trains as one rank.
    """
    if processes > 1 and not distributed.is_worker():
        kwargs = dict(images_path=images_path, index_path=index_path, splits_path=splits_path, fold=fold, out_dir=out_dir)
        kwargs.update(num_classes=num_classes, resume_key=resume_key, on_epoch_end=on_epoch_end, processes=processes)
        return distributed.launch(fit, processes, (cfg,), kwargs)  # each worker calls fit as one rank
    ddp = distributed.init(processes, select_device(cfg.get("device", "auto"))) if distributed.is_worker() else None
    try:
        return _fit(
            cfg,
            images_path=images_path,
            index_path=index_path,
            splits_path=splits_path,
            fold=fold,
            out_dir=out_dir,
            num_classes=num_classes,
            resume_key=resume_key,
            on_epoch_end=on_epoch_end,
            ddp=ddp,
        )
    finally:
        if ddp is not None:
            ddp.close()


def _fit(cfg, *, images_path, index_path, splits_path, fold, out_dir, num_classes, resume_key, on_epoch_end, ddp) -> dict[str, Any]:
    """:func:`fit` in one process, or as one rank of a data-parallel run (``ddp``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tcfg = cfg["train"]
    seed = int(cfg.get("seed", 0))
    seed_everything(seed)
    device = ddp.device if ddp else select_device(cfg.get("device", "auto"))

    images, _ = load_cache(images_path)
    index = pd.read_csv(index_path, sep="\t", dtype={"image_id": str, "patient_id": str})
    split = fold_split(read_json(splits_path), fold, splits_path)
    spatial_dims = images.ndim - 2
    train_rows, train_labels = rows_for(index, split["train"])
    val_rows, val_labels = rows_for(index, split["val"])

    augmentation = build_augmentation(cfg.get("augment"), spatial_dims)
    batch_size, workers = int(tcfg["batch_size"]), int(tcfg.get("num_workers", 0))
    train_data = CachedImages(images, train_labels, train_rows, augmentation)
    if ddp:  # this rank's shard, batch_size // processes per batch
        train_loader = ddp.loader(train_data, batch_size=batch_size, seed=seed, num_workers=workers)
    else:
        train_loader = make_loader(
            train_data,
            batch_size=batch_size,
            shuffle=True,
            seed=seed,
            num_workers=workers,
            drop_last=len(train_rows) > batch_size,  # a batch of one breaks batch norm
        )
    val_loader = make_loader(CachedImages(images, val_labels, val_rows), batch_size=batch_size * 2, shuffle=False)

    model = build_network(cfg["network"], spatial_dims=spatial_dims, in_channels=images.shape[1], num_classes=num_classes)
    model.to(device)
    if ddp:
        model = ddp.wrap(model)
        if ddp.rank:  # its own random stream for augmentation (rank 0 keeps the one-process stream)
            _seed_rng(seed + ddp.rank)
    net = model.module if ddp else model  # what is saved, so that model.pt loads in one process
    epochs = int(tcfg["epochs"])
    optimizer = make_optimizer(model.parameters(), tcfg)
    scheduler = make_scheduler(optimizer, tcfg, epochs)
    weights = class_weights(train_labels, num_classes, tcfg.get("class_weights"))
    loss_fn = torch.nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))

    state = {"epoch": 0, "best_auc": -np.inf, "best_epoch": 0, "history": []}
    ckpt_path = out_dir / CHECKPOINT
    if ckpt_path.exists():
        state = _resume(ckpt_path, resume_key, net, optimizer, scheduler, train_loader, state, ddp)
    if state["epoch"] == 0 and (ddp is None or ddp.is_main):  # a fresh start must not inherit a best model of an earlier run
        (out_dir / BEST).unlink(missing_ok=True)

    bar = tqdm(
        range(state["epoch"] + 1, epochs + 1),
        desc=f"train fold {fold}",
        unit="epoch",
        initial=state["epoch"],
        total=epochs,
        disable=bool(ddp and not ddp.is_main),
    )
    for epoch in bar:
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        rank_rng = None
        if ddp:
            train_loader.sampler.set_epoch(epoch)  # another shuffle every epoch, the same on every rank
        train_loss = train_epoch(model, train_loader, optimizer, loss_fn, device)
        scheduler.step()
        if ddp:
            train_loss = ddp.mean(train_loss)  # equal shards: the mean over the whole epoch
            rank_rng = ddp.gather(_rng_state(train_loader))  # every rank's, to resume exactly
            if not ddp.is_main:  # rank 0 validates and writes the files meanwhile
                ddp.barrier()
                continue
        probs, labels = predict(net, val_loader, device)
        val_loss = float(torch.nn.functional.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-8)), torch.from_numpy(labels)))
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_auc": auc_score(labels, probs),
            "val_accuracy": float((probs.argmax(1) == labels).mean()),
            "lr": lr,
            "seconds": time.perf_counter() - start,
        }
        state["history"].append(row)
        state["epoch"] = epoch
        if row["val_auc"] > state["best_auc"]:
            state["best_auc"], state["best_epoch"] = row["val_auc"], epoch
            save_torch(out_dir / BEST, {"state_dict": net.state_dict(), "epoch": epoch, "val_auc": row["val_auc"]})
        _save_checkpoint(ckpt_path, resume_key, net, optimizer, scheduler, train_loader, state, rank_rng)
        _write_history(out_dir / "history.tsv", state["history"])
        bar.set_postfix(loss=f"{train_loss:.3f}", val_auc=f"{row['val_auc']:.3f}")
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in row.items()})
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if ddp:
            ddp.barrier()

    if ddp and not ddp.is_main:
        return ddp.broadcast(None)  # rank 0's summary, once it has written the outputs
    if not (out_dir / BEST).exists():  # every validation AUC was NaN (one class only)
        save_torch(out_dir / BEST, {"state_dict": net.state_dict(), "epoch": state["epoch"], "val_auc": float("nan")})
    with atomic_path(out_dir / "model.pt") as tmp:
        shutil.copyfile(out_dir / BEST, tmp)
    # a finished run is not resumed: a forced rerun (snakemake --forcerun train) retrains
    state["complete"] = True
    _save_checkpoint(ckpt_path, resume_key, net, optimizer, scheduler, train_loader, state)
    _write_history(out_dir / "history.tsv", state["history"])
    summary = {
        "best_epoch": state["best_epoch"],
        "best_val_auc": state["best_auc"],
        "epochs": epochs,
        "n_train": len(train_rows),
        "n_val": len(val_rows),
        "device": str(device),
        "input_shape": list(images.shape[1:]),
        "spatial_dims": spatial_dims,
        "seconds": float(sum(r["seconds"] for r in state["history"])),
    }
    if ddp:
        summary.update(device=device.type, processes=ddp.world_size)
        return ddp.broadcast(summary)
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


def save_torch(path: Path, obj: Any) -> None:
    """torch.save, atomically (a killed job leaves the previous file, never half of one)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)



def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(history, columns=HISTORY_COLUMNS).to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def _save_checkpoint(path, resume_key, model, optimizer, scheduler, loader, state, rank_rng=None) -> None:
    ckpt = {
        "resume_key": resume_key,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        **_rng_state(loader),
        "state": state,
    }
    if rank_rng is not None:  # data-parallel: the random state of every rank
        ckpt["rank_rng"] = rank_rng
    save_torch(path, ckpt)


def _rng_state(loader) -> dict[str, Any]:
    return {
        "loader_generator": loader.generator.get_state(),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }


def _set_rng_state(saved: dict[str, Any], loader) -> None:
    loader.generator.set_state(saved["loader_generator"])
    torch.set_rng_state(saved["rng"]["torch"])
    np.random.set_state(saved["rng"]["numpy"])
    random.setstate(saved["rng"]["python"])


def _seed_rng(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def resumable_checkpoint(path, resume_key: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` when it may be resumed: made under ``resume_key`` (the
    same config and data) by a run that did not finish; else None, saying why."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("resume_key") != resume_key:
        log.warning("%s was made with another config or data; starting afresh", path)
        return None
    if ckpt["state"].get("complete"):
        log.info("%s is from a finished run; training afresh", path)
        return None
    return ckpt


def _resume(path, resume_key, model, optimizer, scheduler, loader, state, ddp=None) -> dict[str, Any]:
    ckpt = resumable_checkpoint(path, resume_key)
    if ckpt is None:
        return state
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    _set_rng_state(ckpt, loader)
    if ddp is not None:
        rank_rng = ckpt.get("rank_rng") or []
        if len(rank_rng) == ddp.world_size:
            _set_rng_state(rank_rng[ddp.rank], loader)
        elif ddp.rank:  # made with another number of processes: continue, though not as that run would have
            _seed_rng(int(ckpt["state"]["epoch"]) * 1000 + ddp.rank)
    log.info("resuming from %s after epoch %d", path, ckpt["state"]["epoch"])
    return ckpt["state"]


def load_model(path: str | Path, network: dict[str, Any], *, spatial_dims: int, in_channels: int, num_classes: int, device="cpu"):
    """Rebuild a network from the config and load the best weights saved by :func:`fit`."""
    model = build_network(network, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes)
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()


def model_card(
    *, name: str, cfg: dict[str, Any], summary: dict[str, Any], class_names: list[str], preprocess: dict[str, Any], versions: dict[str, str]
) -> dict[str, Any]:
    """The ``metadata.json`` model card, in the spirit of a MONAI bundle's."""
    return {
        "name": name,
        "version": "1",
        "task": "classification",
        "network": cfg["network"],
        "input": {
            "shape": summary["input_shape"],
            "spatial_dims": summary["spatial_dims"],
            "format": "float32 tensor (C, *spatial) in SimpleITK array order",
            "preprocessing": preprocess,
        },
        "output": {"type": "softmax probabilities", "class_names": class_names},
        "training": {k: cfg["train"][k] for k in sorted(cfg["train"])},
        "augmentation": cfg.get("augment") or {},
        "metrics": {
            "best_val_auc": summary["best_val_auc"] if np.isfinite(summary["best_val_auc"]) else None,
            "best_epoch": summary["best_epoch"],
        },
        "data": {"n_train": summary["n_train"], "n_val": summary["n_val"]},
        "intended_use": "Research and teaching (book case study). Not a medical device; not for clinical use.",
        "package_versions": versions,
        "device": summary["device"],
        "processes": summary.get("processes", 1),  # data-parallel ranks (one per GPU)
    }


def resume_key(cfg: dict[str, Any], fold: int, data_checksums: dict[str, str]) -> str:
    """What a checkpoint must have been made under to be resumed: config, fold and data."""
    return hashlib.sha256(json.dumps([cfg, fold, data_checksums], sort_keys=True, default=str).encode()).hexdigest()


def train_stage(
    cfg: dict[str, Any],
    *,
    images: str,
    index: str,
    splits: str,
    dataset_dir: str,
    fold: int,
    name: str,
    class_names: list[str],
    preprocess: dict[str, Any],
    outputs: dict[str, str],
    wildcards: dict[str, str] | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """The train rule: fit, then write the model card and the provenance record.

    ``processes`` > 1: data-parallel training (e.g. the rule's ``gpu`` resource), see :func:`fit`.
    """
    started, code = provenance.now(), provenance.git_state()
    inputs = [images, index, splits, str(Path(dataset_dir) / "manifest.tsv")]
    sums = provenance.checksums(inputs)
    out_dir = Path(outputs["model"]).parent
    summary = fit(
        cfg,
        images_path=images,
        index_path=index,
        splits_path=splits,
        fold=fold,
        out_dir=out_dir,
        num_classes=len(class_names),
        # the device is where it runs, not what it computes: a GPU run may resume a CPU one
        resume_key=resume_key({k: v for k, v in cfg.items() if k != "device"}, fold, sums),
        processes=processes,
    )
    if not distributed.is_main_process():  # under torchrun: rank 0 writes the card and record
        return summary
    versions = provenance.package_versions()
    card = model_card(name=name, cfg=cfg, summary=summary, class_names=class_names, preprocess=preprocess, versions=versions)
    write_json(outputs["card"], card)
    provenance.write_record(
        outputs["provenance"],
        rule="train",
        inputs=inputs,
        outputs=[outputs["model"], outputs["history"], outputs["card"]],
        config={"model": cfg, "preprocess": preprocess, "fold": fold},
        seed=cfg.get("seed"),
        started=started,
        code=code,
        device=summary["device"],
        wildcards=wildcards,
    )
    return summary
