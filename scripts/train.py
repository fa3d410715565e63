"""Rule train: one MONAI model on one fold; model card and provenance beside it."""
from casebook.scripting import logged
from casebook.train import train_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    train_stage(
        {**sm.params.model, "device": sm.config["device"]},
        images=sm.input.images,
        index=sm.input.index,
        splits=sm.input.splits,
        dataset_dir=sm.input.data,
        fold=int(sm.wildcards.fold),
        name=f"{sm.wildcards.cs}/{sm.wildcards.model}/fold_{sm.wildcards.fold}",
        class_names=sm.params.class_names,
        preprocess=sm.params.preprocess,
        outputs=dict(sm.output.items()),
        wildcards=dict(sm.wildcards.items()),
        # more than one GPU (config resources: train: gpu): one DDP process per GPU
        processes=max(1, int(sm.resources.get("gpu", 0))),
    )
