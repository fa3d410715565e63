# Evaluation of each trained model on the held-out test set (touched only here).


rule evaluate:
    input:
        model="results/{cs}/models/{model}/fold_{fold}/model.pt",
        images="results/{cs}/preprocess/images.npy",
        index="results/{cs}/preprocess/index.tsv",
        splits="results/{cs}/split/splits.json",
        leakage="results/{cs}/split/leakage_check.json",
    output:
        predictions="results/{cs}/evaluation/{model}/fold_{fold}/predictions.tsv",
        val_predictions="results/{cs}/evaluation/{model}/fold_{fold}/predictions_val.tsv",
        metrics="results/{cs}/evaluation/{model}/fold_{fold}/metrics.json",
        provenance="results/{cs}/evaluation/{model}/fold_{fold}/provenance.json",
        roc_data="results/{cs}/evaluation/{model}/fold_{fold}/roc.tsv",
        roc=report(
            "results/{cs}/evaluation/{model}/fold_{fold}/roc.png",
            caption="../../report/roc.rst",
            category="{cs}",
            subcategory="{model}",
            labels={"model": "{model}", "fold": "{fold}", "figure": "ROC curve"},
        ),
        confusion=report(
            "results/{cs}/evaluation/{model}/fold_{fold}/confusion.png",
            caption="../../report/confusion.rst",
            category="{cs}",
            subcategory="{model}",
            labels={
                "model": "{model}",
                "fold": "{fold}",
                "figure": "confusion matrix",
            },
        ),
        roc_summary=summary_of("results/{cs}/evaluation/{model}/fold_{fold}/roc.png"),
        confusion_summary=summary_of(
            "results/{cs}/evaluation/{model}/fold_{fold}/confusion.png"
        ),
    log:
        "logs/{cs}/evaluate/{model}/fold_{fold}.log",
    benchmark:
        "results/{cs}/benchmarks/evaluate/{model}/fold_{fold}.tsv"
    wildcard_constraints:
        cs=CLASSIFICATION_CS,
    group:
        "inference"
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    params:
        model=lambda wc: model_config(wc.cs, wc.model),
        evaluate=lambda wc: evaluate_settings(wc.cs),
        class_names=lambda wc: CASESTUDIES[wc.cs]["class_names"],
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
    script:
        "../../../scripts/evaluate.py"
