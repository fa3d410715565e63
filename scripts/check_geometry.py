"""Rule check_geometry: every image and its label / mask share one grid, or the run stops."""

from casebook.fingerprint import geometry_stage
from casebook.scripting import logged

with logged(snakemake):  # noqa: F821
    geometry_stage(snakemake.input[0], snakemake.output[0])  # noqa: F821
