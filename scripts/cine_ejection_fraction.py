"""Rule cine_ejection_fraction: each method's tracked ejection fraction on the test cines."""

from casebook.scripting import logged
from casebook.tasks.registration.cine import ejection_fraction_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    ejection_fraction_stage(
        {"pairs": sm.input.pairs, "fields": sm.input.fields, "splits": sm.input.splits, "data": sm.input.data},
        dict(sm.output.items()),
        sm.params.registration,
        sm.params.title,
        int(sm.params.seed),
        dict(sm.wildcards.items()),
    )
