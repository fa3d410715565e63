# Restoration rules: the degradations (low dose; thick slices; another contrast; a
# missing region), the evaluation of every method (the degraded input, tuned
# classical baselines, each model's first fold) on the test slices, and the downstream
# segmentation of their outputs.


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
        cs=DOSE_CS,
    threads: rule_threads("simulate_dose")
    resources:
        **rule_resources("simulate_dose"),
    params:
        restoration=lambda wc: simulation_params(wc.cs),
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../../scripts/simulate_dose.py"


rule simulate_thick_slices:
    input:
        data="results/{cs}/data",
    output:
        pairs="results/{cs}/thick_slices/pairs.npz",
        provenance="results/{cs}/thick_slices/provenance.json",
    log:
        "logs/{cs}/simulate_thick_slices.log",
    benchmark:
        "results/{cs}/benchmarks/simulate_thick_slices.tsv"
    wildcard_constraints:
        cs=THICK_SLICE_CS,
    threads: rule_threads("simulate_dose")
    resources:
        **rule_resources("simulate_dose"),
    params:
        restoration=lambda wc: simulation_params(wc.cs),
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../../scripts/simulate_thick_slices.py"


rule simulate_contrast:
    input:
        data="results/{cs}/data",
        splits="results/{cs}/split/splits.json",
        leakage="results/{cs}/split/leakage_check.json",
    output:
        pairs="results/{cs}/contrast/pairs.npz",
        provenance="results/{cs}/contrast/provenance.json",
    log:
        "logs/{cs}/simulate_contrast.log",
    benchmark:
        "results/{cs}/benchmarks/simulate_contrast.tsv"
    wildcard_constraints:
        cs=CONTRAST_CS,
    threads: rule_threads("simulate_dose")
    resources:
        **rule_resources("simulate_dose"),
    params:
        restoration=lambda wc: simulation_params(wc.cs),
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../../scripts/simulate_contrast.py"


rule simulate_missing_region:
    input:
        data="results/{cs}/data",
    output:
        pairs="results/{cs}/missing_region/pairs.npz",
        provenance="results/{cs}/missing_region/provenance.json",
    log:
        "logs/{cs}/simulate_missing_region.log",
    benchmark:
        "results/{cs}/benchmarks/simulate_missing_region.tsv"
    wildcard_constraints:
        cs=MISSING_REGION_CS,
    threads: rule_threads("simulate_dose")
    resources:
        **rule_resources("simulate_dose"),
    params:
        restoration=lambda wc: simulation_params(wc.cs),
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../../scripts/simulate_missing_region.py"


rule evaluate_restoration:
    input:
        models=lambda wc: [
            f"{model_dir(wc.cs, m, f)}/model.pt" for m, f in first_runs(wc.cs)
        ],
        pairs=lambda wc: pairs_of(wc.cs),
        splits="results/{cs}/split/splits.json",
        leakage="results/{cs}/split/leakage_check.json",
    output:
        per_image="results/{cs}/evaluation/per_image.tsv",
        metrics="results/{cs}/evaluation/metrics.json",
        restored="results/{cs}/evaluation/restored.npz",
        provenance="results/{cs}/evaluation/provenance.json",
        panels=report(
            "results/{cs}/figures/restoration_panels.png",
            caption="../../report/restoration_panels.rst",
            category="{cs}",
            labels={"figure": "restoration panels"},
        ),
        curves=report(
            "results/{cs}/figures/metrics_vs_level.png",
            caption="../../report/metrics_vs_level.rst",
            category="{cs}",
            labels={"figure": "PSNR and SSIM against the degradation level"},
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


rule downstream_restoration:
    input:
        pairs=lambda wc: pairs_of(wc.cs),
        restored="results/{cs}/evaluation/restored.npz",
        splits="results/{cs}/split/splits.json",
        leakage="results/{cs}/split/leakage_check.json",
    output:
        model="results/{cs}/downstream/segmenter/model.pt",
        per_image="results/{cs}/downstream/per_image.tsv",
        metrics="results/{cs}/downstream/metrics.json",
        provenance="results/{cs}/downstream/provenance.json",
        figure=report(
            "results/{cs}/figures/downstream_dice.png",
            caption="../../report/downstream_dice.rst",
            category="{cs}",
            labels={"figure": "downstream segmentation Dice"},
        ),
    log:
        "logs/{cs}/downstream_restoration.log",
    benchmark:
        "results/{cs}/benchmarks/downstream_restoration.tsv"
    wildcard_constraints:
        cs=DOWNSTREAM_CS,
    threads: rule_threads("train")
    resources:
        **rule_resources("train"),
    params:
        fold=lambda wc: restoration_fold(wc.cs),
        restoration=lambda wc: restoration_settings(wc.cs),
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../../scripts/downstream_restoration.py"
