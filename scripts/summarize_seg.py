"""Rule summarize_seg: per-case Dice boxplots, the model comparison table and paired tests."""

from casebook.scripting import logged
from casebook.tasks.segmentation.compare import compare_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    compare_stage(sm.params.runs, list(sm.input.per_case), list(sm.input.metrics), dict(sm.output.items()), title=sm.params.title)
