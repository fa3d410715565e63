"""Glue for the thin rule scripts under ``scripts/``: logging into the rule's log file."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import Any, Iterator

from casebook import provenance


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
    code = {**provenance.git_state(), "hashes": provenance.code_fingerprint()}
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
    """The provenance record of the job that just succeeded (see casebook.provenance)."""
    config = snakemake.config
    return provenance.job_record(
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards.items()),
        inputs=[str(p) for p in snakemake.input],
        outputs=_made_outputs(snakemake),
        params=json.loads(json.dumps(dict(snakemake.params.items()), default=str)),
        config={key: config.get(key) for key in ("seed", "device", "registry")},
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
    """Keep torch within the job's ``threads``: on a shared node, more threads than
    cores makes OpenMP spin and slows every job down (seen: 40x slower epochs)."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
