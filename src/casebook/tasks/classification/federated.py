"""Federated training of a classifier: the family's site trainer and its arms.

:class:`SiteClassifier` is the classification family's
:class:`casebook.engine.federated.client.SiteTrainer`: one site's training and
validation images, the case study's network, optimizer and augmentation. The same
class trains the reference arms in one process: ``pooled`` (every site's training
patients together, as if the data could be pooled) and ``site_<name>`` (one site
alone), for as many epochs as a federated arm's rounds times its local epochs.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from casebook.engine.augment import build_augmentation
from casebook.engine.optim import make_optimizer
from casebook.engine.runtime import seed_everything, select_device
from casebook.tasks.classification.cache import load_cache
from casebook.tasks.classification.data import CachedImages, make_loader, rows_for
from casebook.tasks.classification.networks import build_network
from casebook.tasks.classification.train import train_epoch, validation_scores

log = logging.getLogger(__name__)


class SiteClassifier:
    """One site's classifier (or the pooled one): its images are the cache rows of its
    training and validation image ids."""

    def __init__(
        self,
        cfg: dict[str, Any],
        *,
        images_path: str,
        index_path: str,
        train_ids: list[str],
        val_ids: list[str],
        num_classes: int,
        seed: int,
    ):
        seed_everything(seed)
        self.device = select_device(cfg.get("device", "auto"))
        images, _ = load_cache(images_path)
        index = pd.read_csv(index_path, sep="\t", dtype={"image_id": str, "patient_id": str})
        train_rows, train_labels = rows_for(index, train_ids)
        val_rows, val_labels = rows_for(index, val_ids)
        tcfg = cfg["train"]
        batch_size = int(tcfg["batch_size"])
        augmentation = build_augmentation(cfg.get("augment"), images.ndim - 2)
        self.train_loader = make_loader(
            CachedImages(images, train_labels, train_rows, augmentation),
            batch_size=batch_size,
            shuffle=True,
            seed=seed,
            drop_last=len(train_rows) > batch_size,  # a batch of one breaks batch norm
        )
        self.val_loader = make_loader(CachedImages(images, val_labels, val_rows), batch_size=batch_size * 2, shuffle=False)
        self.net = build_network(cfg["network"], spatial_dims=images.ndim - 2, in_channels=images.shape[1], num_classes=num_classes).to(
            self.device
        )
        self.optimizer = make_optimizer(self.net.parameters(), tcfg)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.n_train = len(train_rows)

    def get_weights(self) -> list[np.ndarray]:
        return [v.detach().cpu().numpy().copy() for v in self.net.state_dict().values()]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.net.load_state_dict(weights_to_state(self.net, weights))

    def fit(self, epochs: int, *, proximal_mu: float = 0.0, round_: int = 0) -> dict[str, float]:
        """``epochs`` epochs of the family's own epoch (classification.train.train_epoch)
        from the current weights; FedProx adds (mu/2)|w - w_start|^2 to the loss."""
        loss_fn = self.loss_fn
        if proximal_mu > 0:
            anchor = [p.detach().clone() for p in self.net.parameters()]

            def loss_fn(output, y):
                proximal = sum(((p - a) ** 2).sum() for p, a in zip(self.net.parameters(), anchor))
                return self.loss_fn(output, y) + proximal_mu / 2 * proximal

        losses = [train_epoch(self.net, self.train_loader, self.optimizer, loss_fn, self.device) for _ in range(epochs)]
        return {"n": self.n_train, "train_loss": float(np.mean(losses))}

    def evaluate(self) -> dict[str, float]:
        scores = validation_scores(self.net, self.val_loader, self.device)
        return {"n": len(self.val_loader.dataset), "loss": scores["val_loss"], "auc": scores["val_auc"], "accuracy": scores["val_accuracy"]}


def site_classifier(**kwargs: Any) -> SiteClassifier:
    """The factory a client process calls (module level, so the job pickles it by name)."""
    return SiteClassifier(**kwargs)


def image_ids(manifest: pd.DataFrame, patients: list[str]) -> list[str]:
    """The image ids of these patients, in manifest order."""
    return manifest.loc[manifest["patient_id"].isin(set(patients)), "image_id"].astype(str).tolist()


def weights_to_state(net: torch.nn.Module, weights: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """A list of arrays (a round's global weights) as ``net``'s state dict."""
    state = net.state_dict()
    if len(weights) != len(state):
        raise ValueError(f"{len(weights)} arrays for a model of {len(state)} tensors")
    # averaged integer buffers (batch norm's step count) come back as floats: cast back
    return {k: torch.as_tensor(np.asarray(w)).to(v.dtype) for (k, v), w in zip(state.items(), weights)}
