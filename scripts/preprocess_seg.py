"""Rule preprocess_seg: reorient, crop, resample and normalise every case, with the plan."""

from casebook.scripting import logged
from casebook.tasks.segmentation.preprocess import preprocess_stage

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    preprocess_stage(
        sm.input.data,
        sm.input.plan,
        sm.params.segmentation,
        class_names=sm.params.class_names,
        cases_out=sm.output.cases,
        plan_out=sm.output.plan,
    )
