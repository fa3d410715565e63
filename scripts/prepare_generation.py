"""Rule prepare_generation: every ingested image at one size, on [-1, 1]."""

from casebook.scripting import logged
from casebook.tasks.generation.data import prepare_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    prepare_stage(sm.input.data, dict(sm.params.generation), dict(sm.output.items()), dict(sm.wildcards.items()))
