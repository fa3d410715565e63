"""The federation's server process: ``python -m casebook.engine.federated.server JOB``.

JOB is a pickle written by :func:`casebook.engine.federated.launch.federate`: the
strategy's config, the initial weights, the rounds, the address and the checkpoint.
The server resumes from the checkpoint when there is one (a restarted server), runs
the remaining rounds with Flower's gRPC server, and writes the final weights and the
per-round history to ``result.pkl`` beside JOB.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # offline, and nothing leaves the machine

import flwr  # noqa: E402
import numpy as np  # noqa: E402

from casebook.engine.federated.strategy import Checkpointed, WaitForAll, build_strategy  # noqa: E402
from casebook.engine.processes import exit_with_parent  # noqa: E402

log = logging.getLogger(__name__)
RESULT = "result.pkl"


def serve(job: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run (or finish) the federation described by ``job``; return and write its result."""
    # Flower draws the DP noise and the sampled clients from the global random streams
    random.seed(job.get("seed", 0))
    np.random.seed(job.get("seed", 0))
    spec = job["strategy"]
    inner = build_strategy(spec, job["initial"], n_sites=job["n_sites"], min_clients=job["min_clients"], local_epochs=job["local_epochs"])
    strategy = Checkpointed(inner, job["initial"], Path(job["checkpoint"]), job["resume_key"], Path(job["rounds_dir"]))
    done = strategy.resume(int(job["rounds"]))
    remaining = int(job["rounds"]) - done
    if remaining > 0:
        flwr.server.start_server(
            server_address=job["address"],
            config=flwr.server.ServerConfig(num_rounds=remaining, round_timeout=job.get("round_timeout")),
            strategy=strategy,
            client_manager=WaitForAll(job["n_sites"], timeout=job.get("start_timeout", 120)),
        )
    last = strategy.history[-1]["round"] if strategy.history else 0
    if last < int(job["rounds"]):
        raise RuntimeError(f"the federation ended after round {last} of {job['rounds']}: see the rounds' messages above")
    result = {"parameters": strategy.parameters, "history": strategy.history, "resumed_after": done}
    tmp = out.with_suffix(".part")
    tmp.write_bytes(pickle.dumps(result))
    tmp.replace(out)
    return result


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m casebook.engine.federated.server JOB")
    exit_with_parent()
    job_path = Path(argv[0])
    job = pickle.loads(job_path.read_bytes())
    logging.basicConfig(
        level=job.get("log_level", logging.INFO), stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("flwr").propagate = False  # Flower prints its own lines: once is enough
    serve(job, job_path.parent / RESULT)


if __name__ == "__main__":
    main()
