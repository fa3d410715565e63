"""Rule train: one model on one fold, by its case study's task family."""

from casebook.scripting import job_of, logged
from casebook.tasks import stage

with logged(snakemake):  # noqa: F821
    stage(snakemake.params.task, "train")(job_of(snakemake))  # noqa: F821
