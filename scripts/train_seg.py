"""Rule train_seg: one segmentation network on one fold, patch by patch."""
from casebook.scripting import logged
from casebook.segmentation.train import train_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    train_stage(
        {**sm.params.model, "device": sm.config["device"]},
        cases_dir=sm.input.cases,
        plan=sm.input.plan,
        splits=sm.input.splits,
        fold=int(sm.wildcards.fold),
        name=f"{sm.wildcards.cs}/{sm.wildcards.model}/fold_{sm.wildcards.fold}",
        outputs=dict(sm.output.items()),
        wildcards=dict(sm.wildcards.items()),
    )
