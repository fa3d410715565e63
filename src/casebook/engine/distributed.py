"""Data-parallel training over several processes (DistributedDataParallel, one node).

:func:`casebook.tasks.classification.train.fit` with ``processes=N > 1`` calls :func:`launch`, which starts
N worker processes ``python -m casebook.engine.distributed JOB`` with the environment torchrun
gives its workers (``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``, ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``OMP_NUM_THREADS``). Each worker
unpickles the call from JOB and calls ``fit`` again; ``fit`` sees that environment
(:func:`is_worker`) and trains as one rank (:func:`init`): backend ``nccl`` with
``cuda:{LOCAL_RANK}`` when the device is CUDA, ``gloo`` on CPU.

The workers are fresh interpreters, not ``multiprocessing`` spawn or fork: spawn
re-executes the caller's ``__main__`` in every child, and the caller here is a
Snakemake rule script that would start training again; fork after torch has started
its thread pools can deadlock. A worker's output goes to the caller's ``sys.stderr``
(the rule's log under :func:`casebook.scripting.logged`), each line prefixed
``[rank r]``. A worker's exception stops the other workers and is raised in the caller
as :class:`WorkerError`, with the worker's message and traceback.

Under torchrun directly, the same code runs without :func:`launch`: a script that
calls ``fit(cfg, ..., processes=int(os.environ["WORLD_SIZE"]))`` (or ``train_stage``)
started with ``torchrun --standalone --nproc-per-node 2 script.py`` trains one rank
per process; every rank returns the summary and only rank 0 writes files. A job file
written by :func:`write_job` runs the same way:
``torchrun --standalone --nproc-per-node 2 -m casebook.engine.distributed job.pkl``.

BatchNorm: on CUDA the network's BatchNorm layers become ``SyncBatchNorm`` (statistics
over the global batch, as in one process). torch 2.13's SyncBatchNorm refuses CPU
tensors ("SyncBatchNorm expected input tensor to be on GPU ...") so on CPU every rank
normalises with the statistics of its own share of the batch, and the running
statistics kept (DDP broadcasts rank 0's buffers) are rank 0's: a CPU run with N
processes is close to, not the same as, a one-process run (see tests/test_distributed.py).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import socket
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from casebook.engine.processes import Child, exit_with_parent

log = logging.getLogger(__name__)

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
RESULT = "result.pkl"


class WorkerError(RuntimeError):
    """A worker process of a data-parallel run failed."""


def is_worker() -> bool:
    """Whether this process is one rank of a torchrun-style launch (its variables are set)."""
    return all(name in os.environ for name in _ENV)


def is_main_process() -> bool:
    """False only in the ranks other than 0 of a launch: those write no files."""
    return not is_worker() or int(os.environ["RANK"]) == 0


# --------------------------------------------------------------------------------------
# one rank
# --------------------------------------------------------------------------------------


@dataclass
class Rank:
    """This process's place in the process group, and the collectives training needs."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def mean(self, value: float) -> float:
        """The mean of a number over the ranks."""
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, model: torch.nn.Module) -> DistributedDataParallel:
        """DDP around ``model`` (already on this rank's device); SyncBatchNorm on CUDA only
        (torch's SyncBatchNorm supports no CPU tensors)."""
        if self.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return DistributedDataParallel(model, device_ids=[self.device.index], output_device=self.device.index)
        return DistributedDataParallel(model)

    def loader(self, dataset: Dataset, *, batch_size: int, seed: int, num_workers: int = 0) -> DataLoader:
        """This rank's shard of each epoch: a seeded DistributedSampler (call
        ``loader.sampler.set_epoch(epoch)`` every epoch) and ``batch_size // world_size``
        per batch, so that one step of all ranks together sees a global batch of
        ``batch_size``. With the sampler's interleaved shards, the global batch k is
        items ``k*B .. (k+1)*B - 1`` of the epoch's permutation, as in one process."""
        per_rank = batch_size // self.world_size
        if per_rank < 1:
            raise ValueError(f"batch_size {batch_size} is smaller than the {self.world_size} processes")
        if per_rank * self.world_size != batch_size:
            warnings.warn(
                f"batch_size {batch_size} is not a multiple of the {self.world_size} processes: "
                f"the global batch is {per_rank * self.world_size}",
                stacklevel=2,
            )
        sampler = DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=seed)
        generator = torch.Generator()  # seeds the loader's workers (their augmentation), distinct per rank
        generator.manual_seed(seed + self.rank)
        return DataLoader(
            dataset,
            batch_size=per_rank,
            sampler=sampler,
            num_workers=num_workers,
            drop_last=sampler.num_samples > per_rank,  # a batch of one breaks batch norm
            generator=generator,
        )

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def init(processes: int, device: torch.device) -> Rank:
    """Join the process group described by the torchrun variables; ``device`` is the
    configured one (``cuda`` becomes ``cuda:{LOCAL_RANK}``)."""
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if world != processes:
        raise ValueError(f"this process is one of WORLD_SIZE={world} processes, but processes={processes}")
    if "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"rank {rank} needs GPU {local}, but {torch.cuda.device_count()} GPU(s) are visible")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"data-parallel training runs on cuda or cpu, not {device}")
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world)
    log.info("rank %d of %d on %s (%s, %d threads)", rank, world, device, backend, torch.get_num_threads())
    return Rank(rank=rank, world_size=world, local_rank=local, device=device)


# --------------------------------------------------------------------------------------
# the launcher
# --------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free now on ``host`` (for the rendezvous of the workers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def write_job(path: str | Path, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Path:
    """The call each worker makes: ``fn(*args, **kwargs)`` (picklable: a module-level function)."""
    path = Path(path)
    path.write_bytes(pickle.dumps((fn, args, kwargs, logging.getLogger().getEffectiveLevel())))
    return path


def launch(
    fn: Callable[..., Any],
    processes: int,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    threads: int | None = None,
    timeout: float | None = None,
) -> Any:
    """Call ``fn(*args, **kwargs)`` in ``processes`` workers (ranks) on this node; return rank 0's result.

    ``threads``: CPU threads per worker, by default this process's torch threads
    divided among the workers (at least one). ``timeout``: seconds before the workers
    are stopped and TimeoutError is raised (None: no limit). If a worker fails, the
    others are stopped and :class:`WorkerError` names the first failure.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    threads = threads or max(1, torch.get_num_threads() // processes)
    with tempfile.TemporaryDirectory(prefix="casebook-ddp-") as tmp:
        job = write_job(Path(tmp) / "job.pkl", fn, *args, **(kwargs or {}))
        env = {
            **os.environ,
            # the caller's import path, so that what the job pickled by name imports in the workers
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()),
            "WORLD_SIZE": str(processes),
            "LOCAL_WORLD_SIZE": str(processes),
            "OMP_NUM_THREADS": str(threads),
        }
        workers = [_worker(rank, job, env) for rank in range(processes)]
        try:
            failed = _wait(workers, timeout)
        finally:
            for w in workers:
                w.stop()
        if failed:
            raise WorkerError(_failure_message(workers, Path(tmp)))
        with open(Path(tmp) / RESULT, "rb") as fh:
            return pickle.load(fh)


def _worker(rank: int, job: Path, env: dict[str, str]) -> Child:
    """One rank's process (``Child.rank`` is its rank)."""
    child = Child(
        f"rank {rank}", "casebook.engine.distributed", [str(job)], {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "GROUP_RANK": "0"}
    )
    child.rank = rank
    return child


def _wait(workers: list[Child], timeout: float | None) -> bool:
    """Wait until all workers exit (False) or one fails (True)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        codes = [w.proc.poll() for w in workers]
        if any(c not in (None, 0) for c in codes):
            return True
        if all(c == 0 for c in codes):
            return False
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"the {len(workers)} training processes did not finish within {timeout} s")
        time.sleep(0.05)


def _failure_message(workers: list[Child], tmp: Path) -> str:
    """The first error a worker recorded (others often fail only because it did)."""
    errors = []
    for w in workers:
        path = tmp / f"error-{w.rank}.json"
        if path.exists():
            errors.append(json.loads(path.read_text()))
    if errors:
        first = min(errors, key=lambda e: e["time"])
        return f"training process {first['rank']} of {len(workers)} failed: {first['error']}\n\n{first['traceback']}"
    failed = [w for w in workers if w.proc.returncode not in (None, 0, -signal.SIGTERM, -signal.SIGKILL)] or workers
    w = failed[0]
    return f"training process {w.rank} of {len(workers)} {w.how_it_ended()}; its last output:\n" + "".join(w.tail)


def main(argv: list[str] | None = None) -> None:
    """A worker: ``python -m casebook.engine.distributed JOB`` (under :func:`launch` or torchrun)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m casebook.engine.distributed JOB  (a file written by casebook.engine.distributed.write_job)")
    job = Path(argv[0])
    rank = int(os.environ.get("RANK", "0"))
    exit_with_parent()
    with open(job, "rb") as fh:
        fn, args, kwargs, level = pickle.load(fh)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        record = {"rank": rank, "time": time.time(), "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        (job.parent / f"error-{rank}.json").write_text(json.dumps(record))
        raise
    if rank == 0:
        part = job.parent / f".{RESULT}.part"
        part.write_bytes(pickle.dumps(result))
        part.replace(job.parent / RESULT)


if __name__ == "__main__":
    main()
