# Robustness of each model to acquisition-like perturbations of its test images (TorchIO),
# swept over severities, for every task family (the family's stage scores it: test
# metrics at the evaluate rule's threshold for classifiers, the mean Dice over the
# evaluate regions on the preprocessed grid for segmentation); and the summary of a
# case study's models in one figure.


rule robustness:
    input:
        unpack(family_input("robustness")),
    output:
        table="results/{cs}/robustness/{model}/fold_{fold}/robustness.tsv",
        summary="results/{cs}/robustness/{model}/fold_{fold}/robustness.json",
        curves=report(
            "results/{cs}/robustness/{model}/fold_{fold}/robustness.png",
            caption="../report/robustness.rst",
            category="{cs}",
            subcategory="{model}",
            labels={"model": "{model}", "fold": "{fold}", "figure": "robustness"},
        ),
        examples=report(
            "results/{cs}/robustness/{model}/fold_{fold}/robustness_examples.png",
            caption="../report/robustness_examples.rst",
            category="{cs}",
            subcategory="{model}",
            labels={
                "model": "{model}",
                "fold": "{fold}",
                "figure": "perturbation examples",
            },
        ),
        curves_summary=summary_of(
            "results/{cs}/robustness/{model}/fold_{fold}/robustness.png"
        ),
        examples_summary=summary_of(
            "results/{cs}/robustness/{model}/fold_{fold}/robustness_examples.png"
        ),
    log:
        "logs/{cs}/robustness/{model}/fold_{fold}.log",
    benchmark:
        "results/{cs}/benchmarks/robustness/{model}/fold_{fold}.tsv"
    group:
        "inference"
    threads: rule_threads("robustness")
    resources:
        **rule_resources("robustness"),
    params:
        task=lambda wc: task_of(wc.cs),
        model=lambda wc: model_config(wc.cs, wc.model),
        robustness=lambda wc: CASESTUDIES[wc.cs].get("robustness", {}),
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
        family=family_params("robustness"),
    script:
        "../../scripts/robustness.py"


rule robustness_summary:
    input:
        tables=lambda wc: [
            f"results/{wc.cs}/robustness/{m}/fold_{f}/robustness.tsv"
            for m, f in first_runs(wc.cs)
        ],
    output:
        figure=report(
            "results/{cs}/figures/robustness.png",
            caption="../report/robustness_summary.rst",
            category="{cs}",
            subcategory="summary",
            labels={"figure": "robustness curves"},
        ),
        figure_summary=summary_of("results/{cs}/figures/robustness.png"),
    log:
        "logs/{cs}/validation/robustness_summary.log",
    threads: rule_threads("robustness_summary")
    resources:
        **rule_resources("robustness_summary"),
    params:
        runs=lambda wc: [f"{m}/fold_{f}" for m, f in first_runs(wc.cs)],
        robustness=lambda wc: CASESTUDIES[wc.cs].get("robustness", {}),
        # the family's: a segmentation sweep scores the mean Dice over the evaluate regions
        metric=lambda wc: family_hook(wc.cs, "robustness_metric")(wc.cs),
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
    script:
        "../../scripts/robustness_summary.py"
