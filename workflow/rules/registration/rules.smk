# Registration rules: the pairs (known deformations, an atlas, or patients), and the evaluation of every
# method (the unregistered pair, SimpleITK's baseline, each model's first fold) on the
# test pairs.


rule simulate_registration:
    input:
        data="results/{cs}/data",
        splits="results/{cs}/split/splits.json",
        leakage="results/{cs}/split/leakage_check.json",
    output:
        pairs="results/{cs}/registration/pairs.npz",
        provenance="results/{cs}/registration/pairs_provenance.json",
    log:
        "logs/{cs}/simulate_registration.log",
    benchmark:
        "results/{cs}/benchmarks/simulate_registration.tsv"
    wildcard_constraints:
        cs=REGISTRATION_CS,
    threads: rule_threads("simulate_registration")
    resources:
        **rule_resources("simulate_registration"),
    params:
        registration=lambda wc: {
            k: v for k, v in registration_settings(wc.cs).items() if k in PAIR_KEYS
        },
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../../scripts/simulate_registration.py"


rule evaluate_registration:
    input:
        models=lambda wc: [
            f"{model_dir(wc.cs, m, f)}/model.pt" for m, f in first_runs(wc.cs)
        ],
        pairs="results/{cs}/registration/pairs.npz",
        splits="results/{cs}/split/splits.json",
        leakage="results/{cs}/split/leakage_check.json",
    output:
        per_pair="results/{cs}/registration/per_pair.tsv",
        metrics="results/{cs}/registration/metrics.json",
        fields="results/{cs}/registration/fields.npz",
        provenance="results/{cs}/registration/provenance.json",
        checkerboard=report(
            "results/{cs}/figures/registration_checkerboard.png",
            caption="../../report/registration_checkerboard.rst",
            category="{cs}",
            labels={"figure": "checkerboards before and after registration"},
        ),
        jacobian=report(
            "results/{cs}/figures/registration_jacobian.png",
            caption="../../report/registration_jacobian.rst",
            category="{cs}",
            labels={"figure": "Jacobian determinant maps"},
        ),
        summary=report(
            "results/{cs}/figures/registration_metrics.png",
            caption="../../report/registration_metrics.rst",
            category="{cs}",
            labels={"figure": "registration metrics with CIs"},
        ),
        checkerboard_summary=summary_of(
            "results/{cs}/figures/registration_checkerboard.png"
        ),
        jacobian_summary=summary_of("results/{cs}/figures/registration_jacobian.png"),
        metrics_summary=summary_of("results/{cs}/figures/registration_metrics.png"),
    log:
        "logs/{cs}/evaluate_registration.log",
    benchmark:
        "results/{cs}/benchmarks/evaluate_registration.tsv"
    wildcard_constraints:
        cs=REGISTRATION_CS,
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    params:
        models=lambda wc: {m: model_config(wc.cs, m) for m, _ in first_runs(wc.cs)},
        registration=lambda wc: registration_settings(wc.cs),
        labels=lambda wc: scored_labels(wc.cs),
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../../scripts/evaluate_registration.py"


rule cine_ejection_fraction:
    input:
        pairs="results/{cs}/registration/pairs.npz",
        fields="results/{cs}/registration/fields.npz",
        splits="results/{cs}/split/splits.json",
        data="results/{cs}/data",
    output:
        table="results/{cs}/registration/ejection_fraction.tsv",
        metrics="results/{cs}/registration/ejection_fraction.json",
        provenance="results/{cs}/registration/ejection_fraction_provenance.json",
        agreement=report(
            "results/{cs}/figures/ejection_fraction.png",
            caption="../../report/ejection_fraction.rst",
            category="{cs}",
            labels={"figure": "ejection fraction agreement"},
        ),
        strip=report(
            "results/{cs}/figures/cine_tracking.png",
            caption="../../report/cine_tracking.rst",
            category="{cs}",
            labels={"figure": "tracked cine"},
        ),
        agreement_summary=summary_of("results/{cs}/figures/ejection_fraction.png"),
        strip_summary=summary_of("results/{cs}/figures/cine_tracking.png"),
    log:
        "logs/{cs}/cine_ejection_fraction.log",
    benchmark:
        "results/{cs}/benchmarks/cine_ejection_fraction.tsv"
    wildcard_constraints:
        cs=CINE_CS,
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    params:
        registration=lambda wc: registration_settings(wc.cs),
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../../scripts/cine_ejection_fraction.py"
