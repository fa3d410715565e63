# Case-study figures for the report: data overview, split, training curves, comparison.


rule figure_fingerprint:
    input:
        "results/{cs}/qc/fingerprint.json",
    output:
        report(
            "results/{cs}/figures/fingerprint.png",
            caption="../report/fingerprint.rst",
            category="{cs}",
            subcategory="data",
            labels={"figure": "data set fingerprint (QC)"},
        ),
        summary=summary_of("results/{cs}/figures/fingerprint.png"),
    log:
        "logs/{cs}/figures/fingerprint.log",
    threads: rule_threads("figure_fingerprint")
    resources:
        **rule_resources("figure_fingerprint"),
    script:
        "../../scripts/figure_fingerprint.py"


rule figure_split:
    input:
        "results/{cs}/split/split_table.tsv",
    output:
        report(
            "results/{cs}/figures/split.png",
            caption="../report/split.rst",
            category="{cs}",
            subcategory="data",
            labels={"figure": "patient-level split"},
        ),
        summary=summary_of("results/{cs}/figures/split.png"),
    log:
        "logs/{cs}/figures/split.log",
    threads: rule_threads("figure_split")
    resources:
        **rule_resources("figure_split"),
    params:
        class_names=lambda wc: CASESTUDIES[wc.cs]["class_names"],
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
    script:
        "../../scripts/figure_split.py"


rule figure_training:
    input:
        history="results/{cs}/models/{model}/fold_{fold}/history.tsv",
        card="results/{cs}/models/{model}/fold_{fold}/metadata.json",
    output:
        report(
            "results/{cs}/figures/{model}/fold_{fold}/training_curves.png",
            caption="../report/training_curves.rst",
            category="{cs}",
            subcategory="{model}",
            labels={"model": "{model}", "fold": "{fold}", "figure": "training curves"},
        ),
        summary=summary_of(
            "results/{cs}/figures/{model}/fold_{fold}/training_curves.png"
        ),
    log:
        "logs/{cs}/figures/{model}/fold_{fold}/training.log",
    threads: rule_threads("figure_training")
    resources:
        **rule_resources("figure_training"),
    params:
        title=lambda wc: f"{wc.model}, fold {wc.fold}",
        curves=lambda wc: training_curves(wc.cs),
    script:
        "../../scripts/figure_training.py"
