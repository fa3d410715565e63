"""Rule evaluate: test-set predictions, metrics with bootstrap CIs, ROC and confusion figures."""

from casebook.scripting import logged
from casebook.tasks.classification.evaluate import evaluate_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    evaluate_stage(
        {**sm.params.model, "device": sm.config["device"]},
        sm.params.evaluate,
        inputs=dict(sm.input.items()),
        outputs=dict(sm.output.items()),
        fold=int(sm.wildcards.fold),
        class_names=sm.params.class_names,
        title=f"{sm.params.title}: {sm.wildcards.model}",
        wildcards=dict(sm.wildcards.items()),
    )
