"""Rule federated_sites: which patients belong to which site (casebook.engine.federated.sites)."""

from pathlib import Path

from casebook.engine.federated.sites import write_sites
from casebook.scripting import logged

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    write_sites(Path(sm.input.data) / "manifest.tsv", sm.input.splits, dict(sm.params.sites), int(sm.params.seed), dict(sm.output.items()))
