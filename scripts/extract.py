"""Rule extract: unpack a downloaded archive safely (no paths outside the target)."""

from casebook.archive import extract_archive
from casebook.scripting import logged

with logged(snakemake):  # noqa: F821
    extract_archive(snakemake.input[0], snakemake.output[0])  # noqa: F821
