"""Rule figure_fingerprint: the data set QC figure (spacings, intensity histograms per case)."""

import json
from pathlib import Path

from casebook.qc import plot_fingerprint
from casebook.scripting import logged

with logged(snakemake):  # noqa: F821
    plot_fingerprint(json.loads(Path(snakemake.input[0]).read_text()), snakemake.output[0])  # noqa: F821
