"""Rule download: fetch one raw file (URL or local mirror), checksum-verified."""
from pathlib import Path

from casebook.download import fetch
from casebook.scripting import logged

with logged(snakemake):  # noqa: F821 (snakemake is injected by the script directive)
    spec = snakemake.params.spec  # noqa: F821
    fetch(spec["entry"], Path(snakemake.output[0]), source=spec["source"], path=spec["path"])  # noqa: F821
