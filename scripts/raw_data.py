"""Rule raw_data: the inventory of every raw data set of the run (resources/inventory.json)."""

from casebook.inventory import inventory_stage
from casebook.scripting import logged

with logged(snakemake):  # noqa: F821
    inventory_stage(snakemake.params.datasets, snakemake.output[0])  # noqa: F821
