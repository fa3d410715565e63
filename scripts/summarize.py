"""Rule summarize: the case study's table of test metrics and the model comparison plot."""

from casebook.scripting import logged
from casebook.tasks.classification.figures import summarize_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    summarize_stage(
        sm.params.models,
        list(sm.input.crossval),
        list(sm.input.explain),
        sm.input.selection,
        dict(sm.output.items()),
        title=sm.params.title,
    )
