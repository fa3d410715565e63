"""Rule compare_models: paired DeLong and bootstrap tests of every model pair on the test set."""

from casebook.scripting import logged
from casebook.tasks.classification.validation.stages import compare_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    compare_stage(
        sm.params.models, list(sm.input.test), sm.input.selection, sm.params.evaluate, dict(sm.output.items()),
        title=sm.params.title, seed=int(sm.config["seed"]),
    )  # fmt: skip
