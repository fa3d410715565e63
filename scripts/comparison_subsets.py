"""Rule comparison_subsets: one seed's nested patient subsets, one per level of the sweep."""

from casebook.scripting import logged
from casebook.tasks.comparison.subsets import subsets_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    subsets_stage(
        sm.input.images,
        sm.input.splits,
        dict(sm.params.comparison),
        int(sm.wildcards.seed),
        list(sm.params.class_names),
        dict(sm.output.items()),
        dict(sm.wildcards.items()),
    )
