"""Rule simulate_dose: every volume's central slices at every dose, with references."""

from casebook.scripting import logged
from casebook.tasks.restoration.simulate import simulate_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    simulate_stage(sm.input.data, sm.params.restoration, int(sm.params.seed), dict(sm.output.items()), dict(sm.wildcards.items()))
