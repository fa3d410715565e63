"""Rule simulate_registration: every volume's central slices, paired (a known deformation, an atlas, or another patient)."""

from casebook.scripting import logged
from casebook.tasks.registration.pairs import simulate_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    simulate_stage(
        sm.input.data, sm.input.splits, sm.params.registration, int(sm.params.seed), dict(sm.output.items()), dict(sm.wildcards.items())
    )
