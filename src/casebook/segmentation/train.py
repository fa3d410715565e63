"""Patch-based training of a 3D segmentation network (TorchIO queue, MONAI loss).

Cases are read lazily from the preprocessed ``.npy`` files into a TorchIO ``Queue``,
which draws ``samples_per_volume`` patches from each case with a ``LabelSampler``: a
patch is centred on a foreground voxel with probability ``foreground_probability``
(nnU-Net oversamples foreground a third of the time: small structures such as an
enhancing rim would otherwise hardly ever be seen). The loss is Dice + cross-entropy
(MONAI's ``DiceCELoss``). After every epoch the whole validation cases are segmented by
sliding-window inference, and the checkpoint with the best mean foreground Dice is kept.
A checkpoint is written after every epoch, and a killed job (a SLURM time limit, a
preemption) resumes from it.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torchio as tio
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from casebook import provenance
from casebook.augment import build_transform
from casebook.fileio import atomic_path, read_json, write_json
from casebook.segmentation.inference import autocast, predict_logits
from casebook.segmentation.networks import build_seg_network
from casebook.segmentation.plan import model_patch_size
from casebook.segmentation.preprocess import pad_to
from casebook.train import fold_split, make_optimizer, make_scheduler, resumable_checkpoint, resume_key, save_torch, seed_everything, select_device

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds"]
CHECKPOINT, BEST = "checkpoint.pt", "best.pt"


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
    sampler = tio.LabelSampler(patch, label_name="label", label_probabilities=label_probabilities(n_classes, cfg.get("foreground_probability", 0.5)))
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


def validate(model, cases_dir: Path, case_ids: list[str], patch: list[int], n_classes: int, loss_fn, cfg: dict[str, Any], amp: bool) -> tuple[float, float]:
    """Mean loss and mean foreground Dice over whole validation cases (sliding window)."""
    dice = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=False)
    losses = []
    for case_id in case_ids:
        image = torch.from_numpy(np.load(cases_dir / f"{case_id}.npy"))[None]
        label = torch.from_numpy(np.load(cases_dir / f"{case_id}_label.npy").astype(np.int64))[None, None]
        logits = predict_logits(model, image, patch, overlap=cfg.get("sw_overlap", 0.5), sw_batch_size=cfg.get("sw_batch_size", 2), amp=amp).cpu()
        losses.append(float(loss_fn(logits, label)))
        pred = one_hot(logits.argmax(1, keepdim=True), n_classes)
        dice(pred, one_hot(label, n_classes))
    per_class = dice.aggregate()
    return float(np.mean(losses)), float(torch.nanmean(per_class))


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
) -> dict[str, Any]:
    """Train one model on one fold; return a summary (best epoch and Dice, patch size...).

    ``cfg`` holds ``network``, ``train``, ``augment``, ``segmentation`` (patch and
    sampling settings), ``seed`` and ``device``.
    """
    out_dir, cases_dir = Path(out_dir), Path(cases_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tcfg, scfg = cfg["train"], {**cfg.get("segmentation", {}), "batch_size": cfg["train"]["batch_size"]}
    seed = int(cfg.get("seed", 0))
    seed_everything(seed)
    device = select_device(cfg.get("device", "auto"))
    amp = bool(tcfg.get("amp", True))
    split = fold_split(splits, fold)
    n_classes = len(seg_plan["label_values"])
    in_channels = len(seg_plan.get("channel_names") or [0])
    patch = model_patch_size(cfg["network"], seg_plan, scfg)
    spacing = seg_plan["spacing_array_order"]
    model = build_seg_network(cfg["network"], spatial_dims=len(patch), in_channels=in_channels, out_channels=n_classes, patch_size=patch, spacing=spacing).to(device)
    split = {part: labelled(split[part], seg_plan, part) for part in ("train", "val")}
    loader = patch_loader([case_subject(cases_dir, c, patch) for c in split["train"]], patch, scfg, n_classes, build_transform(cfg.get("augment"), len(patch)))
    epochs = int(tcfg["epochs"])
    optimizer = make_optimizer(model.parameters(), tcfg)
    scheduler = make_scheduler(optimizer, tcfg, epochs)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    state = {"epoch": 0, "best_dice": -np.inf, "best_epoch": 0, "history": []}
    ckpt_path = out_dir / CHECKPOINT
    if ckpt_path.exists():
        state = _resume(ckpt_path, resume_key, model, optimizer, scheduler, state)
    if state["epoch"] == 0:
        (out_dir / BEST).unlink(missing_ok=True)
    bar = tqdm(range(state["epoch"] + 1, epochs + 1), desc=f"train fold {fold}", unit="epoch", initial=state["epoch"], total=epochs)
    for epoch in bar:
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_epoch(model, loader, optimizer, loss_fn, device, amp)
        scheduler.step()
        val_loss, val_dice = validate(model, cases_dir, split["val"], patch, n_classes, loss_fn, scfg, amp)
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice, "lr": lr, "seconds": time.perf_counter() - start}
        state["history"].append(row)
        state["epoch"] = epoch
        if val_dice > state["best_dice"]:
            state["best_dice"], state["best_epoch"] = val_dice, epoch
            save_torch(out_dir / BEST, {"state_dict": model.state_dict(), "epoch": epoch, "val_dice": val_dice, "patch_size": patch})
        _save_checkpoint(ckpt_path, resume_key, model, optimizer, scheduler, state)
        _write_history(out_dir / "history.tsv", state["history"])
        bar.set_postfix(loss=f"{train_loss:.3f}", val_dice=f"{val_dice:.3f}")
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in row.items()})
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    with atomic_path(out_dir / "model.pt") as tmp:
        shutil.copyfile(out_dir / BEST, tmp)
    state["complete"] = True  # a finished run is retrained by a forced rerun, not resumed
    _save_checkpoint(ckpt_path, resume_key, model, optimizer, scheduler, state)
    return {
        "best_epoch": state["best_epoch"],
        "best_val_dice": state["best_dice"],
        "epochs": epochs,
        "n_train": len(split["train"]),
        "n_val": len(split["val"]),
        "device": str(device),
        "patch_size": patch,
        "in_channels": in_channels,
        "n_classes": n_classes,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "seconds": float(sum(r["seconds"] for r in state["history"])),
    }


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


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(history, columns=HISTORY_COLUMNS).to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def _save_checkpoint(path, key, model, optimizer, scheduler, state) -> None:
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    save_torch(path, {"resume_key": key, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng, "state": state})


def _resume(path, key, model, optimizer, scheduler, state) -> dict[str, Any]:
    ckpt = resumable_checkpoint(path, key)
    if ckpt is None:
        return state
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    np.random.set_state(ckpt["rng"]["numpy"])
    random.setstate(ckpt["rng"]["python"])
    log.info("resuming from %s after epoch %d", path, ckpt["state"]["epoch"])
    return ckpt["state"]


def model_card(*, name: str, cfg: dict[str, Any], summary: dict[str, Any], seg_plan: dict[str, Any], versions: dict[str, str]) -> dict[str, Any]:
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
        "output": {"type": "softmax probabilities per class", "class_names": seg_plan["class_names"], "label_values": seg_plan["label_values"]},
        "training": {k: cfg["train"][k] for k in sorted(cfg["train"])},
        "augmentation": cfg.get("augment") or {},
        "metrics": {"best_val_dice": summary["best_val_dice"], "best_epoch": summary["best_epoch"]},
        "data": {"n_train": summary["n_train"], "n_val": summary["n_val"]},
        "intended_use": "Research and teaching (book case study). Not a medical device; not for clinical use.",
        "package_versions": versions,
        "device": summary["device"],
    }


def train_stage(cfg: dict[str, Any], *, cases_dir: str, plan: str, splits: str, fold: int, name: str, outputs: dict[str, str], wildcards: dict[str, str] | None = None) -> dict[str, Any]:
    """The train_seg rule: fit, then write the model card and the provenance record."""
    started, code = provenance.now(), provenance.git_state()
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
    )
    write_json(outputs["card"], model_card(name=name, cfg=cfg, summary=summary, seg_plan=seg_plan, versions=provenance.package_versions()))
    provenance.write_record(
        outputs["provenance"],
        rule="train_seg",
        inputs=[cases_dir, plan, splits],
        outputs=[outputs["model"], outputs["history"], outputs["card"]],
        config={"model": cfg, "fold": fold},
        seed=cfg.get("seed"),
        started=started,
        code=code,
        device=summary["device"],
        wildcards=wildcards,
    )
    return summary
