"""Rule select_model: the best model on out-of-fold validation predictions (no test data)."""

from casebook.scripting import logged
from casebook.tasks.classification.validation.stages import select_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    select_stage(sm.params.models, list(sm.input.oof), sm.params.evaluate, str(sm.output[0]))
