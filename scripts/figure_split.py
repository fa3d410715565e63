"""Rule figure_split: images per class and patients in every set of every fold."""

import pandas as pd

from casebook.analysis.plotting import plot_split
from casebook.scripting import logged

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    table = pd.read_csv(sm.input[0], sep="\t")
    plot_split(table, sm.params.class_names, f"{sm.params.title}: patient-level split", sm.output[0])
