"""Rule robustness_seg: test-case Dice under TorchIO perturbations swept over severities."""
from casebook.scripting import logged
from casebook.segmentation.robustness import robustness_seg_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    robustness_seg_stage(
        {**sm.params.model, "device": sm.config["device"]},
        sm.params.robustness,
        inputs=dict(sm.input.items()),
        outputs=dict(sm.output.items()),
        title=f"{sm.params.title}: {sm.wildcards.model}",
        wildcards=dict(sm.wildcards.items()),
        regions=sm.params.regions,
    )
