"""Rule comparison_fit: one arm with one seed at every level of the sweep."""

from casebook.scripting import logged
from casebook.tasks.comparison.arms import arm_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    arm_stage(
        sm.wildcards.model,
        {**sm.params.model, "device": sm.config["device"]},
        dict(sm.params.comparison),
        seed=int(sm.wildcards.seed),
        inputs=dict(sm.input.items()),
        outputs=dict(sm.output.items()),
        wildcards=dict(sm.wildcards.items()),
    )
