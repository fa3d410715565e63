"""Rule comparison_pretrain: an encoder learnt without labels from the training patients' images."""

from casebook.scripting import logged
from casebook.tasks.comparison.pretrain import pretrain_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    pretrain_stage(
        sm.wildcards.pretraining,
        dict(sm.params.spec),
        fold=int(sm.params.fold),
        seed=int(sm.params.seed),
        device=sm.config["device"],
        class_names=list(sm.params.class_names),
        inputs=dict(sm.input.items()),
        outputs=dict(sm.output.items()),
        wildcards=dict(sm.wildcards.items()),
    )
