"""The shared rules' stages of the segmentation family (casebook.tasks.stage).

Each imports what its rule needs when it runs, so a job loads only its own modules."""

from __future__ import annotations

from typing import Any

from casebook.scripting import Job


def train(job: Job) -> dict[str, Any]:
    from casebook.tasks.segmentation.train import train_stage

    return train_stage(
        job.model_config(),
        cases_dir=job.input["cases"],
        plan=job.input["plan"],
        splits=job.input["splits"],
        fold=int(job.wildcards["fold"]),
        name=job.name,
        outputs=job.output,
        wildcards=job.wildcards,
        processes=job.processes,
    )


def robustness(job: Job) -> None:
    from casebook.tasks.segmentation.robustness import robustness_seg_stage

    robustness_seg_stage(
        job.model_config(),
        job.params["robustness"],
        inputs=job.input,
        outputs=job.output,
        title=f"{job.params['title']}: {job.wildcards['model']}",
        wildcards=job.wildcards,
        regions=job.params["family"]["regions"],
    )
