# casebook: the whole pipeline, from public (or embedded synthetic) data to the report.
# Wiring only: rules live in workflow/rules, logic in src/casebook, rule scripts in scripts/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/federated.smk"
include: "workflow/rules/robustness.smk"
include: "workflow/rules/figures.smk"


# one rules file per task family of the registry (casebook.tasks.TASKS)
for _task in TASKS:

    include: f"workflow/rules/{_task}.smk"


rule all:
    default_target: True
    input:
        all_targets(),
