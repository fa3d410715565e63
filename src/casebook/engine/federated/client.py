"""A site's client process: ``python -m casebook.engine.federated.client JOB SITE``.

JOB (written by :func:`casebook.engine.federated.launch.federate`) names the family's
site-trainer factory and its arguments for every site; this process builds the
trainer of SITE (its own patients only) and serves Flower's requests: train the
global weights for the round's local epochs (with FedProx's proximal term when the
server asks for it, and clipping the update when the server runs client-side
differential privacy), and score the global weights on the site's validation patients.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any, Protocol

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # offline, and nothing leaves the machine

import grpc  # noqa: E402
import numpy as np  # noqa: E402
from flwr.compat.client.app import start_client  # noqa: E402
from flwr.compat.client.numpy_client import NumPyClient  # noqa: E402
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, compute_clip_model_update  # noqa: E402

from casebook.engine.processes import exit_with_parent  # noqa: E402

log = logging.getLogger(__name__)


class SiteTrainer(Protocol):
    """What a family provides for federated training (one site's model and data)."""

    def get_weights(self) -> list[np.ndarray]:
        """The model's parameters and buffers, in a fixed order."""

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Load weights in :meth:`get_weights`' order (cast to each tensor's dtype)."""

    def fit(self, epochs: int, *, proximal_mu: float = 0.0, round_: int = 0) -> dict[str, float]:
        """Train ``epochs`` local epochs; ``{"n": examples, "train_loss": ...}``."""

    def evaluate(self) -> dict[str, float]:
        """Score on the site's validation patients; ``{"n": ..., "loss": ..., <metrics>}``."""


class FlowerSite(NumPyClient):
    """Flower's client around a :class:`SiteTrainer`."""

    def __init__(self, site: str, trainer: SiteTrainer, local_epochs: int):
        self.site, self.trainer, self.local_epochs = site, trainer, local_epochs

    def get_parameters(self, config):
        return self.trainer.get_weights()

    def fit(self, parameters, config):
        self.trainer.set_weights(parameters)
        out = self.trainer.fit(
            int(config.get("local_epochs", self.local_epochs)),
            proximal_mu=float(config.get("proximal_mu", 0.0)),
            round_=int(config.get("server_round", 0)),
        )
        weights = self.trainer.get_weights()
        if KEY_CLIPPING_NORM in config:  # client-side DP: the update's L2 norm at most the clipping norm
            global_weights = [np.asarray(p, dtype=np.float64) for p in parameters]
            weights = [np.asarray(w, dtype=np.float64) for w in weights]
            compute_clip_model_update(weights, global_weights, float(config[KEY_CLIPPING_NORM]))
        return weights, int(out["n"]), {"site": self.site, "train_loss": float(out["train_loss"])}

    def evaluate(self, parameters, config):
        self.trainer.set_weights(parameters)
        scores = dict(self.trainer.evaluate())
        n, loss = int(scores.pop("n")), float(scores.pop("loss"))
        return loss, n, {"site": self.site, **{k: float(v) for k, v in scores.items()}}


def run_site(job: dict[str, Any], site: str) -> None:
    """Build SITE's trainer and serve the federation until the server ends it."""
    factory, kwargs = job["factory"], job["sites"][site]
    trainer = factory(**kwargs)
    client = FlowerSite(site, trainer, int(job["local_epochs"]))
    timeout = float(job.get("reconnect_timeout", 120))
    while True:
        lost = time.monotonic()
        try:
            # connecting is retried for ``timeout`` s: a restarted server is waited for
            start_client(server_address=job["address"], client=client.to_client(), insecure=True, max_wait_time=timeout)
            return
        except grpc.RpcError as exc:
            # the server died while this client waited for its next message: Flower's
            # client does not reconnect then, so connect again (the trainer is kept)
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() - lost > timeout:
                raise
            log.warning("site %s lost the server (%s): connecting again", site, exc.details())
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit("usage: python -m casebook.engine.federated.client JOB SITE")
    exit_with_parent()
    job = pickle.loads(Path(argv[0]).read_bytes())
    logging.basicConfig(
        level=job.get("log_level", logging.INFO), stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("flwr").propagate = False  # Flower prints its own lines: once is enough
    if "OMP_NUM_THREADS" in os.environ:
        import torch

        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    run_site(job, argv[1])


if __name__ == "__main__":
    main()
