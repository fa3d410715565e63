"""Rule comparison_evaluate: the arms compared on the same test patients, with CIs."""

from casebook.scripting import logged
from casebook.tasks.comparison.evaluate import evaluate_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    evaluate_stage(
        dict(sm.params.comparison),
        title=sm.params.title,
        inputs={"predictions": list(sm.input.predictions), "costs": list(sm.input.costs)},
        outputs=dict(sm.output.items()),
        wildcards=dict(sm.wildcards.items()),
    )
