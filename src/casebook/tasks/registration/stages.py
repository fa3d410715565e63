"""The shared rules' stages of the registration family (casebook.tasks.stage)."""

from __future__ import annotations

from typing import Any

from casebook.scripting import Job


def train(job: Job) -> dict[str, Any]:
    from casebook.tasks.registration.train import train_stage

    return train_stage(
        job.model_config(),
        pairs=job.input["pairs"],
        splits=job.input["splits"],
        fold=int(job.wildcards["fold"]),
        name=job.name,
        labels=[int(v) for v in job.params["family"]["labels"]],
        outputs=job.output,
        wildcards=job.wildcards,
    )
