"""Rule utility_generation: classifiers on real, synthetic and both, tested on real."""

from casebook.scripting import logged
from casebook.tasks.generation.utility import utility_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    utility_stage(
        sm.input.samples, sm.input.card, sm.input.images, sm.input.splits, int(sm.params.fold), int(sm.params.n_classes),
        dict(sm.params.utility), seed=int(sm.params.seed), outputs=dict(sm.output.items()), wildcards=dict(sm.wildcards.items()),
    )  # fmt: skip
