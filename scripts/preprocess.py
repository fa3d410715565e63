"""Rule preprocess: resample, normalise and resize every image once, into a cache."""

from pathlib import Path

from casebook.scripting import logged
from casebook.tasks.classification.preprocess import preprocess_dataset

with logged(snakemake):  # noqa: F821
    out = snakemake.output  # noqa: F821
    preprocess_dataset(
        Path(snakemake.input.data) / "manifest.tsv",  # noqa: F821
        snakemake.params.preprocess,  # noqa: F821
        images_out=out.images,
        masks_out=out.masks,
        index_out=out.index,
        plan_path=snakemake.input.get("plan"),  # noqa: F821
    )
