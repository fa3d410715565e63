"""Rule simulate_thick_slices: every volume's central coronal slices at every slice factor."""

from casebook.scripting import logged
from casebook.tasks.restoration.thick_slices import thick_slice_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    thick_slice_stage(sm.input.data, sm.params.restoration, int(sm.params.seed), dict(sm.output.items()), dict(sm.wildcards.items()))
