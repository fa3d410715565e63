"""Glue for the thin rule scripts under ``scripts/``: logging into the rule's log file."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any, Iterator

from casebook import provenance


@dataclass
class Job:
    """What a rule's stage function needs of its Snakemake job, as plain mappings (so
    that a family's stage is callable without Snakemake, e.g. from a test)."""

    input: dict[str, Any]
    output: dict[str, str]
    params: dict[str, Any]
    wildcards: dict[str, str]
    config: dict[str, Any]
    resources: dict[str, Any]
    threads: int = 1

    @property
    def name(self) -> str:
        """``<cs>/<model>/fold_<k>``: how logs and progress bars name a model's job."""
        return f"{self.wildcards['cs']}/{self.wildcards['model']}/fold_{self.wildcards['fold']}"

    @property
    def processes(self) -> int:
        """Data-parallel training processes: one per GPU of the job (at least one)."""
        return max(1, int(self.resources.get("gpu", 0) or 0))

    def model_config(self) -> dict[str, Any]:
        """The model's settings (rule params) with the device to run on (config)."""
        return {**self.params["model"], "device": self.config["device"]}


def job_of(snakemake: Any) -> Job:
    """The :class:`Job` of a rule script's ``snakemake`` object."""
    return Job(
        input=dict(snakemake.input.items()),
        output=dict(snakemake.output.items()),
        params=dict(snakemake.params.items()),
        wildcards=dict(snakemake.wildcards.items()),
        config=dict(snakemake.config),
        resources={k: v for k, v in snakemake.resources.items() if not k.startswith("_")},
        threads=int(getattr(snakemake, "threads", 1)),
    )


@contextmanager
def logged(snakemake: Any) -> Iterator[None]:
    """Send stdout, stderr (tqdm bars included) and logging to the rule's ``log[0]``;
    on success, write the job's provenance record for each of its outputs
    (``provenance/<output>.json``).

    An exception is written to the log with its traceback and raised again, so that
    Snakemake fails the job, removes its outputs and points at the log.
    """
    _limit_threads(getattr(snakemake, "threads", 1))
    # the code as it is when the job starts: the code that ran, even if files change later
    started = provenance.now()
    code = provenance.code_state()
    with open(snakemake.log[0], "w", buffering=1) as fh, redirect_stdout(fh), redirect_stderr(fh):
        logging.basicConfig(stream=fh, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
        try:
            yield
            provenance.write_job_records(_job_record(snakemake, started, code))
            _write_summaries(snakemake)
        except Exception as exc:
            traceback.print_exc(file=fh)
            # one line on the console too, naming the problem, for users without --show-failed-logs
            print(f"casebook: {type(exc).__name__}: {exc}", file=sys.__stderr__)
            raise


def _job_record(snakemake: Any, started: str, code: dict[str, Any]) -> dict[str, Any]:
    """The provenance record of the job that just succeeded (see casebook.provenance),
    to be written once per output."""
    config = snakemake.config
    return provenance.record(
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards.items()),
        inputs=[str(p) for p in snakemake.input],
        outputs=_made_outputs(snakemake),
        params=json.loads(json.dumps(dict(snakemake.params.items()), default=str)),
        config={key: config.get(key) for key in ("seed", "device", "registry")},
        seed=config.get("seed"),
        started=started,
        code=code,
    )


def _write_summaries(snakemake: Any) -> None:
    """The short provenance summary of each output that the report captions include
    (``provenance/<output>.rst``); written now, while the records upstream are at hand."""
    from casebook.audit import summary_rst
    from casebook.fileio import atomic_path

    for output in _made_outputs(snakemake):
        with atomic_path(provenance.summary_path(output)) as tmp:
            tmp.write_text(summary_rst(output))


def _made_outputs(snakemake: Any) -> list[str]:
    """The job's outputs, less the provenance summaries that report rules declare as
    outputs (``provenance/...rst``): those describe the others and have no record."""
    records = provenance.RECORDS_DIR.rstrip("/") + "/"
    return [str(p) for p in snakemake.output if not str(p).startswith(records)]


def _limit_threads(threads: int) -> None:
    """Keep torch and ITK within the job's ``threads``: on a shared node, more threads
    than cores makes OpenMP spin and slows every job down (seen: 40x slower epochs).

    A job that never uses torch must not pay for importing it (seconds per job): the
    OpenMP variables bound a torch imported later, and one already imported is told."""
    threads = max(1, int(threads))
    # ITK (SimpleITK's filters and registration) uses every core unless told, like OpenMP
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    itk = sys.modules.get("SimpleITK")
    if itk is not None:
        itk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
