"""Rule split: patient-level, stratified, seeded splits, written once."""

from casebook.scripting import logged
from casebook.split import split_stage

with logged(snakemake):  # noqa: F821
    split_stage(
        snakemake.input[0],  # noqa: F821
        {**snakemake.params.split, "seed": snakemake.params.seed},  # noqa: F821
        splits_out=snakemake.output.splits,  # noqa: F821
        table_out=snakemake.output.table,  # noqa: F821
    )
