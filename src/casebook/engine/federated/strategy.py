"""Flower strategies from config, inside a wrapper that checks and checkpoints.

``build_strategy(spec, initial, ...)`` makes FedAvg, FedProx or FedAdam (Flower's
own classes) from a strategy's config; ``privacy: {noise_multiplier, clipping_norm}``
wraps it in Flower's client-side fixed-clipping differential privacy (the clients
clip their updates, the server adds Gaussian noise to the aggregate).
:class:`Checkpointed` is the outermost strategy: it refuses an update whose
shapes differ from the global model's (naming the site), records each round's
validation scores per site, and writes a round checkpoint (weights, the server
optimizer's state, the history) from which a killed server resumes.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from flwr.common import Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping, FedAdam, FedAvg, FedProx, Strategy

from casebook.fileio import atomic_path

log = logging.getLogger(__name__)

STRATEGIES = ("fedavg", "fedprox", "fedadam")


def build_strategy(spec: dict[str, Any], initial: list[np.ndarray], *, n_sites: int, min_clients: int, local_epochs: int = 1) -> Strategy:
    """Flower's strategy for ``spec`` (``name``, ``fraction_fit``, ``mu`` for FedProx,
    ``eta``/``eta_l``/``tau`` for FedAdam, ``privacy``), starting from ``initial``."""
    name = spec["name"]
    common = dict(
        fraction_fit=float(spec.get("fraction_fit", 1.0)),
        fraction_evaluate=1.0,
        min_fit_clients=min_clients,
        min_evaluate_clients=min_clients,
        min_available_clients=min_clients,
        accept_failures=True,  # a client lost in a round: aggregate the others
        initial_parameters=ndarrays_to_parameters(initial),
        fit_metrics_aggregation_fn=_weighted_mean,
        evaluate_metrics_aggregation_fn=_weighted_mean,
        on_fit_config_fn=lambda round_: {"local_epochs": local_epochs, "server_round": round_},
    )
    if name == "fedavg":
        strategy: Strategy = FedAvg(**common)
    elif name == "fedprox":
        strategy = FedProx(**common, proximal_mu=float(spec.get("mu", 0.01)))
    elif name == "fedadam":
        strategy = FedAdam(
            **common, eta=float(spec.get("eta", 0.01)), eta_l=float(spec.get("eta_l", 0.01)), tau=float(spec.get("tau", 1e-3))
        )
    else:
        raise ValueError(f"unknown federated strategy {name!r}; choose one of {list(STRATEGIES)}")
    privacy = spec.get("privacy") or {}
    if privacy.get("noise_multiplier") is not None:
        sampled = max(min_clients, int(n_sites * common["fraction_fit"]))
        strategy = DifferentialPrivacyClientSideFixedClipping(
            strategy,
            noise_multiplier=float(privacy["noise_multiplier"]),
            clipping_norm=float(privacy["clipping_norm"]),
            num_sampled_clients=sampled,
        )
    return strategy


def _weighted_mean(results: list[tuple[int, dict[str, Any]]]) -> dict[str, float]:
    """The example-weighted mean of every numeric metric the clients sent."""
    keys = {k for _, m in results for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out = {}
    for key in sorted(keys):  # a site whose score is undefined (one class only) is left out
        scored = [(n, float(m[key])) for n, m in results if key in m and np.isfinite(float(m[key]))]
        out[key] = sum(n * v for n, v in scored) / sum(n for n, _ in scored) if scored else float("nan")
    return out


def _optimizer_state(strategy: Strategy) -> dict[str, Any]:
    """A server optimizer's state (FedAdam's moments and current weights), wrapped or not."""
    inner = getattr(strategy, "strategy", strategy)  # the DP wrapper keeps the strategy it wraps
    return {k: getattr(inner, k) for k in ("current_weights", "m_t", "v_t") if hasattr(inner, k)}


def _set_optimizer_state(strategy: Strategy, state: dict[str, Any]) -> None:
    inner = getattr(strategy, "strategy", strategy)
    for key, value in state.items():
        setattr(inner, key, value)


class WaitForAll(SimpleClientManager):
    """Round 1 waits for every site (up to ``timeout`` s) before the strategy counts the
    clients, so that a fast client does not start the federation alone and the sample
    size follows ``fraction_fit``; later rounds need only the strategy's minimum, so a
    lost client does not stop training."""

    def __init__(self, n_sites: int, timeout: float):
        super().__init__()
        self.n_sites, self.timeout, self.started = n_sites, timeout, False

    def num_available(self) -> int:
        if not self.started:
            self.wait_for(self.n_sites, int(self.timeout))
            self.started = True
        return super().num_available()


class Checkpointed(Strategy):
    """The outermost strategy: shape checks, per-round history, round checkpoints.

    Flower counts rounds from 1 at every server start; a resumed server continues the
    global count (``offset`` rounds were done before it started). After each round the
    checkpoint (``checkpoint``) and the round's global weights (``rounds_dir/round_NNN.npz``,
    for the test-against-round curve) are written."""

    def __init__(self, inner: Strategy, initial: list[np.ndarray], checkpoint: Path, resume_key: str, rounds_dir: Path):
        self.inner, self.checkpoint, self.resume_key, self.rounds_dir = inner, Path(checkpoint), resume_key, Path(rounds_dir)
        self.shapes = [np.shape(a) for a in initial]
        self.history: list[dict[str, Any]] = []
        self.offset = 0
        self.parameters: list[np.ndarray] = initial
        self._pending: dict[str, Any] = {}

    def resume(self, rounds: int) -> int:
        """Load the last round's checkpoint if it was made under the same key and did not
        finish all ``rounds`` (a finished run is trained again, as the engine's loop does
        for a forced rerun); return the round it ended."""
        if not self.checkpoint.exists():
            return 0
        with open(self.checkpoint, "rb") as fh:
            state = pickle.load(fh)
        if state.get("resume_key") != self.resume_key or state["round"] >= rounds:
            log.info("%s is of another config or data, or finished: starting afresh", self.checkpoint)
            return 0
        self.offset, self.history, self.parameters = state["round"], state["history"], state["parameters"]
        _set_optimizer_state(self.inner, state["optimizer"])
        log.info("resuming the federation after round %d (%s)", self.offset, self.checkpoint)
        return self.offset

    def _save(self, round_: int) -> None:
        """The checkpoint, then the round's weights: a round's weights on disk mean its
        checkpoint is too (a test kills the server when it sees them)."""
        state = {
            "resume_key": self.resume_key,
            "round": round_,
            "history": self.history,
            "parameters": self.parameters,
            "optimizer": _optimizer_state(self.inner),
        }
        with atomic_path(self.checkpoint) as tmp:
            tmp.write_bytes(pickle.dumps(state))
        self.rounds_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.rounds_dir / f"round_{round_:03d}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, *self.parameters)

    # -- Flower's Strategy --------------------------------------------------------------
    def initialize_parameters(self, client_manager) -> Parameters | None:
        return ndarrays_to_parameters(self.parameters)

    def configure_fit(self, server_round, parameters, client_manager):
        return self.inner.configure_fit(server_round + self.offset, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        round_ = server_round + self.offset
        kept, refused = [], []
        # in site order, not arrival order: the weighted sum is then the same float sum every run
        for proxy, res in sorted(results, key=lambda r: str(r[1].metrics.get("site", r[0].cid))):
            shapes = [np.shape(a) for a in parameters_to_ndarrays(res.parameters)]
            site = res.metrics.get("site", proxy.cid)
            if shapes != self.shapes:
                log.error(
                    "round %d: refused the update of site %s: it sent %d arrays of shapes %s..., the model has %d of shapes %s...",
                    round_,
                    site,
                    len(shapes),
                    shapes[:3],
                    len(self.shapes),
                    self.shapes[:3],
                )
                refused.append(str(site))
            else:
                kept.append((proxy, res))
        if not kept:
            raise RuntimeError(f"round {round_}: no client sent a usable update (refused: {refused}, failures: {len(failures)})")
        params, metrics = self.inner.aggregate_fit(round_, kept, failures)
        self._pending = {
            "round": round_,
            "clients": len(kept),
            "failures": len(failures),
            "refused": ",".join(refused),
            "train_loss": metrics.get("train_loss", float("nan")),
            "bytes_up": sum(len(t) for _, r in kept for t in r.parameters.tensors),
        }
        self.parameters = parameters_to_ndarrays(params)
        return params, metrics

    def configure_evaluate(self, server_round, parameters, client_manager):
        return self.inner.configure_evaluate(server_round + self.offset, parameters, client_manager)

    def aggregate_evaluate(self, server_round, results, failures):
        round_ = server_round + self.offset
        row = {**self._pending, "round": round_}
        for _, res in results:
            site = res.metrics.get("site")
            row.update({f"val_{key}_{site}": value for key, value in res.metrics.items() if key != "site"})
        loss, metrics = self.inner.aggregate_evaluate(round_, results, failures)
        row.update({f"val_{k}": v for k, v in metrics.items()})
        row["val_loss"] = float("nan") if loss is None else float(loss)
        self.history.append(row)
        self._save(round_)
        log.info("round %d: %s", round_, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
        return loss, metrics

    def evaluate(self, server_round, parameters):
        return None  # the server holds no data: the sites score the global model
