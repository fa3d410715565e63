"""Rule check_leakage: fail the run if a patient is in two of train, val and test."""

from casebook.scripting import logged
from casebook.split import leakage_stage

with logged(snakemake):  # noqa: F821
    leakage_stage(snakemake.input.data, snakemake.input.splits, snakemake.output[0])  # noqa: F821
