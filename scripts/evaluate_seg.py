"""Rule evaluate_seg: segment the test cases, map them back, score and plot."""

from casebook.scripting import logged
from casebook.tasks.segmentation.evaluate import evaluate_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    evaluate_stage(
        {**sm.params.model, "device": sm.config["device"]},
        sm.params.evaluate,
        inputs=dict(sm.input.items()),
        outputs=dict(sm.output.items()),
        fold=int(sm.wildcards.fold),
        title=sm.params.title,
        wildcards=dict(sm.wildcards.items()),
    )
