# Explanations: attribution maps of test images (MONAI, Captum), their faithfulness
# (deletion / insertion), localisation (pointing game, energy in the lesion mask) and
# the model-randomization sanity check.


rule explain:
    input:
        model="results/{cs}/models/{model}/fold_{fold}/model.pt",
        predictions="results/{cs}/evaluation/{model}/fold_{fold}/predictions.tsv",
        images="results/{cs}/preprocess/images.npy",
        masks="results/{cs}/preprocess/masks.npy",
        index="results/{cs}/preprocess/index.tsv",
    output:
        grid=report(
            "results/{cs}/explain/{model}/fold_{fold}/attributions.png",
            caption="../../report/attributions.rst",
            category="{cs}",
            subcategory="{model}",
            labels={
                "model": "{model}",
                "fold": "{fold}",
                "figure": "attribution maps",
            },
        ),
        faithfulness=report(
            "results/{cs}/explain/{model}/fold_{fold}/faithfulness.png",
            caption="../../report/faithfulness.rst",
            category="{cs}",
            subcategory="{model}",
            labels={
                "model": "{model}",
                "fold": "{fold}",
                "figure": "attribution faithfulness",
            },
        ),
        sanity=report(
            "results/{cs}/explain/{model}/fold_{fold}/sanity.png",
            caption="../../report/sanity.rst",
            category="{cs}",
            subcategory="{model}",
            labels={
                "model": "{model}",
                "fold": "{fold}",
                "figure": "attribution sanity check",
            },
        ),
        grid_summary=summary_of(
            "results/{cs}/explain/{model}/fold_{fold}/attributions.png"
        ),
        faithfulness_summary=summary_of(
            "results/{cs}/explain/{model}/fold_{fold}/faithfulness.png"
        ),
        sanity_summary=summary_of("results/{cs}/explain/{model}/fold_{fold}/sanity.png"),
        summary="results/{cs}/explain/{model}/fold_{fold}/explain.json",
    log:
        "logs/{cs}/explain/{model}/fold_{fold}.log",
    benchmark:
        "results/{cs}/benchmarks/explain/{model}/fold_{fold}.tsv"
    wildcard_constraints:
        cs=CLASSIFICATION_CS,
    group:
        "inference"
    threads: rule_threads("explain")
    resources:
        **rule_resources("explain"),
    params:
        model=lambda wc: model_config(wc.cs, wc.model),
        explain=lambda wc: CASESTUDIES[wc.cs].get("explain", {}),
        class_names=lambda wc: CASESTUDIES[wc.cs]["class_names"],
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
    script:
        "../../../scripts/explain.py"
