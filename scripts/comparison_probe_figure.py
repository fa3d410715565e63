"""Rule comparison_probe_figure: linear probes beside the fine-tuned models of the same encoder."""

from casebook.scripting import logged
from casebook.tasks.comparison.figures import probe_figure_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    probe_figure_stage(dict(sm.params.models), sm.params.title, sm.input.metrics, sm.output.probe)
