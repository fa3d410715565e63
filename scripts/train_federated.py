"""Rule train_federated: by the case study's task family (casebook.engine.federated)."""

from casebook.scripting import job_of, logged
from casebook.tasks import stage

with logged(snakemake):  # noqa: F821
    stage(snakemake.params.task, "train_federated")(job_of(snakemake))  # noqa: F821
