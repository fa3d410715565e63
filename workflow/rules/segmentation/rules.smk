# Segmentation rules: per-case preprocessing, evaluation in each image's own geometry,
# and the summary of a case study's models.


rule preprocess_seg:
    input:
        data="results/{cs}/data",
        plan="results/{cs}/qc/plan.json",
        geometry="results/{cs}/qc/geometry.json",
    output:
        cases=directory("results/{cs}/preprocess/cases"),
        plan="results/{cs}/preprocess/seg_plan.json",
    log:
        "logs/{cs}/preprocess.log",
    benchmark:
        "results/{cs}/benchmarks/preprocess.tsv"
    wildcard_constraints:
        cs=SEGMENTATION_CS,
    threads: rule_threads("preprocess")
    resources:
        **rule_resources("preprocess"),
    params:
        segmentation=lambda wc: preprocess_seg_params(wc.cs),
        class_names=lambda wc: CASESTUDIES[wc.cs]["class_names"],
    script:
        "../../../scripts/preprocess_seg.py"


rule evaluate_seg:
    input:
        model="results/{cs}/models/{model}/fold_{fold}/model.pt",
        cases="results/{cs}/preprocess/cases",
        plan="results/{cs}/preprocess/seg_plan.json",
        splits="results/{cs}/split/splits.json",
        leakage="results/{cs}/split/leakage_check.json",
        data="results/{cs}/data",
    output:
        predictions=directory("results/{cs}/evaluation/{model}/fold_{fold}/predictions"),
        per_case="results/{cs}/evaluation/{model}/fold_{fold}/per_case.tsv",
        metrics="results/{cs}/evaluation/{model}/fold_{fold}/metrics.json",
        provenance="results/{cs}/evaluation/{model}/fold_{fold}/provenance.json",
        overlays=report(
            "results/{cs}/evaluation/{model}/fold_{fold}/overlays.png",
            caption="../../report/overlays.rst",
            category="{cs}",
            subcategory="{model}",
            labels={
                "model": "{model}",
                "fold": "{fold}",
                "figure": "tri-planar overlays",
            },
        ),
        bland_altman=report(
            "results/{cs}/evaluation/{model}/fold_{fold}/bland_altman.png",
            caption="../../report/bland_altman.rst",
            category="{cs}",
            subcategory="{model}",
            labels={
                "model": "{model}",
                "fold": "{fold}",
                "figure": "volume agreement",
            },
        ),
        overlays_summary=summary_of(
            "results/{cs}/evaluation/{model}/fold_{fold}/overlays.png"
        ),
        bland_altman_summary=summary_of(
            "results/{cs}/evaluation/{model}/fold_{fold}/bland_altman.png"
        ),
    log:
        "logs/{cs}/evaluate/{model}/fold_{fold}.log",
    benchmark:
        "results/{cs}/benchmarks/evaluate/{model}/fold_{fold}.tsv"
    wildcard_constraints:
        cs=SEGMENTATION_CS,
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    params:
        model=lambda wc: model_config(wc.cs, wc.model),
        evaluate=lambda wc: evaluate_settings(wc.cs),
        title=lambda wc: f"{CASESTUDIES[wc.cs].get('title') or wc.cs}: {wc.model}",
    script:
        "../../../scripts/evaluate_seg.py"


rule summarize_seg:
    input:
        per_case=lambda wc: [
            f"results/{wc.cs}/evaluation/{m}/fold_{f}/per_case.tsv"
            for m, f in runs(wc.cs)
        ],
        metrics=lambda wc: [
            f"results/{wc.cs}/evaluation/{m}/fold_{f}/metrics.json"
            for m, f in runs(wc.cs)
        ],
    output:
        boxplot=report(
            "results/{cs}/figures/dice_boxplot.png",
            caption="../../report/dice_boxplot.rst",
            category="{cs}",
            subcategory="summary",
            labels={"figure": "per-case Dice"},
        ),
        figure=report(
            "results/{cs}/figures/model_comparison.png",
            caption="../../report/seg_comparison.rst",
            category="{cs}",
            subcategory="summary",
            labels={"figure": "model comparison"},
        ),
        table=report(
            "results/{cs}/summary.html",
            caption="../../report/seg_summary.rst",
            category="{cs}",
            subcategory="summary",
            labels={"figure": "test metrics table"},
        ),
        boxplot_summary=summary_of("results/{cs}/figures/dice_boxplot.png"),
        figure_summary=summary_of("results/{cs}/figures/model_comparison.png"),
        table_summary=summary_of("results/{cs}/summary.html"),
        tsv="results/{cs}/summary.tsv",
    log:
        "logs/{cs}/figures/summary.log",
    wildcard_constraints:
        cs=SEGMENTATION_CS,
    threads: rule_threads("summarize")
    resources:
        **rule_resources("summarize"),
    params:
        runs=lambda wc: [f"{m}/fold_{f}" for m, f in runs(wc.cs)],
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
    script:
        "../../../scripts/summarize_seg.py"
