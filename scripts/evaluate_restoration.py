"""Rule evaluate_restoration: the input, the baselines and every model on the test slices."""

from casebook.scripting import logged
from casebook.tasks.restoration.evaluate import evaluate_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    evaluate_stage(
        {name: {**cfg, "device": sm.config["device"]} for name, cfg in sm.params.models.items()},
        sm.params.restoration,
        inputs={"models": list(sm.input.models), "pairs": sm.input.pairs, "splits": sm.input.splits},
        outputs=dict(sm.output.items()),
        fold=int(sm.params.fold),
        title=sm.params.title,
        seed=int(sm.params.seed),
        wildcards=dict(sm.wildcards.items()),
    )
