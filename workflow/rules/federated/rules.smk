# Federated rules: the sites, one job per arm, the comparison of the arms.


rule federated_sites:
    input:
        data="results/{cs}/data",
        splits="results/{cs}/split/splits.json",
        leakage="results/{cs}/split/leakage_check.json",
    output:
        sites="results/{cs}/federated/sites.json",
        table="results/{cs}/federated/sites.tsv",
    log:
        "logs/{cs}/federated_sites.log",
    wildcard_constraints:
        cs=FEDERATED_CS,
    params:
        sites=lambda wc: federated_settings(wc.cs)["sites"],
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../../scripts/federated_sites.py"


rule train_federated:
    input:
        unpack(family_input("train")),
        sites="results/{cs}/federated/sites.json",
    output:
        model="results/{cs}/federated/{arm}/model.pt",
        history="results/{cs}/federated/{arm}/history.tsv",
        rounds="results/{cs}/federated/{arm}/rounds.npz",
        card="results/{cs}/federated/{arm}/metadata.json",
        provenance="results/{cs}/federated/{arm}/provenance.json",
    log:
        "logs/{cs}/train_federated/{arm}.log",
    benchmark:
        "results/{cs}/benchmarks/train_federated/{arm}.tsv"
    wildcard_constraints:
        cs=FEDERATED_CS,
        arm="[a-z][A-Za-z0-9_]*",
    threads: rule_threads("train_federated")
    resources:
        **rule_resources("train_federated"),
    params:
        task=lambda wc: task_of(wc.cs),
        model=lambda wc: model_config(wc.cs, federated_settings(wc.cs)["model"]),
        federated=lambda wc: federated_train_settings(wc.cs, wc.arm),
        family=family_params("train"),
    script:
        "../../../scripts/train_federated.py"


rule evaluate_federated:
    input:
        unpack(family_input("train")),
        sites="results/{cs}/federated/sites.json",
        models=lambda wc: [
            f"results/{wc.cs}/federated/{arm}/{name}"
            for arm in federated_arms(wc.cs)
            for name in ("model.pt", "rounds.npz", "metadata.json")
        ],
    output:
        scores="results/{cs}/federated/comparison.tsv",
        rounds="results/{cs}/federated/rounds.tsv",
        paired="results/{cs}/federated/paired.json",
        provenance="results/{cs}/federated/provenance.json",
        figure_rounds=report(
            "results/{cs}/figures/federated_rounds.png",
            caption="../../report/federated_rounds.rst",
            category="{cs}",
            labels={"figure": "test AUC against round"},
        ),
        figure_sites=report(
            "results/{cs}/figures/federated_sites.png",
            caption="../../report/federated_sites.rst",
            category="{cs}",
            labels={"figure": "test AUC per site and arm"},
        ),
        figure_privacy=report(
            "results/{cs}/figures/federated_privacy.png",
            caption="../../report/federated_privacy.rst",
            category="{cs}",
            labels={"figure": "the accuracy cost of privacy"},
        ),
        rounds_summary=summary_of("results/{cs}/figures/federated_rounds.png"),
        sites_summary=summary_of("results/{cs}/figures/federated_sites.png"),
        privacy_summary=summary_of("results/{cs}/figures/federated_privacy.png"),
    log:
        "logs/{cs}/evaluate_federated.log",
    benchmark:
        "results/{cs}/benchmarks/evaluate_federated.tsv"
    wildcard_constraints:
        cs=FEDERATED_CS,
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    params:
        task=lambda wc: task_of(wc.cs),
        arms=lambda wc: federated_arms(wc.cs),
        model=lambda wc: model_config(wc.cs, federated_settings(wc.cs)["model"]),
        n_bootstrap=lambda wc: federated_settings(wc.cs)["n_bootstrap"],
        seed=lambda wc: cs_seed(wc.cs),
        title=lambda wc: CASESTUDIES[wc.cs].get("title") or wc.cs,
        family=family_params("train"),
    script:
        "../../../scripts/evaluate_federated.py"
