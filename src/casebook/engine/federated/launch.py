"""Start a federation on this node, watch it, and end every process it started.

:func:`federate` writes the jobs (the server's without the site factory), starts
the server (``python -m casebook.engine.federated.server``) on a free port of
127.0.0.1, waits until it listens, then starts one client per site (``python -m
casebook.engine.federated.client``).
The pids go to ``processes.json`` in the work folder. While the federation runs:

- a client that dies is reported and the rounds go on with the others (the
  strategy's minimum number of clients); when fewer than that minimum are left,
  the federation is stopped with an error naming the lost sites;
- a server that dies is restarted on the same address (at most ``server_restarts``
  times), resumes from its last round checkpoint, and the clients reconnect to it.

Whatever happens (success, error, timeout, the job being stopped), every process
started here, and only those, is ended before :func:`federate` returns or raises.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from casebook.engine.distributed import free_port
from casebook.engine.federated.server import RESULT
from casebook.engine.processes import Child
from casebook.fileio import write_json

log = logging.getLogger(__name__)

SERVER = "casebook.engine.federated.server"
CLIENT = "casebook.engine.federated.client"


class FederationError(RuntimeError):
    """The federation could not finish (the server failed, or too few sites were left)."""


def federate(
    *,
    factory: Callable[..., Any],
    sites: dict[str, dict[str, Any]],
    initial: list[np.ndarray],
    strategy: dict[str, Any],
    rounds: int,
    local_epochs: int,
    work_dir: str | Path,
    resume_key: str,
    min_clients: int | None = None,
    server_restarts: int = 2,
    threads: int = 1,
    timeout: float | None = None,
    round_timeout: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train by federation; return the server's result (final weights, per-round history).

    ``factory(**sites[site])`` builds a site's trainer in its client process (a
    module-level function: the clients unpickle it by name). ``min_clients`` (default:
    every site) is how many clients a round needs. The round checkpoint and each
    round's weights live in ``work_dir``, so a rerun resumes a federation that was
    stopped, when ``resume_key`` is the same."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    min_clients = len(sites) if min_clients is None else int(min_clients)
    if not 1 <= min_clients <= len(sites):
        raise ValueError(f"min_clients must be between 1 and the {len(sites)} sites, not {min_clients}")
    address = f"127.0.0.1:{free_port()}"
    level = logging.getLogger().getEffectiveLevel()
    job = {
        "strategy": strategy,
        "initial": initial,
        "rounds": rounds,
        "local_epochs": local_epochs,
        "n_sites": len(sites),
        "min_clients": min_clients,
        "address": address,
        "checkpoint": str(work_dir / "checkpoint.pkl"),
        "rounds_dir": str(work_dir / "rounds"),
        "resume_key": resume_key,
        "round_timeout": round_timeout,
        "factory": factory,
        "sites": sites,
        "log_level": level,
        "seed": seed,
    }
    # two files: the server never unpickles the site factory (which would import the family, torch included)
    job_path = work_dir / "server_job.pkl"
    job_path.write_bytes(pickle.dumps({k: v for k, v in job.items() if k not in ("factory", "sites")}))
    client_job = work_dir / "client_job.pkl"
    client_job.write_bytes(pickle.dumps(job))
    (work_dir / RESULT).unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": str(threads)}
    started: list[Child] = []
    try:
        server = _start_server(job_path, env, address, started)
        clients = {site: Child(f"site {site}", CLIENT, [str(client_job), site], env) for site in sites}
        started += clients.values()
        _write_pids(work_dir, server, clients)
        _supervise(server, clients, job_path, env, address, started, min_clients, server_restarts, timeout, work_dir)
        return pickle.loads((work_dir / RESULT).read_bytes())
    finally:
        for child in started:
            child.stop()


def _start_server(job_path: Path, env: dict[str, str], address: str, started: list[Child]) -> Child:
    server = Child("server", SERVER, [str(job_path)], env)
    started.append(server)
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the clients start once the server listens
        if server.poll() is not None:
            raise FederationError(
                f"the federated server {server.how_it_ended()} before it listened; its last output:\n" + "".join(server.tail)
            )
        with socket.socket() as s:
            if s.connect_ex((host, int(port))) == 0:
                return server
        time.sleep(0.1)
    raise FederationError(f"the federated server did not listen on {address} within 120 s")


def _write_pids(work_dir: Path, server: Child, clients: dict[str, Child]) -> None:
    write_json(work_dir / "processes.json", {"server": server.pid, "clients": {site: c.pid for site, c in clients.items()}})


def _supervise(server, clients, job_path, env, address, started, min_clients, restarts, timeout, work_dir) -> None:
    """Wait for the server to finish; restart it when it dies; fail when too few sites are left."""
    deadline = None if timeout is None else time.monotonic() + timeout
    lost: set[str] = set()
    while True:
        code = server.poll()
        if code == 0:
            return
        if code is not None:
            if restarts <= 0:
                raise FederationError(f"the federated server {server.how_it_ended()}; its last output:\n" + "".join(server.tail))
            restarts -= 1
            log.warning("the federated server %s: restarting it from its last round checkpoint", server.how_it_ended())
            server = _start_server(job_path, env, address, started)
            _write_pids(work_dir, server, clients)
        for site, client in clients.items():
            # exit code 0: the server told the client the federation is over (it may say so
            # before it exits itself); anything else is a lost site
            if site not in lost and client.poll() not in (None, 0):
                lost.add(site)
                log.warning("the client of site %s %s: the rounds go on with the other sites", site, client.how_it_ended())
        if len(clients) - len(lost) < min_clients:
            raise FederationError(
                f"only {len(clients) - len(lost)} site(s) are left (lost: {sorted(lost)}), fewer than min_clients={min_clients}"
            )
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"the federation did not finish within {timeout} s")
        time.sleep(0.1)
