"""Rule evaluate_registration: the unregistered pair, the SimpleITK baseline and every model on the test pairs."""

from casebook.scripting import logged
from casebook.tasks.registration.evaluate import evaluate_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    evaluate_stage(
        {name: {**cfg, "device": sm.config["device"]} for name, cfg in sm.params.models.items()},
        sm.params.registration,
        inputs={"models": list(sm.input.models), "pairs": sm.input.pairs, "splits": sm.input.splits},
        outputs=dict(sm.output.items()),
        labels={int(k): v for k, v in sm.params.labels.items()},
        title=sm.params.title,
        seed=int(sm.params.seed),
        wildcards=dict(sm.wildcards.items()),
    )
