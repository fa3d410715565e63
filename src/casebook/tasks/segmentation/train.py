"""Patch-based training of a 3D segmentation network (TorchIO queue, MONAI loss).

Cases are read lazily from the preprocessed ``.npy`` files into a TorchIO ``Queue``,
which draws ``samples_per_volume`` patches from each case with a ``LabelSampler``: a
patch is centred on a foreground voxel with probability ``foreground_probability``
(nnU-Net oversamples foreground a third of the time: small structures such as an
enhancing rim would otherwise hardly ever be seen). The loss is Dice + cross-entropy
(MONAI's ``DiceCELoss``; ``train.loss`` passes options to it, e.g. nnU-Net's
``{include_background: false, batch: true}``). After every epoch the whole validation
cases are segmented by sliding-window inference, and the checkpoint with the best mean
foreground Dice is kept: each class's Dice pooled over the validation cases (its voxels
counted over all of them, as nnU-Net's pseudo-Dice), so that a class absent from most
cases is not scored 1 in each of them for never being predicted.
A checkpoint is written after every epoch, and a killed job (a SLURM time limit, a
preemption) resumes from it.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torchio as tio
from monai.losses import DiceCELoss
from monai.networks.utils import one_hot
from torch.utils.data import DataLoader

from casebook import provenance
from casebook.engine import distributed
from casebook.engine.augment import build_transform
from casebook.engine.checkpoint import resume_key
from casebook.engine.loop import Trainer, data_parallel, run_epochs
from casebook.engine.optim import make_optimizer, make_scheduler
from casebook.engine.runtime import autocast, seed_everything, seed_rng, select_device
from casebook.fileio import read_json
from casebook.split import fold_split
from casebook.tasks import TASKS
from casebook.tasks.segmentation.inference import predict_logits
from casebook.tasks.segmentation.networks import build_seg_network
from casebook.tasks.segmentation.plan import model_patch_size
from casebook.tasks.segmentation.preprocess import pad_to

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds"]


def _read_npy(path, *, min_shape, value: float = 0.0):
    """TorchIO reader of a preprocessed case: (C, *spatial) tensor and an identity
    affine (patches are drawn in voxels); cases smaller than a patch are padded."""
    array = np.load(path)
    if array.ndim == len(min_shape):  # a label map: add the channel axis
        array = array[None]
    return torch.from_numpy(np.ascontiguousarray(pad_to(array, min_shape, value))), np.eye(4)


def case_subject(cases_dir: Path, case_id: str, patch: list[int]) -> tio.Subject:
    """A TorchIO subject whose image and label are loaded only when the queue needs them."""
    return tio.Subject(
        image=tio.ScalarImage(cases_dir / f"{case_id}.npy", reader=partial(_read_npy, min_shape=patch)),
        label=tio.LabelMap(cases_dir / f"{case_id}_label.npy", reader=partial(_read_npy, min_shape=patch)),
        case_id=case_id,
    )


def labelled(case_ids: list[str], seg_plan: dict[str, Any], part: str) -> list[str]:
    """The cases that have a label map (an unlabelled one cannot be trained or validated on)."""
    kept = [c for c in case_ids if seg_plan["cases"][c]["has_label"]]
    if len(kept) < len(case_ids):
        log.warning("%d %s case(s) have no label map and are left out", len(case_ids) - len(kept), part)
    if not kept:
        raise ValueError(f"no {part} case has a label map: nothing to {'train' if part == 'train' else 'validate'} on")
    return kept


def label_probabilities(n_classes: int, foreground_probability: float) -> dict[int, float]:
    """Patch-centre probabilities: background, and the foreground share split evenly
    among the foreground classes (a rare class is centred on as often as a large one)."""
    fg = float(foreground_probability)
    return {0: 1.0 - fg, **{k: fg / (n_classes - 1) for k in range(1, n_classes)}}


def patch_loader(subjects: list[tio.Subject], patch: list[int], cfg: dict[str, Any], n_classes: int, transform) -> DataLoader:
    """Batches of patches from a TorchIO queue (one epoch = samples_per_volume patches
    of every training case)."""
    per_volume = int(cfg.get("samples_per_volume", 8))
    sampler = tio.LabelSampler(
        patch, label_name="label", label_probabilities=label_probabilities(n_classes, cfg.get("foreground_probability", 0.5))
    )
    queue = tio.Queue(
        tio.SubjectsDataset(subjects, transform=transform),
        max_length=max(per_volume, int(cfg.get("queue_length", 4 * per_volume))),
        samples_per_volume=per_volume,
        sampler=sampler,
        num_workers=0,  # workers would each re-seed; a small CPU run gains nothing from them
        shuffle_subjects=True,
        shuffle_patches=True,
        # no draw from the random stream at construction: a resumed run restores the
        # stream after building the loader, and must draw exactly what the first run drew
        start_background=False,
    )
    return DataLoader(queue, batch_size=int(cfg["batch_size"]), num_workers=0)  # the queue does the loading


def train_epoch(model, loader, optimizer, loss_fn, device, amp: bool) -> float:
    model.train()
    total, count = 0.0, 0
    for batch in loader:
        image = batch["image"][tio.DATA].to(device)
        label = batch["label"][tio.DATA].to(device).long()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = loss_fn(model(image), label)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(image)
        count += len(image)
    return total / max(count, 1)


def pooled_dice(counts: np.ndarray) -> float:
    """Mean over the foreground classes of each class's Dice pooled over the validation
    cases; ``counts`` is (K, 3): true positives, false positives and false negatives per
    class, summed over the cases. A class with no voxel in truth or prediction is left
    out (none at all scores 1); a class never predicted scores 0 however many cases
    lack it."""
    tp, fp, fn = counts[1:, 0], counts[1:, 1], counts[1:, 2]
    seen = (tp + fp + fn) > 0
    if not seen.any():  # no foreground in truth or prediction: nothing was missed
        return 1.0
    return float(np.mean(2 * tp[seen] / (2 * tp[seen] + fp[seen] + fn[seen])))


def validate(
    model, cases_dir: Path, case_ids: list[str], patch: list[int], n_classes: int, loss_fn, cfg: dict[str, Any], amp: bool
) -> tuple[float, float]:
    """Mean loss, and the pooled foreground Dice (:func:`pooled_dice`), over whole
    validation cases (sliding window).

    Voxel counts, not MONAI's ``DiceMetric``: its per-case Dice (a class absent from a
    case and from its prediction scores 1) kept the checkpoints that never predicted a
    rare lesion, and under data parallel (only rank 0 validates) its ``aggregate`` waits
    for the other ranks to gather their absent buffers."""
    counts = np.zeros((n_classes, 3), dtype=np.int64)
    losses = []
    for case_id in case_ids:
        image = torch.from_numpy(np.load(cases_dir / f"{case_id}.npy"))[None]
        label = torch.from_numpy(np.load(cases_dir / f"{case_id}_label.npy").astype(np.int64))[None, None]
        logits = predict_logits(
            model, image, patch, overlap=cfg.get("sw_overlap", 0.5), sw_batch_size=cfg.get("sw_batch_size", 2), amp=amp
        ).cpu()
        losses.append(float(loss_fn(logits, label)))
        pred = one_hot(logits.argmax(1, keepdim=True), n_classes).bool()
        truth = one_hot(label, n_classes).bool()
        dims = [0, *range(2, truth.dim())]
        counts += torch.stack([(pred & truth).sum(dims), (pred & ~truth).sum(dims), (~pred & truth).sum(dims)], dim=1).numpy()
    return float(np.mean(losses)), pooled_dice(counts)


def fit(
    cfg: dict[str, Any],
    *,
    cases_dir: str | Path,
    seg_plan: dict[str, Any],
    splits: dict[str, Any],
    fold: int,
    out_dir: str | Path,
    resume_key: str = "",
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """Train one model on one fold; return a summary (best epoch and Dice, patch size...).

    ``cfg`` holds ``network``, ``train``, ``augment``, ``segmentation`` (patch and
    sampling settings), ``seed`` and ``device``. ``processes`` > 1 trains data-parallel
    in that many processes (one GPU each on CUDA): each rank draws its patches from its
    own share of the training cases, ``batch_size // processes`` per batch, and rank 0
    validates on the whole validation cases and writes every file.
    """
    kwargs = dict(cases_dir=cases_dir, seg_plan=seg_plan, splits=splits, fold=fold, out_dir=out_dir)
    return data_parallel(_fit, cfg, processes, resume_key=resume_key, on_epoch_end=on_epoch_end, **kwargs)


def _fit(cfg, *, ddp, cases_dir, seg_plan, splits, fold, out_dir, resume_key, on_epoch_end) -> dict[str, Any]:
    """:func:`fit` in one process, or as one rank of a data-parallel run (``ddp``)."""
    out_dir, cases_dir = Path(out_dir), Path(cases_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tcfg, scfg = cfg["train"], {**cfg.get("segmentation", {}), "batch_size": cfg["train"]["batch_size"]}
    seed = int(cfg.get("seed", 0))
    seed_everything(seed)
    device = ddp.device if ddp else select_device(cfg.get("device", "auto"))
    amp = bool(tcfg.get("amp", True))
    split = fold_split(splits, fold)
    n_classes = len(seg_plan["label_values"])
    in_channels = len(seg_plan.get("channel_names") or [0])
    patch = model_patch_size(cfg["network"], seg_plan, scfg)
    spacing = seg_plan["spacing_array_order"]
    model = build_seg_network(
        cfg["network"], spatial_dims=len(patch), in_channels=in_channels, out_channels=n_classes, patch_size=patch, spacing=spacing
    ).to(device)
    split = {part: labelled(split[part], seg_plan, part) for part in ("train", "val")}
    train_ids = split["train"]
    if ddp:  # this rank's share of the cases and of each batch
        train_ids = rank_share(train_ids, ddp.rank, ddp.world_size)
        scfg["batch_size"] = per_rank_batch(int(scfg["batch_size"]), ddp.world_size)
        model = ddp.wrap(model)
        if ddp.rank:  # its own random stream for patches and augmentation (rank 0 keeps the one-process stream)
            seed_rng(seed + ddp.rank)
    net = model.module if ddp else model
    subjects = [case_subject(cases_dir, c, patch) for c in train_ids]
    loader = patch_loader(subjects, patch, scfg, n_classes, build_transform(cfg.get("augment"), len(patch)))
    epochs = int(tcfg["epochs"])
    optimizer = make_optimizer(model.parameters(), tcfg)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, **(tcfg.get("loss") or {}))

    def validation_scores() -> dict[str, float]:
        val_loss, val_dice = validate(net, cases_dir, split["val"], patch, n_classes, loss_fn, scfg, amp)
        return {"val_loss": val_loss, "val_dice": val_dice}

    trainer = Trainer(
        net=net,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, tcfg, epochs),
        train_epoch=lambda epoch: train_epoch(model, loader, optimizer, loss_fn, device, amp),
        validate=validation_scores,
        metric=TASKS["segmentation"].selection_metric,
        columns=HISTORY_COLUMNS,
        best_extra={"patch_size": patch},
    )
    state = run_epochs(
        trainer, out_dir=out_dir, epochs=epochs, resume_key=resume_key, desc=f"train fold {fold}", on_epoch_end=on_epoch_end, ddp=ddp
    )
    if ddp and not ddp.is_main:
        return ddp.broadcast(None)  # rank 0's summary, once it has written the outputs
    summary = {
        "best_epoch": state["best_epoch"],
        "best_val_dice": state["best"],
        "epochs": epochs,
        "n_train": len(split["train"]),
        "n_val": len(split["val"]),
        "device": str(device),
        "patch_size": patch,
        "in_channels": in_channels,
        "n_classes": n_classes,
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "seconds": float(sum(r["seconds"] for r in state["history"])),
    }
    if ddp:
        summary.update(device=device.type, processes=ddp.world_size)
        return ddp.broadcast(summary)
    return summary


def rank_share(case_ids: list[str], rank: int, world_size: int) -> list[str]:
    """Rank ``rank``'s cases: every ``world_size``-th, the list first repeated up to a
    multiple of ``world_size`` (as torch's DistributedSampler pads), so that every rank
    runs the same number of steps (a rank with fewer would leave the others waiting)."""
    padded = case_ids + case_ids[: (-len(case_ids)) % world_size]
    return padded[rank::world_size]


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """Patches per rank and step, so that one step of all ranks sees ``batch_size``."""
    if batch_size < world_size:
        raise ValueError(f"batch_size {batch_size} is smaller than the {world_size} processes")
    return batch_size // world_size


def load_seg_model(path: str | Path, network: dict[str, Any], seg_plan: dict[str, Any], device="cpu") -> tuple[torch.nn.Module, list[int]]:
    """The best weights saved by :func:`fit`, and the patch size they were trained on."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    patch = [int(p) for p in ckpt["patch_size"]]
    model = build_seg_network(
        network,
        spatial_dims=len(patch),
        in_channels=len(seg_plan.get("channel_names") or [0]),
        out_channels=len(seg_plan["label_values"]),
        patch_size=patch,
        spacing=seg_plan["spacing_array_order"],
    )
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), patch


def model_card(
    *, name: str, cfg: dict[str, Any], summary: dict[str, Any], seg_plan: dict[str, Any], versions: dict[str, str]
) -> dict[str, Any]:
    """The ``metadata.json`` model card of a segmentation model (as a MONAI bundle's)."""
    return {
        "name": name,
        "version": "1",
        "task": "segmentation",
        "network": cfg["network"],
        "parameters": summary["parameters"],
        "input": {
            "channels": seg_plan.get("channel_names", []),
            "patch_size": summary["patch_size"],
            "spacing_mm": seg_plan["spacing"],
            "format": "float32 tensor (C, z, y, x), SimpleITK array order, canonical LPS orientation",
            "preprocessing": {
                "orientation": "LPS",
                "crop": f"region of interest + {cfg.get('segmentation', {}).get('crop_margin', 2)} voxels",
                "spacing_mm": seg_plan["spacing"],
                "intensity": seg_plan["intensity"],
            },
        },
        "output": {
            "type": "softmax probabilities per class",
            "class_names": seg_plan["class_names"],
            "label_values": seg_plan["label_values"],
        },
        "training": {k: cfg["train"][k] for k in sorted(cfg["train"])},
        "augmentation": cfg.get("augment") or {},
        "metrics": {"best_val_dice": summary["best_val_dice"], "best_epoch": summary["best_epoch"]},
        "data": {"n_train": summary["n_train"], "n_val": summary["n_val"]},
        "intended_use": "Research and teaching (book case study). Not a medical device; not for clinical use.",
        "package_versions": versions,
        "device": summary["device"],
        "processes": summary.get("processes", 1),  # data-parallel ranks (one per GPU)
    }


def train_stage(
    cfg: dict[str, Any],
    *,
    cases_dir: str,
    plan: str,
    splits: str,
    fold: int,
    name: str,
    outputs: dict[str, str],
    wildcards: dict[str, str] | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """The train rule of a segmentation case study: fit, then write the model card and
    the provenance record. ``processes`` > 1: data-parallel training, see :func:`fit`."""
    started, code = provenance.now(), provenance.code_state()
    seg_plan = read_json(plan)
    # the cases folder too: new intensities with the same shapes must not resume a checkpoint
    sums = {str(p): provenance.input_digest(p) for p in (cases_dir, plan, splits)}
    summary = fit(
        cfg,
        cases_dir=cases_dir,
        seg_plan=seg_plan,
        splits=read_json(splits),
        fold=fold,
        out_dir=Path(outputs["model"]).parent,
        resume_key=resume_key({k: v for k, v in cfg.items() if k != "device"}, fold, sums),
        processes=processes,
    )
    if not distributed.is_main_process():  # under torchrun: rank 0 writes the card and record
        return summary
    provenance.write_training_record(
        outputs,
        model_card(name=name, cfg=cfg, summary=summary, seg_plan=seg_plan, versions=provenance.package_versions()),
        inputs=[cases_dir, plan, splits],
        params={"model": cfg, "fold": fold},
        seed=cfg.get("seed"),
        started=started,
        code=code,
        device=summary["device"],
        wildcards=wildcards,
    )
    return summary
