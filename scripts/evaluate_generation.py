"""Rule evaluate_generation: every model's samples against the held-out real images."""

from casebook.scripting import logged
from casebook.tasks.generation.evaluate import evaluate_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    evaluate_stage(
        dict(zip(sm.params.models, sm.input.samples)), dict(zip(sm.params.models, sm.input.timings)),
        sm.input.judge, sm.input.images, sm.input.splits, int(sm.params.fold), dict(sm.params.generation),
        seed=int(sm.params.seed), outputs=dict(sm.output.items()), wildcards=dict(sm.wildcards.items()),
    )  # fmt: skip
