"""Rule explain: attribution maps, their faithfulness and localisation, and the sanity check."""

from casebook.scripting import logged
from casebook.tasks.classification.explain import explain_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    explain_stage(
        {**sm.params.model, "device": sm.config["device"]},
        sm.params.explain,
        inputs=dict(sm.input.items()),
        outputs=dict(sm.output.items()),
        class_names=sm.params.class_names,
        title=f"{sm.params.title}: {sm.wildcards.model}, fold {sm.wildcards.fold}",
    )
