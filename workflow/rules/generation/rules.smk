# Generation rules: the prepared images, the judge, each model's samples, their
# evaluation (all models together) and the utility study (per model).


rule prepare_generation:
    input:
        data="results/{cs}/data",
    output:
        images="results/{cs}/generation/images.npz",
        provenance="results/{cs}/generation/provenance.json",
    log:
        "logs/{cs}/prepare_generation.log",
    benchmark:
        "results/{cs}/benchmarks/prepare_generation.tsv"
    wildcard_constraints:
        cs=GENERATION_CS,
    threads: rule_threads("prepare_generation")
    resources:
        **rule_resources("prepare_generation"),
    params:
        generation=lambda wc: {
            k: generation_settings(wc.cs)[k] for k in ("size", "intensity_range")
        },
    script:
        "../../../scripts/prepare_generation.py"


rule train_judge:
    input:
        images="results/{cs}/generation/images.npz",
        splits="results/{cs}/split/splits.json",
        leakage="results/{cs}/split/leakage_check.json",
    output:
        model="results/{cs}/judge/model.pt",
        history="results/{cs}/judge/history.tsv",
        provenance="results/{cs}/judge/provenance.json",
    log:
        "logs/{cs}/train_judge.log",
    benchmark:
        "results/{cs}/benchmarks/train_judge.tsv"
    wildcard_constraints:
        cs=GENERATION_CS,
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    params:
        judge=lambda wc: generation_settings(wc.cs).get("judge", {}),
        fold=lambda wc: generation_fold(wc.cs),
        n_classes=lambda wc: len(CASESTUDIES[wc.cs]["class_names"]),
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../../scripts/train_judge.py"


rule sample_generation:
    input:
        model=lambda wc: f"{model_dir(wc.cs, wc.model, generation_fold(wc.cs))}/model.pt",
    output:
        samples="results/{cs}/samples/{model}/samples.npz",
        timing="results/{cs}/samples/{model}/timing.tsv",
        provenance="results/{cs}/samples/{model}/provenance.json",
    log:
        "logs/{cs}/sample_generation/{model}.log",
    benchmark:
        "results/{cs}/benchmarks/sample_generation/{model}.tsv"
    wildcard_constraints:
        cs=GENERATION_CS,
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    params:
        network=lambda wc: model_config(wc.cs, wc.model)["network"],
        sampling=lambda wc: {
            k: generation_settings(wc.cs)[k]
            for k in ("samplers", "n_per_class", "size")
        },
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../../scripts/sample_generation.py"


rule evaluate_generation:
    input:
        samples=lambda wc: [
            f"results/{wc.cs}/samples/{m}/samples.npz" for m in model_names(wc.cs)
        ],
        timings=lambda wc: [
            f"results/{wc.cs}/samples/{m}/timing.tsv" for m in model_names(wc.cs)
        ],
        judge="results/{cs}/judge/model.pt",
        images="results/{cs}/generation/images.npz",
        splits="results/{cs}/split/splits.json",
    output:
        table="results/{cs}/evaluation/samplers.tsv",
        memorization="results/{cs}/evaluation/memorization.tsv",
        metrics="results/{cs}/evaluation/metrics.json",
        provenance="results/{cs}/evaluation/provenance.json",
        grid=report(
            "results/{cs}/figures/sample_grid.png",
            caption="../../report/sample_grid.rst",
            category="{cs}",
            labels={"figure": "real and synthetic images"},
        ),
        neighbours=report(
            "results/{cs}/figures/nearest_neighbours.png",
            caption="../../report/nearest_neighbours.rst",
            category="{cs}",
            labels={"figure": "memorization: nearest training images"},
        ),
        steps=report(
            "results/{cs}/figures/sampler_steps.png",
            caption="../../report/sampler_steps.rst",
            category="{cs}",
            labels={"figure": "sample quality and time against steps"},
        ),
    log:
        "logs/{cs}/evaluate_generation.log",
    benchmark:
        "results/{cs}/benchmarks/evaluate_generation.tsv"
    wildcard_constraints:
        cs=GENERATION_CS,
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    params:
        models=lambda wc: model_names(wc.cs),
        fold=lambda wc: generation_fold(wc.cs),
        generation=lambda wc: generation_evaluation_settings(wc.cs),
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../../scripts/evaluate_generation.py"


rule utility_generation:
    input:
        samples="results/{cs}/samples/{model}/samples.npz",
        card=lambda wc: f"{model_dir(wc.cs, wc.model, generation_fold(wc.cs))}/metadata.json",
        images="results/{cs}/generation/images.npz",
        splits="results/{cs}/split/splits.json",
        leakage="results/{cs}/split/leakage_check.json",
    output:
        table="results/{cs}/utility/{model}/utility.tsv",
        metrics="results/{cs}/utility/{model}/utility.json",
        provenance="results/{cs}/utility/{model}/provenance.json",
        figure=report(
            "results/{cs}/figures/{model}/utility_curve.png",
            caption="../../report/utility_curve.rst",
            category="{cs}",
            labels={"figure": "utility of synthetic data", "model": "{model}"},
        ),
    log:
        "logs/{cs}/utility_generation/{model}.log",
    benchmark:
        "results/{cs}/benchmarks/utility_generation/{model}.tsv"
    wildcard_constraints:
        cs=GENERATION_CS,
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    params:
        fold=lambda wc: generation_fold(wc.cs),
        n_classes=lambda wc: len(CASESTUDIES[wc.cs]["class_names"]),
        utility=lambda wc: {
            **generation_settings(wc.cs)["utility"],
            "judge": generation_settings(wc.cs).get("judge", {}),
            "n_bootstrap": generation_settings(wc.cs)["n_bootstrap"],
            "ci_level": generation_settings(wc.cs)["ci_level"],
            "title": CASESTUDIES[wc.cs].get("title") or wc.cs,
        },
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../../scripts/utility_generation.py"
