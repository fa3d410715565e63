"""The shared rules' stages of the classification family (casebook.tasks.stage).

Each imports what its rule needs when it runs, so a job loads only its own modules."""

from __future__ import annotations

from typing import Any

from casebook.scripting import Job


def train(job: Job) -> dict[str, Any]:
    from casebook.tasks.classification.train import train_stage

    return train_stage(
        job.model_config(),
        images=job.input["images"],
        index=job.input["index"],
        splits=job.input["splits"],
        dataset_dir=job.input["data"],
        fold=int(job.wildcards["fold"]),
        name=job.name,
        class_names=job.params["family"]["class_names"],
        preprocess=job.params["family"]["preprocess"],
        outputs=job.output,
        wildcards=job.wildcards,
        processes=job.processes,
    )


def robustness(job: Job) -> None:
    from casebook.tasks.classification.robustness import robustness_stage

    robustness_stage(
        job.model_config(),
        job.params["robustness"],
        inputs=job.input,
        outputs=job.output,
        class_names=job.params["family"]["class_names"],
        title=f"{job.params['title']}: {job.wildcards['model']}",
        wildcards=job.wildcards,
    )


def train_federated(job: Job) -> dict[str, Any]:
    from casebook.tasks.classification.federated_arms import train_stage

    return train_stage(
        job.model_config(),
        job.params["federated"],
        job.wildcards["arm"],
        inputs=job.input,
        outputs=job.output,
        class_names=job.params["family"]["class_names"],
        wildcards=job.wildcards,
        threads=job.threads,
    )


def evaluate_federated(job: Job) -> None:
    from casebook.tasks.classification.federated_arms import evaluate_stage

    evaluate_stage(job)
