"""Training a detector on the shared engine's epoch loop (:mod:`casebook.engine.loop`).

The centre-point detector learns the heatmap by CenterNet's focal loss plus the L1 of
its log sizes at the centres; the U-Net of ``unet_components`` learns the findings'
ellipsoids by masked Dice plus weighted cross-entropy; MONAI's RetinaNet learns its
anchors' classes and box regressions (:mod:`.retina`). Excluded findings weigh nothing.
Volumes are flipped at random along every axis; with ``detection.patch`` set, each
volume is cropped to a patch that holds a finding with probability
``detection.positive_fraction`` (read from the memory-mapped volume, its targets made
for the patch alone). The best epoch is the one with the highest CPM on the
fold's validation volumes (:mod:`.froc`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss

from casebook import provenance
from casebook.engine import checkpoint
from casebook.engine.loop import Trainer, run_epochs
from casebook.engine.optim import make_optimizer, make_scheduler
from casebook.engine.runtime import seed_everything, select_device
from casebook.fileio import read_json
from casebook.split import fold_split
from casebook.tasks.detection.heatmap import box_masks, focal_loss, size_loss, targets
from casebook.tasks.detection.networks import build_detector, candidates, divisor
from casebook.tasks.detection.retina import retina_batch, retina_item, retina_loss
from casebook.tasks.detection.volumes import Volumes, load_volumes

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_cpm", "lr", "seconds"]
OUTPUT_TYPES = {
    "centre_point": "centre-point heatmap (sigmoid) and log sizes (voxels) per axis",
    "unet_components": "background and finding logits (softmax); candidates are connected components",
    "retinanet": "MONAI RetinaNet: per-anchor finding logits and box regressions on an FPN; candidates are its selected boxes",
}


def _window(shape: tuple[int, ...], centres: np.ndarray, patch: list[int] | None, positive: bool, rng: np.random.Generator) -> np.ndarray:
    """The start of a patch (zeros and the whole volume without ``patch``): around a random
    finding when ``positive``, anywhere otherwise."""
    if not patch or all(n <= p for n, p in zip(shape, patch)):
        return np.zeros(len(shape), int)
    size = np.minimum(patch, shape)
    if positive and len(centres):
        centre = centres[rng.integers(len(centres))] + rng.uniform(-0.3, 0.3, len(shape)) * size
        return np.clip(np.rint(centre - size / 2).astype(int), 0, np.array(shape) - size)
    return np.array([rng.integers(0, n - s + 1) for n, s in zip(shape, size)])


def training_item(kind: str, image: np.ndarray, boxes: np.ndarray, patch: list[int] | None, positive: bool, rng: np.random.Generator):
    """One volume's (or patch's) image (1, *shape) with its targets; only the patch is
    read from a memory-mapped volume, and the targets are made for it alone."""
    nd = image.ndim
    centres, sizes, excluded = boxes[:, :nd], boxes[:, nd : 2 * nd], boxes[:, 2 * nd] > 0.5
    start = _window(image.shape, centres[~excluded], patch, positive, rng)
    stop = start + (np.minimum(patch, image.shape) if patch else np.array(image.shape))
    crop = np.asarray(image[tuple(slice(a, b) for a, b in zip(start, stop))], np.float32)
    if patch:  # a volume smaller than the patch along an axis: padded at its far end, so patches stack
        crop = np.pad(crop, [(0, max(0, p - n)) for n, p in zip(crop.shape, patch)])
    if kind == "retinanet":
        return retina_item(crop, boxes, start, start + np.array(crop.shape))
    make = targets if kind == "centre_point" else box_masks
    return {"image": crop[None], **make(crop.shape, centres - start, sizes, excluded)}


def _batch(items: list[dict[str, np.ndarray]], flips: np.ndarray) -> dict[str, torch.Tensor]:
    """Stack the items, each flipped along the axes ``flips`` marks (sizes are symmetric)."""
    out: dict[str, list[np.ndarray]] = {}
    for item, flip in zip(items, flips):
        axes = tuple(1 + a for a in np.flatnonzero(flip))
        for key, value in item.items():
            out.setdefault(key, []).append(np.flip(value, axes) if axes else value)
    try:
        return {k: torch.from_numpy(np.ascontiguousarray(np.stack(v))) for k, v in out.items()}
    except ValueError:
        raise ValueError("volumes of different shapes cannot be batched: train on patches (detection.patch) or with batch_size 1") from None


def detection_loss(kind: str, output: torch.Tensor, batch: dict[str, torch.Tensor], dice: MaskedDiceLoss) -> torch.Tensor:
    if kind == "centre_point":
        return focal_loss(output[:, :1], batch["heatmap"], batch["weight"]) + size_loss(output[:, 1:], batch["size"], batch["size_weight"])
    label = batch["label"].long()
    ce = (F.cross_entropy(output, label[:, 0], reduction="none") * batch["weight"][:, 0]).mean()
    return dice(output, label, mask=batch["weight"]) + ce


def batch_loss(kind: str, model, items: list[dict], flips: np.ndarray, dice: MaskedDiceLoss, device, *, validation: bool = False):
    """The loss of one batch of :func:`training_item` s, each flipped along the axes
    ``flips`` marks (``validation``: RetinaNet's losses with its network in evaluation mode)."""
    if kind == "retinanet":
        images, boxes = retina_batch(items, flips)
        return retina_loss(model, images.to(device), boxes, validation=validation)
    b = {k: v.to(device) for k, v in _batch(items, flips).items()}
    return detection_loss(kind, model(b["image"]), b, dice)


def scan_candidates(model, kind: str, volumes: Volumes, settings: dict[str, Any]) -> list[list[tuple[float, np.ndarray, np.ndarray]]]:
    """Every volume's candidates in world mm: (score, centre, size)."""
    model.eval()
    out = []
    for i, image in enumerate(volumes.images):
        out.append([(s, volumes.to_world(i, c), volumes.size_to_world(i, z)) for s, c, z in candidates(model, kind, image, settings)])
    return out


def validation_cpm(model, kind: str, volumes: Volumes, boxes: dict[str, list], settings: dict[str, Any]) -> float:
    from casebook.tasks.detection.froc import cpm, match_scan

    scans = [
        match_scan(vid, pid, [(s, c) for s, c, _ in cands], boxes.get(vid, []))
        for vid, pid, cands in zip(volumes.ids, volumes.patients, scan_candidates(model, kind, volumes, settings))
    ]
    return cpm(scans) if sum(len(s.finding_scores) for s in scans) else float("nan")


def fit(
    cfg: dict[str, Any],
    train: Volumes,
    val: Volumes,
    val_boxes: dict[str, list],
    settings: dict[str, Any],
    out_dir: str | Path,
    *,
    resume_key: str = "",
):
    """Train ``cfg['network']`` with ``cfg['train']``; write the engine's files into
    ``out_dir``; return the best epoch and its validation CPM."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tcfg, kind = cfg["train"], cfg["network"]["name"]
    seed = int(cfg.get("seed", 0))
    seed_everything(seed)
    device = select_device(cfg.get("device", "auto"))
    step = divisor(cfg["network"])
    if settings.get("patch") and any(p % step for p in settings["patch"]):
        raise ValueError(f"detection.patch {settings['patch']} must be a multiple of the network's total stride {step} along every axis")
    for image in train.images + val.images:
        if any(n % step for n in image.shape):
            raise ValueError(
                f"volume shape {image.shape} is not a multiple of the network's total stride {step}: set detection.pad_to to it"
            )
    model = build_detector(cfg["network"], train.ndim).to(device)
    optimizer = make_optimizer(model.parameters(), tcfg)
    epochs, batch = int(tcfg["epochs"]), int(tcfg["batch_size"])
    nd = train.ndim
    dice = MaskedDiceLoss(softmax=True, to_onehot_y=True)
    generator = torch.Generator().manual_seed(seed)
    patch, positive = settings.get("patch"), float(settings["positive_fraction"])

    def train_epoch(epoch: int) -> float:
        model.train()
        total = 0.0
        # crops and flips from a stream of the epoch's own: a resumed run draws what the
        # first run would have (the engine's checkpoint keeps torch's generator, not this)
        rng = np.random.default_rng([seed, epoch])
        for idx in torch.randperm(len(train), generator=generator).split(batch):
            crops = [training_item(kind, train.images[i], train.boxes[i], patch, rng.uniform() < positive, rng) for i in idx.tolist()]
            flips = rng.uniform(size=(len(crops), nd)) < 0.5
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(kind, model, crops, flips, dice, device)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        return total / len(train)

    def validate() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            losses = []
            for image, boxes in zip(val.images, val.boxes):  # the same patches every epoch
                item = training_item(kind, image, boxes, patch, True, np.random.default_rng(0))
                losses.append(float(batch_loss(kind, model, [item], np.zeros((1, nd), bool), dice, device, validation=True)))
        return {"val_loss": float(np.mean(losses)), "val_cpm": validation_cpm(model, kind, val, val_boxes, settings)}

    trainer = Trainer(
        net=model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, tcfg, epochs),
        train_epoch=train_epoch,
        validate=validate,
        metric="val_cpm",
        columns=HISTORY_COLUMNS,
        generator=generator,
        best_extra={"spatial_dims": nd},
    )
    state = run_epochs(trainer, out_dir=out_dir, epochs=epochs, resume_key=resume_key, desc=f"train {kind}")
    return {"best_epoch": state["best_epoch"], "best_val_cpm": state["best"], "epochs": epochs, "n_train": len(train)}


def load_detector(path: str | Path, network: dict[str, Any], device: str | torch.device = "cpu") -> torch.nn.Module:
    """The best weights written by :func:`fit` (``model.pt``)."""
    saved = torch.load(path, map_location=device, weights_only=True)
    model = build_detector(network, int(saved["spatial_dims"]))
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval()


def train_stage(
    cfg: dict[str, Any],
    *,
    volumes: str,
    data: str,
    splits: str,
    fold: int,
    name: str,
    settings: dict[str, Any],
    outputs: dict[str, str],
    wildcards=None,
):
    """The train rule of a detection case study: fit on the fold's training volumes,
    select on its validation volumes, then write the model card and the record."""
    from casebook.boxes import BOXES_FILE, boxes_of, read_boxes

    started, code = provenance.now(), provenance.code_state()
    part = fold_split(read_json(splits), fold, splits)
    train, val = load_volumes(volumes, part["train"]), load_volumes(volumes, part["val"])
    boxes = boxes_of(read_boxes(Path(data) / BOXES_FILE))
    sums = {str(p): provenance.input_digest(p) for p in (volumes, splits)}
    summary = fit(
        cfg, train, val, boxes, settings, Path(outputs["model"]).parent,
        resume_key=checkpoint.resume_key({**{k: v for k, v in cfg.items() if k != "device"}, "detection": settings}, fold, sums),
    )  # fmt: skip
    card = {
        "name": name,
        "version": "1",
        "task": "detection",
        "network": cfg["network"],
        "input": {
            "format": "one float32 channel, intensities windowed to [0, 1]",
            "spacing_mm": settings.get("spacing"),
            "window": settings["window"],
            "patch": settings.get("patch"),
        },
        "output": {
            "type": OUTPUT_TYPES[cfg["network"]["name"]],
        },
        "training": {k: cfg["train"][k] for k in sorted(cfg["train"])},
        "metrics": {"best_val_cpm": summary["best_val_cpm"], "best_epoch": summary["best_epoch"]},
        "data": {"n_train_volumes": len(train), "n_val_volumes": len(val)},
        "versions": provenance.package_versions(),
    }
    provenance.write_training_record(
        outputs,
        card,
        inputs=[volumes, splits],
        params={"model": cfg, "fold": fold, "detection": settings},
        seed=cfg.get("seed"),
        started=started,
        code=code,
        device=str(select_device(cfg.get("device", "auto"))),
        wildcards=wildcards,
    )
    return summary
