"""Training of a MONAI classifier on the preprocessed cache of one fold.

Deterministic on CPU (seeded, deterministic algorithms); CUDA when present. A
checkpoint is written every epoch and a rerun resumes from it (same config only);
the best epoch by validation AUC is kept as ``model.pt``; ``history.tsv`` has one row
per epoch and ``metadata.json`` is the model card. ``processes`` > 1 trains
data-parallel (DistributedDataParallel) in that many processes: see casebook.engine.distributed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from casebook import provenance
from casebook.engine import distributed
from casebook.engine.augment import build_augmentation
from casebook.engine.checkpoint import resume_key
from casebook.engine.loop import Trainer, data_parallel, run_epochs
from casebook.engine.optim import make_optimizer, make_scheduler
from casebook.engine.runtime import seed_everything, seed_rng, select_device
from casebook.fileio import read_json
from casebook.split import fold_split
from casebook.tasks import TASKS
from casebook.tasks.classification.cache import load_cache
from casebook.tasks.classification.data import CachedImages, make_loader, rows_for
from casebook.tasks.classification.networks import build_network

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_auc", "val_accuracy", "lr", "seconds"]


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
    torchrun started (see casebook.engine.distributed) this trains as one rank.
    """
    return data_parallel(
        _fit,
        cfg,
        processes,
        images_path=images_path,
        index_path=index_path,
        splits_path=splits_path,
        fold=fold,
        out_dir=out_dir,
        num_classes=num_classes,
        resume_key=resume_key,
        on_epoch_end=on_epoch_end,
    )


def _fit(cfg, *, ddp, images_path, index_path, splits_path, fold, out_dir, num_classes, resume_key, on_epoch_end) -> dict[str, Any]:
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
    train_loader, val_loader = _loaders(images, (train_rows, train_labels), (val_rows, val_labels), cfg, ddp)

    model = build_network(cfg["network"], spatial_dims=spatial_dims, in_channels=images.shape[1], num_classes=num_classes)
    model.to(device)
    if ddp:
        model = ddp.wrap(model)
        if ddp.rank:  # its own random stream for augmentation (rank 0 keeps the one-process stream)
            seed_rng(seed + ddp.rank)
    net = model.module if ddp else model  # what is saved, so that model.pt loads in one process
    epochs = int(tcfg["epochs"])
    optimizer = make_optimizer(model.parameters(), tcfg)
    weights = class_weights(train_labels, num_classes, tcfg.get("class_weights"))
    loss_fn = torch.nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))

    def one_epoch(epoch: int) -> float:
        if ddp:
            train_loader.sampler.set_epoch(epoch)  # another shuffle every epoch, the same on every rank
        return train_epoch(model, train_loader, optimizer, loss_fn, device)

    trainer = Trainer(
        net=net,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, tcfg, epochs),
        train_epoch=one_epoch,
        validate=lambda: validation_scores(net, val_loader, device),
        metric=TASKS["classification"].selection_metric,
        columns=HISTORY_COLUMNS,
        generator=train_loader.generator,
    )
    state = run_epochs(
        trainer, out_dir=out_dir, epochs=epochs, resume_key=resume_key, desc=f"train fold {fold}", on_epoch_end=on_epoch_end, ddp=ddp
    )
    if ddp and not ddp.is_main:
        return ddp.broadcast(None)  # rank 0's summary, once it has written the outputs
    summary = {
        "best_epoch": state["best_epoch"],
        "best_val_auc": state["best"],
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


def _loaders(images, train, val, cfg: dict[str, Any], ddp):
    """The training loader (this rank's shard under data parallel) and the validation loader."""
    (train_rows, train_labels), (val_rows, val_labels) = train, val
    augmentation = build_augmentation(cfg.get("augment"), images.ndim - 2)
    batch_size, workers = int(cfg["train"]["batch_size"]), int(cfg["train"].get("num_workers", 0))
    seed = int(cfg.get("seed", 0))
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
    return train_loader, make_loader(CachedImages(images, val_labels, val_rows), batch_size=batch_size * 2, shuffle=False)


def validation_scores(net, val_loader, device) -> dict[str, float]:
    """The validation columns of an epoch's history row."""
    probs, labels = predict(net, val_loader, device)
    val_loss = float(torch.nn.functional.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-8)), torch.from_numpy(labels)))
    return {"val_loss": val_loss, "val_auc": auc_score(labels, probs), "val_accuracy": float((probs.argmax(1) == labels).mean())}


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
    started, code = provenance.now(), provenance.code_state()
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
    provenance.write_training_record(
        outputs,
        card,
        inputs=inputs,
        params={"model": cfg, "preprocess": preprocess, "fold": fold},
        seed=cfg.get("seed"),
        started=started,
        code=code,
        device=summary["device"],
        wildcards=wildcards,
    )
    return summary
