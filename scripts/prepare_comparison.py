"""Rule prepare_comparison: every ingested image at one size, z-scored, for every arm."""

from casebook.scripting import logged
from casebook.tasks.comparison.data import prepare_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    prepare_stage(sm.input.data, dict(sm.params.comparison), dict(sm.output.items()), dict(sm.wildcards.items()))
