# Robustness of each segmentation model to acquisition-like perturbations of its test
# cases (TorchIO), swept over severities: mean Dice over the evaluate regions, scored on
# the preprocessed grid (no write-back to each original image's grid).


rule robustness_seg:
    input:
        model="results/{cs}/models/{model}/fold_{fold}/model.pt",
        cases="results/{cs}/preprocess/cases",
        plan="results/{cs}/preprocess/seg_plan.json",
        splits="results/{cs}/split/splits.json",
    output:
        table="results/{cs}/robustness/{model}/fold_{fold}/robustness.tsv",
        summary="results/{cs}/robustness/{model}/fold_{fold}/robustness.json",
        curves=report(
            "results/{cs}/robustness/{model}/fold_{fold}/robustness.png",
            caption="../report/robustness_seg.rst",
            category="{cs}",
            subcategory="{model}",
            labels={"model": "{model}", "fold": "{fold}", "figure": "robustness"},
        ),
        examples=report(
            "results/{cs}/robustness/{model}/fold_{fold}/robustness_examples.png",
            caption="../report/robustness_examples.rst",
            category="{cs}",
            subcategory="{model}",
            labels={"model": "{model}", "fold": "{fold}", "figure": "perturbation examples"},
        ),
        curves_summary=summary_of("results/{cs}/robustness/{model}/fold_{fold}/robustness.png"),
        examples_summary=summary_of("results/{cs}/robustness/{model}/fold_{fold}/robustness_examples.png"),
    params:
        model=lambda wc: model_config(wc.cs, wc.model),
        robustness=lambda wc: CASESTUDIES[wc.cs].get("robustness", {}),
        # the evaluate regions only: other evaluate settings do not rerun the sweep
        regions=lambda wc: CASESTUDIES[wc.cs].get("evaluate", {}).get("regions"),
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
    wildcard_constraints:
        cs=SEGMENTATION_CS,
    log:
        "logs/{cs}/robustness/{model}/fold_{fold}.log",
    benchmark:
        "results/{cs}/benchmarks/robustness/{model}/fold_{fold}.tsv"
    threads: rule_threads("robustness")
    resources:
        **rule_resources("robustness"),
    script:
        "../../scripts/robustness_seg.py"
