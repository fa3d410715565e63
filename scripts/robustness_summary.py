"""Rule robustness_summary: every model's performance-vs-severity curves in one figure."""

from casebook.analysis.robustness.summary import robustness_summary_stage
from casebook.scripting import logged

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    robustness_summary_stage(
        sm.params.runs, list(sm.input.tables), sm.params.robustness, sm.output.figure, metric=sm.params.metric, title=sm.params.title
    )
