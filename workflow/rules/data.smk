# Data: download (login node), safe extraction of archives, ingest into the canonical
# layout (pseudonymized), geometry check, fingerprint and plan, patient-level split, and
# the leakage check that every training and evaluation job depends on.


rule download:
    output:
        "resources/{dataset}/{filename}",
    log:
        "logs/download/{dataset}/{filename}.log",
    threads: rule_threads("download")
    resources:
        **rule_resources("download"),
    params:
        spec=download_params,
    script:
        "../../scripts/download.py"


# The raw data of every configured case study, and an inventory of where each data set
# came from. 'snakemake resources/inventory.json' fetches everything (on a login node);
# DVC versions resources/ through it (dvc.yaml, stage raw_data).
rule raw_data:
    input:
        lambda wc: sorted({p for cs in CASESTUDIES for p in raw_files(cs)}),
    output:
        "resources/inventory.json",
    log:
        "logs/raw_data.log",
    threads: rule_threads("raw_data")
    resources:
        **rule_resources("raw_data"),
    params:
        datasets=lambda wc: inventory_params(),
    script:
        "../../scripts/raw_data.py"


rule extract:
    input:
        "resources/{dataset}/{filename}",
    output:
        directory("resources/{dataset}/extracted/{filename}"),
    log:
        "logs/extract/{dataset}/{filename}.log",
    threads: rule_threads("extract")
    resources:
        **rule_resources("extract"),
    script:
        "../../scripts/extract.py"


rule ingest:
    input:
        ingest_input,
    output:
        directory("results/{cs}/data"),
    log:
        "logs/{cs}/ingest.log",
    benchmark:
        "results/{cs}/benchmarks/ingest.tsv"
    threads: rule_threads("ingest")
    resources:
        **rule_resources("ingest"),
    params:
        ingest=lambda wc: ingest_params(wc.cs),
    script:
        "../../scripts/ingest.py"


rule check_geometry:
    input:
        "results/{cs}/data",
    output:
        "results/{cs}/qc/geometry.json",
    log:
        "logs/{cs}/check_geometry.log",
    group:
        "qc"
    threads: rule_threads("check_geometry")
    resources:
        **rule_resources("check_geometry"),
    script:
        "../../scripts/check_geometry.py"


rule fingerprint:
    input:
        data="results/{cs}/data",
        geometry="results/{cs}/qc/geometry.json",
    output:
        fingerprint="results/{cs}/qc/fingerprint.json",
        plan="results/{cs}/qc/plan.json",
    log:
        "logs/{cs}/fingerprint.log",
    benchmark:
        "results/{cs}/benchmarks/fingerprint.tsv"
    group:
        "qc"
    threads: rule_threads("fingerprint")
    resources:
        **rule_resources("fingerprint"),
    script:
        "../../scripts/fingerprint.py"


rule split:
    input:
        "results/{cs}/data",
    output:
        splits="results/{cs}/split/splits.json",
        table="results/{cs}/split/split_table.tsv",
    log:
        "logs/{cs}/split.log",
    group:
        "qc"
    threads: rule_threads("split")
    resources:
        **rule_resources("split"),
    params:
        split=lambda wc: CASESTUDIES[wc.cs].get("split", {}),
        seed=lambda wc: cs_seed(wc.cs),
    script:
        "../../scripts/split.py"


rule check_leakage:
    input:
        data="results/{cs}/data",
        splits="results/{cs}/split/splits.json",
    output:
        "results/{cs}/split/leakage_check.json",
    log:
        "logs/{cs}/check_leakage.log",
    group:
        "qc"
    threads: rule_threads("check_leakage")
    resources:
        **rule_resources("check_leakage"),
    script:
        "../../scripts/check_leakage.py"
