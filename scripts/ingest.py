"""Rule ingest: run the data set's adapter and write the canonical layout."""

from casebook.ingest import ingest_stage
from casebook.scripting import logged

with logged(snakemake):  # noqa: F821
    ingest_stage(snakemake.params.ingest, list(snakemake.input), snakemake.output[0])  # noqa: F821
