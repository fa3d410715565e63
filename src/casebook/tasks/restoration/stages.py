"""The shared rules' stages of the restoration family (casebook.tasks.stage)."""

from __future__ import annotations

from typing import Any

from casebook.scripting import Job


def train(job: Job) -> dict[str, Any]:
    from casebook.tasks.restoration.train import train_stage

    # the display window sets the networks' input scale (the family's train params)
    cfg = {**job.model_config(), "restoration": {"window": job.params["family"]["window"]}}
    return train_stage(
        cfg,
        pairs=job.input["pairs"],
        splits=job.input["splits"],
        fold=int(job.wildcards["fold"]),
        name=job.name,
        outputs=job.output,
        wildcards=job.wildcards,
    )
