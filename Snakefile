# casebook: the whole pipeline, from public (or embedded synthetic) data to the report.
# Wiring only: rules live in workflow/rules, logic in src/casebook, rule scripts in scripts/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/explain.smk"
include: "workflow/rules/robustness.smk"
include: "workflow/rules/robustness_seg.smk"
include: "workflow/rules/validation.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/segmentation.smk"


rule all:
    input:
        all_targets(),
    default_target: True
