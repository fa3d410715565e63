"""Rule figure_training: loss, the validation score and learning rate per epoch."""

import pandas as pd

from casebook.analysis.plotting import plot_history
from casebook.fileio import read_json
from casebook.scripting import logged

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    history = pd.read_csv(sm.input.history, sep="\t")
    best = read_json(sm.input.card)["metrics"]["best_epoch"]
    plot_history(history, best, sm.params.title, sm.output[0], **sm.params.curves)
