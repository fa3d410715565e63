"""Rule sample_generation: one model's samples with every configured sampler, timed."""

from casebook.scripting import logged
from casebook.tasks.generation.sampling import sample_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    sample_stage(
        sm.input.model, dict(sm.params.network), dict(sm.params.sampling),
        seed=int(sm.params.seed), device=sm.config["device"], outputs=dict(sm.output.items()), wildcards=dict(sm.wildcards.items()),
    )  # fmt: skip
