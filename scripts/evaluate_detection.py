"""Rule evaluate_detection: every model's candidates on the test scans, by the LUNA16 protocol."""

from casebook.scripting import logged
from casebook.tasks.detection.evaluate import evaluate_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    evaluate_stage(
        {name: {**cfg, "device": sm.config["device"]} for name, cfg in sm.params.models.items()},
        sm.params.detection,
        inputs={"models": list(sm.input.models), "volumes": sm.input.volumes, "data": sm.input.data, "splits": sm.input.splits},
        outputs=dict(sm.output.items()),
        title=sm.params.title,
        seed=int(sm.params.seed),
        wildcards=dict(sm.wildcards.items()),
    )
