"""Rule simulate_missing_region: every volume's central axial slices with a hole of every size, filled by biharmonic inpainting."""

from casebook.scripting import logged
from casebook.tasks.restoration.inpainting import missing_region_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    missing_region_stage(sm.input.data, sm.params.restoration, int(sm.params.seed), dict(sm.output.items()), dict(sm.wildcards.items()))
