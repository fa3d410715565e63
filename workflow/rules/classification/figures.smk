# Classification figures: sample images per class, the model comparison and the summary table.


rule figure_samples:
    input:
        images="results/{cs}/preprocess/images.npy",
        masks="results/{cs}/preprocess/masks.npy",
        index="results/{cs}/preprocess/index.tsv",
    output:
        report(
            "results/{cs}/figures/samples.png",
            caption="../../report/samples.rst",
            category="{cs}",
            subcategory="data",
            labels={"figure": "sample images"},
        ),
        summary=summary_of("results/{cs}/figures/samples.png"),
    log:
        "logs/{cs}/figures/samples.log",
    wildcard_constraints:
        cs=CLASSIFICATION_CS,
    threads: rule_threads("figure_samples")
    resources:
        **rule_resources("figure_samples"),
    params:
        class_names=lambda wc: CASESTUDIES[wc.cs]["class_names"],
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
    script:
        "../../../scripts/figure_samples.py"


rule summarize:
    input:
        crossval=lambda wc: [
            f"results/{wc.cs}/crossval/{m}/crossval.json" for m in model_names(wc.cs)
        ],
        explain=lambda wc: [
            f"results/{wc.cs}/explain/{m}/fold_{f}/explain.json"
            for m, f in first_runs(wc.cs)
        ],
        selection="results/{cs}/validation/selection.json",
    output:
        figure=report(
            "results/{cs}/figures/model_comparison.png",
            caption="../../report/model_comparison.rst",
            category="{cs}",
            subcategory="summary",
            labels={"figure": "model comparison"},
        ),
        table=report(
            "results/{cs}/summary.html",
            caption="../../report/summary.rst",
            category="{cs}",
            subcategory="summary",
            labels={"figure": "test metrics table"},
        ),
        figure_summary=summary_of("results/{cs}/figures/model_comparison.png"),
        table_summary=summary_of("results/{cs}/summary.html"),
        tsv="results/{cs}/summary.tsv",
    log:
        "logs/{cs}/figures/summary.log",
    wildcard_constraints:
        cs=CLASSIFICATION_CS,
    threads: rule_threads("summarize")
    resources:
        **rule_resources("summarize"),
    params:
        models=lambda wc: model_names(wc.cs),
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
    script:
        "../../../scripts/summarize.py"
