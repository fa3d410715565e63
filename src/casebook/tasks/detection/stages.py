"""The shared rules' stages of the detection family (casebook.tasks.stage)."""

from __future__ import annotations

from typing import Any

from casebook.scripting import Job


def train(job: Job) -> dict[str, Any]:
    from casebook.tasks.detection.train import train_stage

    return train_stage(
        job.model_config(),
        volumes=job.input["volumes"],
        data=job.input["data"],
        splits=job.input["splits"],
        fold=int(job.wildcards["fold"]),
        name=job.name,
        settings=job.params["family"]["detection"],
        outputs=job.output,
        wildcards=job.wildcards,
    )
