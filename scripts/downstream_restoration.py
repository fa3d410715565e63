"""Rule downstream_restoration: a segmentation model on every method's restored test slices."""

from casebook.scripting import logged
from casebook.tasks.restoration.downstream import downstream_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    downstream_stage(
        pairs=sm.input.pairs, restored=sm.input.restored, splits=sm.input.splits, fold=int(sm.params.fold),
        settings=sm.params.restoration, seed=int(sm.params.seed), title=sm.params.title,
        outputs=dict(sm.output.items()), wildcards=dict(sm.wildcards.items()),
    )  # fmt: skip
