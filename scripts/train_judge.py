"""Rule train_judge: the classifier whose features and verdicts measure the samples."""

from casebook.scripting import logged
from casebook.tasks.generation.judge import judge_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    judge_stage(
        sm.input.images, sm.input.splits, int(sm.params.fold), int(sm.params.n_classes), dict(sm.params.judge),
        seed=int(sm.params.seed), outputs=dict(sm.output.items()), wildcards=dict(sm.wildcards.items()),
    )  # fmt: skip
