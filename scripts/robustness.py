"""Rule robustness: test metrics under TorchIO perturbations swept over severities."""
from casebook.robustness.sweep import robustness_stage
from casebook.scripting import logged

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    robustness_stage(
        {**sm.params.model, "device": sm.config["device"]},
        sm.params.robustness,
        inputs=dict(sm.input.items()),
        outputs=dict(sm.output.items()),
        class_names=sm.params.class_names,
        title=f"{sm.params.title}: {sm.wildcards.model}",
        wildcards=dict(sm.wildcards.items()),
    )
