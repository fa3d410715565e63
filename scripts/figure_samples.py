"""Rule figure_samples: preprocessed images of each class, lesions outlined."""

import pandas as pd

from casebook.analysis.plotting import plot_samples
from casebook.scripting import logged
from casebook.tasks.classification.cache import load_cache

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    images, masks = load_cache(sm.input.images, sm.input.masks)
    labels = pd.read_csv(sm.input.index, sep="\t")["label"].to_numpy()
    plot_samples(images, masks, labels, sm.params.class_names, f"{sm.params.title}: preprocessed samples", sm.output[0])
