"""Rule summarize: the case study's table of test metrics and the model comparison plot."""
from casebook.figures import summarize_stage
from casebook.scripting import logged

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    summarize_stage(
        sm.params.runs, list(sm.input.metrics), list(sm.input.cams), dict(sm.output.items()), title=sm.params.title
    )
