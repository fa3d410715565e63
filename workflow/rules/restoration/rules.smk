# Restoration rules: the low-dose simulation, and the evaluation of every method (the
# low-dose input, tuned classical baselines, each model's first fold) on the test slices.


rule simulate_dose:
    input:
        data="results/{cs}/data",
    output:
        pairs="results/{cs}/dose/pairs.npz",
        provenance="results/{cs}/dose/provenance.json",
    log:
        "logs/{cs}/simulate_dose.log",
    benchmark:
        "results/{cs}/benchmarks/simulate_dose.tsv"
    wildcard_constraints:
        cs=RESTORATION_CS,
    threads: rule_threads("simulate_dose")
    resources:
        **rule_resources("simulate_dose"),
    params:
        restoration=lambda wc: simulation_params(wc.cs),
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../../scripts/simulate_dose.py"


rule evaluate_restoration:
    input:
        models=lambda wc: [
            f"{model_dir(wc.cs, m, f)}/model.pt" for m, f in first_runs(wc.cs)
        ],
        pairs="results/{cs}/dose/pairs.npz",
        splits="results/{cs}/split/splits.json",
        leakage="results/{cs}/split/leakage_check.json",
    output:
        per_image="results/{cs}/evaluation/per_image.tsv",
        metrics="results/{cs}/evaluation/metrics.json",
        provenance="results/{cs}/evaluation/provenance.json",
        panels=report(
            "results/{cs}/figures/denoising_panels.png",
            caption="../../report/denoising_panels.rst",
            category="{cs}",
            labels={"figure": "denoising panels"},
        ),
        curves=report(
            "results/{cs}/figures/metrics_vs_dose.png",
            caption="../../report/metrics_vs_dose.rst",
            category="{cs}",
            labels={"figure": "PSNR and SSIM against dose"},
        ),
    log:
        "logs/{cs}/evaluate_restoration.log",
    benchmark:
        "results/{cs}/benchmarks/evaluate_restoration.tsv"
    wildcard_constraints:
        cs=RESTORATION_CS,
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    params:
        models=lambda wc: {m: model_config(wc.cs, m) for m, _ in first_runs(wc.cs)},
        fold=lambda wc: restoration_fold(wc.cs),
        restoration=lambda wc: restoration_settings(wc.cs),
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../../scripts/evaluate_restoration.py"
