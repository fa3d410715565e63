# Validation of classifiers: folds pooled out of fold, model selection on validation data
# only, paired model comparison and subgroups on the test set, calibration.


rule crossval:
    input:
        val=lambda wc: [
            f"results/{wc.cs}/evaluation/{wc.model}/fold_{f}/predictions_val.tsv"
            for f in model_folds(wc.cs, wc.model)
        ],
        test=lambda wc: [
            f"results/{wc.cs}/evaluation/{wc.model}/fold_{f}/predictions.tsv"
            for f in model_folds(wc.cs, wc.model)
        ],
    output:
        summary="results/{cs}/crossval/{model}/crossval.json",
        oof="results/{cs}/crossval/{model}/predictions_oof.tsv",
        test="results/{cs}/crossval/{model}/predictions_test.tsv",
    log:
        "logs/{cs}/crossval/{model}.log",
    wildcard_constraints:
        cs=CLASSIFICATION_CS,
    threads: rule_threads("crossval")
    resources:
        **rule_resources("crossval"),
    params:
        folds=lambda wc: model_folds(wc.cs, wc.model),
        evaluate=lambda wc: evaluate_settings(wc.cs),
    script:
        "../../../scripts/crossval.py"


rule select_model:
    # out-of-fold validation predictions only: no test data can enter the choice
    input:
        oof=lambda wc: [
            f"results/{wc.cs}/crossval/{m}/predictions_oof.tsv"
            for m in model_names(wc.cs)
        ],
    output:
        "results/{cs}/validation/selection.json",
    log:
        "logs/{cs}/validation/select_model.log",
    wildcard_constraints:
        cs=CLASSIFICATION_CS,
    threads: rule_threads("select_model")
    resources:
        **rule_resources("select_model"),
    params:
        models=lambda wc: model_names(wc.cs),
        evaluate=lambda wc: evaluate_settings(wc.cs),
    script:
        "../../../scripts/select_model.py"


rule compare_models:
    input:
        test=lambda wc: [
            f"results/{wc.cs}/crossval/{m}/predictions_test.tsv"
            for m in model_names(wc.cs)
        ],
        selection="results/{cs}/validation/selection.json",
    output:
        table="results/{cs}/validation/pairwise.tsv",
        figure=report(
            "results/{cs}/figures/pairwise.png",
            caption="../../report/pairwise.rst",
            category="{cs}",
            subcategory="summary",
            labels={"figure": "paired model comparison"},
        ),
        figure_summary=summary_of("results/{cs}/figures/pairwise.png"),
    log:
        "logs/{cs}/validation/compare_models.log",
    wildcard_constraints:
        cs=CLASSIFICATION_CS,
    threads: rule_threads("compare_models")
    resources:
        **rule_resources("compare_models"),
    params:
        models=lambda wc: model_names(wc.cs),
        evaluate=lambda wc: evaluate_settings(wc.cs),
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
    script:
        "../../../scripts/compare_models.py"


rule subgroups:
    input:
        test=lambda wc: [
            f"results/{wc.cs}/crossval/{m}/predictions_test.tsv"
            for m in model_names(wc.cs)
        ],
        crossval=lambda wc: [
            f"results/{wc.cs}/crossval/{m}/crossval.json" for m in model_names(wc.cs)
        ],
        data="results/{cs}/data",
    output:
        table="results/{cs}/validation/subgroups.tsv",
        figure=report(
            "results/{cs}/figures/subgroups.png",
            caption="../../report/subgroups.rst",
            category="{cs}",
            subcategory="summary",
            labels={"figure": "subgroup analysis"},
        ),
        figure_summary=summary_of("results/{cs}/figures/subgroups.png"),
    log:
        "logs/{cs}/validation/subgroups.log",
    wildcard_constraints:
        cs=CLASSIFICATION_CS,
    threads: rule_threads("subgroups")
    resources:
        **rule_resources("subgroups"),
    params:
        models=lambda wc: model_names(wc.cs),
        evaluate=lambda wc: evaluate_settings(wc.cs, subgroups=True),
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
    script:
        "../../../scripts/subgroups.py"


rule validation_figures:
    input:
        crossval=lambda wc: [
            f"results/{wc.cs}/crossval/{m}/crossval.json" for m in model_names(wc.cs)
        ],
    output:
        fold_spread=report(
            "results/{cs}/figures/fold_spread.png",
            caption="../../report/fold_spread.rst",
            category="{cs}",
            subcategory="summary",
            labels={"figure": "cross-validation fold spread"},
        ),
        reliability=report(
            "results/{cs}/figures/reliability.png",
            caption="../../report/reliability.rst",
            category="{cs}",
            subcategory="summary",
            labels={"figure": "reliability diagram"},
        ),
        fold_spread_summary=summary_of("results/{cs}/figures/fold_spread.png"),
        reliability_summary=summary_of("results/{cs}/figures/reliability.png"),
    log:
        "logs/{cs}/validation/figures.log",
    wildcard_constraints:
        cs=CLASSIFICATION_CS,
    threads: rule_threads("validation_figures")
    resources:
        **rule_resources("validation_figures"),
    params:
        models=lambda wc: model_names(wc.cs),
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
    script:
        "../../../scripts/validation_figures.py"
