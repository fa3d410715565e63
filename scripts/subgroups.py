"""Rule subgroups: test metrics per group of the manifest's grouping columns."""

from casebook.scripting import logged
from casebook.tasks.classification.validation.stages import subgroups_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    subgroups_stage(
        sm.params.models, list(sm.input.test), list(sm.input.crossval), f"{sm.input.data}/manifest.tsv", sm.params.evaluate,
        dict(sm.output.items()), title=sm.params.title, seed=int(sm.config["seed"]),
    )  # fmt: skip
