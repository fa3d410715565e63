"""Rule download: fetch one raw file (URL or local mirror), checksum-verified."""

from pathlib import Path

from casebook.download import fetch
from casebook.scripting import logged

with logged(snakemake):  # noqa: F821 (snakemake is injected by the script directive)
    spec = snakemake.params.spec  # noqa: F821
    # how to fetch (retries, timeouts, where partial files wait) is read from the config,
    # not passed as params: changing it must not make Snakemake fetch the file again
    options = dict(snakemake.config.get("download") or {})  # noqa: F821
    fetch(spec["entry"], Path(snakemake.output[0]), source=spec["source"], path=spec["path"], **options)  # noqa: F821
