"""Self-supervised pretraining of an encoder, on the unlabelled images of the study
fold's training patients only: SimCLR-style contrastive learning (MONAI's
``ContrastiveLoss`` on two random views of each image through a projection head), or
Models-Genesis-style restoration of corrupted images (casebook.tasks.comparison.genesis). Its output, ``encoder.pt``
with a card naming the images it saw, feeds the arms whose ``network.init`` names it.

Without labels there is no validation metric to pick an epoch by: the last epoch is
kept (the history's ``epochs_done`` column is the loop's selection metric)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from monai.losses import ContrastiveLoss
from torch import nn

from casebook import provenance
from casebook.engine.checkpoint import resume_key
from casebook.engine.loop import Trainer, run_epochs
from casebook.engine.optim import make_optimizer, make_scheduler
from casebook.engine.runtime import seed_everything, select_device
from casebook.fileio import file_digest, read_json, write_json
from casebook.split import LeakageError, fold_split
from casebook.tasks.comparison.data import Images, load_images
from casebook.tasks.comparison.genesis import Restorer, corrupt
from casebook.tasks.comparison.networks import build_encoder

HISTORY_COLUMNS = ["epoch", "train_loss", "epochs_done", "lr", "seconds"]


class InitError(ValueError):
    """Pretrained weights that cannot start this arm."""


def random_view(x: torch.Tensor, generator: torch.Generator, min_scale: float) -> torch.Tensor:
    """A random crop of each image (side ``min_scale`` to 1 of the image, anywhere
    inside it) resized back, with random contrast, brightness and Gaussian noise."""
    n, dims = x.shape[0], x.ndim - 2
    scale = min_scale + (1 - min_scale) * torch.rand(n, generator=generator)
    shift = (1 - scale)[:, None] * (2 * torch.rand(n, dims, generator=generator) - 1)
    theta = torch.zeros(n, dims, dims + 1)
    theta[:, range(dims), range(dims)] = scale[:, None]
    theta[:, :, dims] = shift
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    view = nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="border")
    shape = (n,) + (1,) * (x.ndim - 1)
    contrast = torch.exp(0.3 * torch.randn(shape, generator=generator))
    brightness = 0.3 * torch.randn(shape, generator=generator)
    return view * contrast + brightness + 0.2 * torch.randn(view.shape, generator=generator)


class Contrastive(nn.Module):
    """An encoder and the projection head that only the contrastive loss sees."""

    def __init__(self, encoder: nn.Module, projection: int = 64) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = nn.Sequential(nn.Linear(encoder.features, encoder.features), nn.ReLU(), nn.Linear(encoder.features, projection))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))


def check_held_out(card: dict[str, Any], card_path: str, held_out_patients: set[str], what: str) -> None:
    """Refuse pretraining data with a validation or test patient of this study."""
    leaked = sorted(set(card["patients"]) & held_out_patients)
    if leaked:
        raise LeakageError(
            f"{card_path}: pretraining {card['name']!r} saw {len(leaked)} {what} patient(s) of this study "
            f"(e.g. {leaked[:3]}); its weights cannot start a model evaluated on them"
        )


def check_compatible(card: dict[str, Any], card_path: str, network: dict[str, Any], images: Images, model: str) -> None:
    """Refuse weights of another network, channel count or input shape, naming both."""
    mine = {"network": {"name": network["name"], "kwargs": dict(network.get("kwargs") or {})}, "image_shape": list(images.x.shape[1:])}
    theirs = {"network": card["network"], "image_shape": card["image_shape"]}
    if mine != theirs:
        raise InitError(
            f"model {model!r}: network.init {card['name']!r} ({card_path}) was pretrained as {theirs}, "
            f"but this model is {mine} (image shape: channels, then spatial size)"
        )


def _objective(spec: dict[str, Any], encoder: nn.Module, images: Images, generator: torch.Generator, device: torch.device):
    """The model that trains (the encoder plus what only the pretext task uses) and the
    loss of one batch under the method: ``contrastive`` or ``restoration``."""
    if spec["method"] == "restoration":
        model = Restorer(encoder, images.x.shape[-1], images.spatial_dims, images.x.shape[1]).to(device)

        def restoration_loss(batch: torch.Tensor) -> torch.Tensor:
            return nn.functional.mse_loss(model(corrupt(batch, generator).to(device)), batch.to(device))

        return model, restoration_loss
    model = Contrastive(encoder).to(device)
    contrastive = ContrastiveLoss(temperature=float(spec["temperature"]))

    def contrastive_loss(batch: torch.Tensor) -> torch.Tensor:
        a, b = (random_view(batch, generator, float(spec["min_crop"])).to(device) for _ in range(2))
        return contrastive(model(a), model(b))

    return model, contrastive_loss


def pretrain(images: Images, spec: dict[str, Any], *, seed: int, out_dir: Path, key: str, desc: str, device: str = "auto") -> nn.Module:
    """Self-supervised training of ``spec['network']``'s encoder on ``images`` (no labels)
    by ``spec['method']`` (default contrastive); returns the encoder."""
    spec = {"method": "contrastive", **spec}
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    dev = select_device(device)
    encoder = build_encoder(spec["network"], spatial_dims=images.spatial_dims, in_channels=images.x.shape[1], size=images.x.shape[-1])
    generator = torch.Generator().manual_seed(seed)
    model, batch_loss = _objective(spec, encoder, images, generator, dev)
    epochs, batch_size = int(spec["epochs"]), int(spec["batch_size"])
    optimizer = make_optimizer(model.parameters(), {"optimizer": "adam", "lr": spec["lr"]})
    scheduler = make_scheduler(optimizer, {"schedule": {"name": "cosine"}}, epochs)
    x = torch.from_numpy(images.x)
    done = {"epochs": 0}

    def train_epoch(epoch: int) -> float:
        model.train()
        order, total, n = torch.randperm(len(x), generator=generator), 0.0, 0
        # a last batch of one is dropped: it has no negatives (contrastive)
        for i in range(0, len(x) - 1, batch_size):
            batch = x[order[i : i + batch_size]]
            if len(batch) < 2:
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(batch)
            loss.backward()
            optimizer.step()
            total, n = total + loss.item() * len(batch), n + len(batch)
        done["epochs"] = epoch
        return total / max(n, 1) if n else math.nan

    trainer = Trainer(
        model, optimizer, scheduler, train_epoch, lambda: {"epochs_done": float(done["epochs"])}, "epochs_done", HISTORY_COLUMNS, generator
    )
    run_epochs(trainer, out_dir=out_dir, epochs=epochs, resume_key=key, desc=desc)
    model.load_state_dict(torch.load(out_dir / "model.pt", map_location="cpu", weights_only=True)["state_dict"])
    return model.encoder.cpu()


def pretrain_stage(
    name: str,
    spec: dict[str, Any],
    *,
    fold: int,
    seed: int,
    device: str,
    class_names: list[str],
    inputs: dict[str, str],
    outputs: dict[str, str],
    wildcards=None,
) -> dict[str, Any]:
    """The comparison_pretrain rule: ``encoder.pt``, its card and provenance record."""
    from casebook.tasks.comparison.figures import plot_embedding

    started, code = provenance.now(), provenance.code_state()
    images = load_images(inputs["images"])
    split = fold_split(read_json(inputs["splits"]), fold, inputs["splits"])
    train = images.of_ids(split["train"])
    card = {
        "name": name,
        "method": spec["method"],
        "network": {"name": spec["network"]["name"], "kwargs": dict(spec["network"].get("kwargs") or {})},
        "image_shape": list(images.x.shape[1:]),
        "fold": fold,
        "data": {"images": inputs["images"], "sha256": provenance.path_digest(inputs["images"])},
        "n_images": len(train),
        "patients": sorted(set(train.patient)),
        "settings": spec,
    }
    held_out = held_out_patients(images, read_json(inputs["splits"]), split)
    check_held_out(card, outputs["card"], held_out, "validation or test")
    out_dir = Path(outputs["encoder"]).parent
    # the split is in the key: a checkpoint made on other training patients is never resumed
    key = resume_key({"name": name, "seed": seed, **spec}, fold, {**card["data"], "splits": provenance.path_digest(inputs["splits"])})
    encoder = pretrain(train, spec, seed=seed, out_dir=out_dir, key=key, desc=f"pretrain {name}", device=device)
    torch.save({"state_dict": encoder.state_dict(), "card": card}, outputs["encoder"])
    write_json(outputs["card"], card)
    plot_embedding(
        encoder, train, class_names, f"{name}: {spec['method']} features of the training images (labels unseen)", outputs["embedding"]
    )
    provenance.write_record(
        outputs["provenance"],
        rule="comparison_pretrain",
        inputs=[inputs["images"], inputs["splits"]],
        outputs=[outputs["encoder"], outputs["card"], outputs["embedding"]],
        params={"name": name, **spec},
        seed=seed,
        started=started,
        code=code,
        wildcards=wildcards,
    )
    return card


def held_out_patients(images: Images, splits: dict[str, Any], split: dict[str, list[str]]) -> set[str]:
    """The patients of the fold's validation images and of the test images."""
    return set(images.of_ids(list(split["val"]) + list(splits["test"])).patient)


def load_init(
    path: str, network: dict[str, Any], images: Images, model: str, held_out_patients: set[str]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The encoder weights of a pretraining job, checked against this model and split."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    card = saved["card"]
    check_compatible(card, path, network, images, model)
    check_held_out(card, path, held_out_patients, "validation or test")
    return saved["state_dict"], card


def load_weights_file(weights: dict[str, Any], model: str, encoder: nn.Module) -> dict[str, torch.Tensor]:
    """A user's encoder weights (``network.weights: {path, sha256}``, for example
    ImageNet weights converted to this encoder), refused when the file's checksum is not
    the one the case study pins or when its tensors do not fit the encoder, naming both."""
    path = str(weights["path"])
    found = file_digest(path)
    if found != str(weights["sha256"]).lower():
        raise InitError(f"model {model!r}: weights file {path} has sha256 {found}, but the case study pins {weights['sha256']}")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    state = saved.get("state_dict", saved) if isinstance(saved, dict) else saved
    state = {k.removeprefix("encoder."): v for k, v in state.items()}
    mine = encoder.state_dict()
    missing, unexpected = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
    wrong = sorted(k for k in set(mine) & set(state) if tuple(mine[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise InitError(
            f"model {model!r}: weights file {path} does not fit its encoder: "
            f"{len(missing)} tensor(s) missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
            f"{len(wrong)} of another shape (e.g. {[(k, tuple(state[k].shape), tuple(mine[k].shape)) for k in wrong[:2]]}: file, encoder)"
        )
    return state
