"""The downstream task of a restoration study: does a segmentation model find on the
restored slices what it finds on the reference? A 2D U-Net (MONAI's BasicUNet) learns
the study's region (``restoration.downstream.labels``, the label values that make it:
1, 2 and 4 for the BraTS whole tumour) from the reference slices of the fold's training
patients, the best epoch by validation Dice. It then segments every test slice as each
method left it (the degraded input, the baselines, the models) and as the reference
itself. Dice per slice (MONAI's, a region empty in both truth and prediction scoring 1);
per level and method, the mean with a bootstrap CI over patients, and each method's
paired difference against the degraded input; the reference's Dice is the ceiling.

The same segmenter's features also give each method a Fréchet distance: its test
outputs against the training patients' reference slices, in the segmenter's pooled
second-level features (32 numbers a slice at the default width, few enough for the
covariance of a few dozen slices), beside the test references' own distance, the floor.
It is named for those features, "FD (casebook downstream-segmenter features)", never FID
(which needs Inception features)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.losses import DiceCELoss
from monai.metrics import FIDMetric, compute_dice
from monai.networks.nets import BasicUNet

from casebook import provenance
from casebook.analysis.stats import mean_ci, paired_difference
from casebook.engine import checkpoint
from casebook.engine.loop import Trainer, run_epochs
from casebook.engine.optim import make_optimizer, make_scheduler
from casebook.engine.runtime import seed_everything, select_device
from casebook.fileio import atomic_path, read_json, write_json
from casebook.split import fold_split
from casebook.tasks.restoration.data import SlicePairs, to_network
from casebook.tasks.restoration.degradations import degradation
from casebook.tasks.restoration.evaluate import restored_key
from casebook.tasks.restoration.simulate import load_pairs

#: the stage's defaults (``restoration.downstream`` overrides them)
DOWNSTREAM: dict[str, Any] = {"labels": [1, 2, 4], "epochs": 20, "batch_size": 8, "lr": 0.002, "features": [16, 16, 32, 64, 128, 16]}
HISTORY_COLUMNS = ["epoch", "train_loss", "val_dice", "lr", "seconds"]
#: how every table and figure names the distance
FD_LABEL = "FD (casebook downstream-segmenter features)"
REFERENCE = "reference"


class DownstreamError(ValueError):
    """A study whose slices cannot be segmented downstream."""


def region(masks: np.ndarray, labels: list[int]) -> np.ndarray:
    """True where a label map holds one of ``labels``."""
    return np.isin(masks, list(labels))


def slice_dice(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of each 2D prediction against its truth (both boolean, N x H x W); a slice
    with the region in neither scores 1."""
    as_batch = lambda m: torch.from_numpy(np.asarray(m, dtype=np.float32))[:, None]  # noqa: E731
    return compute_dice(as_batch(prediction), as_batch(truth), include_background=True, ignore_empty=False).flatten().numpy().astype(float)


def _inputs(images: np.ndarray, window) -> torch.Tensor:
    return torch.from_numpy(to_network(images, window))[:, None]


@torch.no_grad()
def segment(model: torch.nn.Module, images: np.ndarray, window, batch_size: int = 16) -> np.ndarray:
    """The region the model finds in each slice (sigmoid above 0.5)."""
    model.eval()
    device = next(model.parameters()).device
    out = [model(_inputs(images[i : i + batch_size], window).to(device)).cpu().numpy()[:, 0] > 0 for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros(images.shape, bool)


@torch.no_grad()
def embed(model: BasicUNet, images: np.ndarray, window, batch_size: int = 16) -> torch.Tensor:
    """The segmenter's second-level encoder features of each slice, averaged over the slice."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = _inputs(images[i : i + batch_size], window).to(device)
        out.append(model.down_2(model.down_1(model.conv_0(x))).mean(dim=(2, 3)).cpu())
    return torch.cat(out).double()


def frechet_distances(
    model, train_reference: np.ndarray, test: SlicePairs, restored: dict[str, np.ndarray], window, input_label: str
) -> dict:
    """Per level: each method's and the test references' Fréchet distance to the training
    references, in :func:`embed`'s features."""
    fid, real = FIDMetric(), embed(model, train_reference, window)
    out = {}
    for level in sorted(set(test.level.tolist())):
        at = test.at_level(level)
        methods = {REFERENCE: at.reference, **{m: restored[restored_key(m, level)] for m in _methods_at(restored, level, input_label)}}
        out[f"{level:g}"] = {m: float(fid(embed(model, images, window), real)) for m, images in methods.items()}
    return out


def fit_segmenter(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    window,
    settings: dict[str, Any],
    out_dir: Path,
    *,
    seed: int,
    device,
    resume_key: str = "",
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A BasicUNet trained on (images, boolean regions) with MONAI's Dice + cross-entropy
    loss on the engine's loop; its best epoch's weights, and that epoch."""
    cfg = {**DOWNSTREAM, **settings}
    seed_everything(seed)
    model = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=tuple(cfg["features"])).to(device)
    optimizer = make_optimizer(model.parameters(), {"optimizer": "adam", "lr": float(cfg["lr"])})
    loss_fn = DiceCELoss(sigmoid=True)
    x, y = _inputs(train[0], window), torch.from_numpy(train[1].astype(np.float32))[:, None]
    generator = torch.Generator().manual_seed(seed)
    batch, epochs = int(cfg["batch_size"]), int(cfg["epochs"])

    def train_epoch(_epoch: int) -> float:
        model.train()
        total = 0.0
        for idx in torch.randperm(len(x), generator=generator).split(batch):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx].to(device)), y[idx].to(device))
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        return total / len(x)

    def validate() -> dict[str, float]:
        return {"val_dice": float(np.mean(slice_dice(segment(model, val[0], window), val[1])))}

    trainer = Trainer(
        net=model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, {"schedule": {"name": "none"}}, epochs),
        train_epoch=train_epoch,
        validate=validate,
        metric="val_dice",
        columns=HISTORY_COLUMNS,
        generator=generator,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    state = run_epochs(trainer, out_dir=out_dir, epochs=epochs, resume_key=resume_key, desc="train downstream segmenter")
    model.load_state_dict(torch.load(out_dir / "model.pt", map_location=device, weights_only=True)["state_dict"])
    return model, {"best_epoch": state["best_epoch"], "best_val_dice": state["best"], "epochs": epochs}


def _one_per_slice(pairs: SlicePairs) -> SlicePairs:
    """Each reference slice once (the pairs repeat it at every level)."""
    return pairs.at_level(sorted(set(pairs.level.tolist()))[0])


def _regions(pairs: SlicePairs, labels: list[int], where: str) -> np.ndarray:
    if pairs.mask is None:
        raise DownstreamError(
            f"{where}: the slices have no label maps, which restoration.downstream segments; the study's images need masks"
        )
    return region(pairs.mask, labels)


def score_methods(model, test: SlicePairs, restored: dict[str, np.ndarray], window, labels: list[int], input_label: str) -> pd.DataFrame:
    """Per test slice, level and method (and the reference): the Dice of the region."""
    rows = []
    for level in sorted(set(test.level.tolist())):
        at = test.at_level(level)
        truth = _regions(at, labels, "test slices")
        methods = {REFERENCE: at.reference, **{m: restored[restored_key(m, level)] for m in _methods_at(restored, level, input_label)}}
        for method, images in methods.items():
            dice = slice_dice(segment(model, images, window), truth)
            rows += [
                {"slice": i, "image_id": at.image_id[i], "patient_id": p, "level": level, "method": method, "dice": d, "region_voxels": int(t.sum())}
                for i, (p, d, t) in enumerate(zip(at.patient, dice, truth))
            ]  # fmt: skip
    return pd.DataFrame(rows)


def _methods_at(restored: dict[str, np.ndarray], level: float, input_label: str) -> list[str]:
    suffix = f"@{level:g}"
    names = [k[: -len(suffix)] for k in restored if k.endswith(suffix)]
    return [input_label] + sorted(n for n in names if n != input_label)


def summarize(table: pd.DataFrame, input_label: str, *, n_boot: int, level: float, seed: int) -> dict[str, Any]:
    levels = {}
    for at, rows in table.groupby("level", sort=True):
        wide = {m: rows[rows["method"] == m].sort_values("slice") for m in rows["method"].unique()}
        patients = wide[input_label]["patient_id"].to_numpy()
        methods = {m: mean_ci(w["dice"].to_numpy(), patients, n_boot, level, seed) for m, w in wide.items()}
        against_input = {
            m: paired_difference(
                w["dice"].to_numpy(), wide[input_label]["dice"].to_numpy(), patients, n_boot=n_boot, level=level, seed=seed
            )
            for m, w in wide.items()
            if m != input_label
        }
        levels[f"{at:g}"] = {"methods": methods, "minus_input": against_input}
    return {"levels": levels, "ci_level": level, "n_bootstrap": n_boot, "ci_method": "percentile bootstrap over patients"}


def downstream_stage(
    *,
    pairs: str,
    restored: str,
    splits: str,
    fold: int,
    settings: dict[str, Any],
    seed: int,
    title: str,
    outputs: dict[str, str],
    wildcards=None,
) -> dict[str, Any]:
    """The downstream_restoration rule (``settings``: the study's ``restoration`` section)."""
    from casebook.tasks.restoration.figures import plot_downstream

    started, code = provenance.now(), provenance.code_state()
    cfg = {**DOWNSTREAM, **(settings.get("downstream") or {})}
    window, kind = settings.get("window"), degradation(settings)
    split = read_json(splits)
    part = fold_split(split, fold, splits)
    train, val = _one_per_slice(load_pairs(pairs, part["train"])), _one_per_slice(load_pairs(pairs, part["val"]))
    labels = [int(v) for v in cfg["labels"]]
    model, summary = fit_segmenter(
        (train.reference, _regions(train, labels, pairs)), (val.reference, _regions(val, labels, pairs)), window,
        {k: cfg[k] for k in ("epochs", "batch_size", "lr", "features")}, Path(outputs["model"]).parent,
        seed=seed, device=select_device("auto"),
        resume_key=checkpoint.resume_key(cfg, fold, {str(p): provenance.input_digest(p) for p in (pairs, splits)}),
    )  # fmt: skip
    with np.load(restored) as data:
        outputs_by_method = {k: data[k].astype(np.float64) for k in data.files}
    test = load_pairs(pairs, split["test"])
    table = score_methods(model, test, outputs_by_method, window, labels, kind.input_label)
    with atomic_path(outputs["per_image"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    metrics = summarize(
        table, kind.input_label, n_boot=int(settings.get("n_bootstrap", 1000)), level=float(settings.get("ci_level", 0.95)), seed=seed
    )
    for level, distances in frechet_distances(model, train.reference, test, outputs_by_method, window, kind.input_label).items():
        metrics["levels"][level]["fd"] = distances
    metrics.update(
        fd_label=FD_LABEL,
        fd_reference="the training patients' reference slices; 'reference': the test references, the floor",
        labels=labels,
        segmenter={"network": "BasicUNet", **{k: cfg[k] for k in ("features", "epochs", "lr")}, **summary},
        input_method=kind.input_label,
        level_name=kind.level_name,
        n_train_slices=len(train),
    )
    write_json(outputs["metrics"], metrics)
    plot_downstream(metrics, kind, f"{title}: test slices", outputs["figure"])
    provenance.write_record(
        outputs["provenance"],
        rule="downstream_restoration",
        inputs=[pairs, restored, splits],
        outputs=[outputs[k] for k in ("model", "per_image", "metrics", "figure")],
        params={"restoration": settings, "fold": fold},
        seed=seed,
        started=started,
        code=code,
        wildcards=wildcards,
    )
    return metrics
