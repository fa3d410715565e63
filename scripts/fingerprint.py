"""Rule fingerprint: spacings, shapes, intensities and classes of the data set, and the plan."""

from casebook.fingerprint import fingerprint_stage
from casebook.scripting import logged

with logged(snakemake):  # noqa: F821
    out = snakemake.output  # noqa: F821
    fingerprint_stage(snakemake.input.data, out.fingerprint, out.plan)  # noqa: F821
