"""Rule robustness: test scores under TorchIO perturbations swept over severities, by family."""

from casebook.scripting import job_of, logged
from casebook.tasks import stage

with logged(snakemake):  # noqa: F821
    stage(snakemake.params.task, "robustness")(job_of(snakemake))  # noqa: F821
