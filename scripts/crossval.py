"""Rule crossval: one model's folds pooled out of fold, their spread, and the test ensemble."""

from casebook.scripting import logged
from casebook.tasks.classification.validation.stages import crossval_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    crossval_stage(
        sm.params.folds, list(sm.input.val), list(sm.input.test), sm.params.evaluate, dict(sm.output.items()), seed=int(sm.config["seed"])
    )
