# Comparison rules: the shared images, the sweep's subsets, pretraining, the fits (one
# job per arm and seed, every level inside it) and the comparison of the arms.


rule prepare_comparison:
    input:
        data="results/{cs}/data",
    output:
        images="results/{cs}/comparison/images.npz",
        provenance="results/{cs}/comparison/images_provenance.json",
    log:
        "logs/{cs}/prepare_comparison.log",
    benchmark:
        "results/{cs}/benchmarks/prepare_comparison.tsv"
    wildcard_constraints:
        cs=COMPARISON_CS,
    threads: rule_threads("prepare_comparison")
    resources:
        **rule_resources("prepare_comparison"),
    params:
        comparison=lambda wc: {"size": comparison_settings(wc.cs)["size"]},
    script:
        "../../../scripts/prepare_comparison.py"


rule comparison_subsets:
    input:
        images="results/{cs}/comparison/images.npz",
        splits="results/{cs}/split/splits.json",
        leakage="results/{cs}/split/leakage_check.json",
    output:
        subsets="results/{cs}/comparison/subsets/seed_{seed}.json",
        provenance="results/{cs}/comparison/subsets/seed_{seed}_provenance.json",
    log:
        "logs/{cs}/comparison_subsets/seed_{seed}.log",
    wildcard_constraints:
        cs=COMPARISON_CS,
        seed=r"\d+",
    threads: rule_threads("comparison_subsets")
    resources:
        **rule_resources("comparison_subsets"),
    params:
        comparison=lambda wc: {
            k: comparison_settings(wc.cs)[k] for k in ("fold", "sweep")
        },
        class_names=lambda wc: CASESTUDIES[wc.cs]["class_names"],
    script:
        "../../../scripts/comparison_subsets.py"


rule comparison_pretrain:
    input:
        images="results/{cs}/comparison/images.npz",
        splits="results/{cs}/split/splits.json",
        leakage="results/{cs}/split/leakage_check.json",
    output:
        encoder="results/{cs}/comparison/pretrain/{pretraining}/encoder.pt",
        card="results/{cs}/comparison/pretrain/{pretraining}/card.json",
        provenance="results/{cs}/comparison/pretrain/{pretraining}/provenance.json",
        embedding=report(
            "results/{cs}/figures/embedding_{pretraining}.png",
            caption="../../report/comparison_embedding.rst",
            category="{cs}",
            labels={"figure": "embedding of the pretrained features"},
        ),
        summary=summary_of("results/{cs}/figures/embedding_{pretraining}.png"),
    log:
        "logs/{cs}/comparison_pretrain/{pretraining}.log",
    benchmark:
        "results/{cs}/benchmarks/comparison_pretrain/{pretraining}.tsv"
    wildcard_constraints:
        cs=COMPARISON_CS,
        pretraining="[a-z][a-z0-9_]*",
    threads: rule_threads("train")
    resources:
        **rule_resources("train"),
    params:
        spec=lambda wc: comparison_settings(wc.cs)["pretraining"][wc.pretraining],
        fold=lambda wc: comparison_settings(wc.cs)["fold"],
        seed=lambda wc: cs_seed(wc.cs),
        class_names=lambda wc: CASESTUDIES[wc.cs]["class_names"],
    script:
        "../../../scripts/comparison_pretrain.py"


rule comparison_fit:
    input:
        unpack(comparison_fit_input),
    output:
        predictions="results/{cs}/comparison/arms/{model}/seed_{seed}/predictions.tsv",
        costs="results/{cs}/comparison/arms/{model}/seed_{seed}/costs.tsv",
        provenance="results/{cs}/comparison/arms/{model}/seed_{seed}/provenance.json",
    log:
        "logs/{cs}/comparison_fit/{model}/seed_{seed}.log",
    benchmark:
        "results/{cs}/benchmarks/comparison_fit/{model}/seed_{seed}.tsv"
    wildcard_constraints:
        cs=COMPARISON_CS,
        seed=r"\d+",
    threads: rule_threads("train")
    resources:
        **rule_resources("train"),
    params:
        model=lambda wc: comparison_model(wc.cs, wc.model),
        comparison=lambda wc: {"fold": comparison_settings(wc.cs)["fold"]},
    script:
        "../../../scripts/comparison_fit.py"


rule comparison_evaluate:
    input:
        predictions=lambda wc: comparison_arm_files(wc.cs, "predictions"),
        costs=lambda wc: comparison_arm_files(wc.cs, "costs"),
    output:
        metrics="results/{cs}/comparison/metrics.json",
        table="results/{cs}/comparison/table.tsv",
        provenance="results/{cs}/comparison/provenance.json",
        curves=comparison_figure(
            "comparison_curves", "comparison_curves", "arms over the sweep"
        ),
        cost=comparison_figure(
            "comparison_cost", "comparison_cost", "accuracy against cost"
        ),
        differences=comparison_figure(
            "comparison_differences",
            "comparison_differences",
            "paired differences against the reference",
        ),
        curves_summary=summary_of("results/{cs}/figures/comparison_curves.png"),
        cost_summary=summary_of("results/{cs}/figures/comparison_cost.png"),
        differences_summary=summary_of(
            "results/{cs}/figures/comparison_differences.png"
        ),
    log:
        "logs/{cs}/comparison_evaluate.log",
    benchmark:
        "results/{cs}/benchmarks/comparison_evaluate.tsv"
    wildcard_constraints:
        cs=COMPARISON_CS,
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    params:
        comparison=lambda wc: {
            k: v
            for k, v in comparison_settings(wc.cs).items()
            if k not in ("size", "pretraining")
        },
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
    script:
        "../../../scripts/comparison_evaluate.py"


rule comparison_probe_figure:
    input:
        metrics="results/{cs}/comparison/metrics.json",
    output:
        probe=comparison_figure(
            "comparison_probe", "comparison_probe", "linear probe against fine-tuning"
        ),
        summary=summary_of("results/{cs}/figures/comparison_probe.png"),
    log:
        "logs/{cs}/comparison_probe_figure.log",
    wildcard_constraints:
        cs=COMPARISON_CS,
    params:
        models=lambda wc: CASESTUDIES[wc.cs]["models"],
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
    script:
        "../../../scripts/comparison_probe_figure.py"


localrules:
    comparison_probe_figure,
