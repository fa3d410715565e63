"""The shared rules' stages of the generation family (casebook.tasks.stage)."""

from __future__ import annotations

from typing import Any

from casebook.scripting import Job


def train(job: Job) -> dict[str, Any]:
    from casebook.tasks.generation.train import train_stage

    family = job.params["family"]  # the forward process and the number of classes
    return train_stage(
        {**job.model_config(), "diffusion": family["diffusion"]},
        images=job.input["images"],
        splits=job.input["splits"],
        fold=int(job.wildcards["fold"]),
        n_classes=int(family["n_classes"]),
        name=job.name,
        outputs=job.output,
        wildcards=job.wildcards,
    )
