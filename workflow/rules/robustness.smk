# Robustness of each classifier to acquisition-like perturbations of its test images
# (TorchIO), swept over severities; the threshold is the evaluate rule's.


rule robustness:
    input:
        model="results/{cs}/models/{model}/fold_{fold}/model.pt",
        images="results/{cs}/preprocess/images.npy",
        index="results/{cs}/preprocess/index.tsv",
        splits="results/{cs}/split/splits.json",
        metrics="results/{cs}/evaluation/{model}/fold_{fold}/metrics.json",
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
            labels={"model": "{model}", "fold": "{fold}", "figure": "perturbation examples"},
        ),
        curves_summary=summary_of("results/{cs}/robustness/{model}/fold_{fold}/robustness.png"),
        examples_summary=summary_of("results/{cs}/robustness/{model}/fold_{fold}/robustness_examples.png"),
    params:
        model=lambda wc: model_config(wc.cs, wc.model),
        robustness=lambda wc: CASESTUDIES[wc.cs].get("robustness", {}),
        class_names=lambda wc: CASESTUDIES[wc.cs]["class_names"],
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
    wildcard_constraints:
        cs=CLASSIFICATION_CS,
    log:
        "logs/{cs}/robustness/{model}/fold_{fold}.log",
    benchmark:
        "results/{cs}/benchmarks/robustness/{model}/fold_{fold}.tsv"
    group:
        "inference"
    threads: rule_threads("robustness")
    resources:
        **rule_resources("robustness"),
    script:
        "../../scripts/robustness.py"
