"""Rule simulate_contrast: source and target sequences of every volume's central slices."""

from casebook.scripting import logged
from casebook.tasks.restoration.translation import contrast_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    contrast_stage(
        sm.input.data, sm.input.splits, sm.params.restoration, int(sm.params.seed), dict(sm.output.items()), dict(sm.wildcards.items())
    )
