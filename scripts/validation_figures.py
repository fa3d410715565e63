"""Rule validation_figures: cross-validation fold spread and reliability diagram."""

from casebook.scripting import logged
from casebook.tasks.classification.validation.stages import validation_figures_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    validation_figures_stage(sm.params.models, list(sm.input.crossval), dict(sm.output.items()), title=sm.params.title)
