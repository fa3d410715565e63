# Preprocessing, cached once per case study (resampling, normalisation, resizing).


rule preprocess:
    input:
        unpack(classification_preprocess_input),
    output:
        images="results/{cs}/preprocess/images.npy",
        masks="results/{cs}/preprocess/masks.npy",
        index="results/{cs}/preprocess/index.tsv",
    log:
        "logs/{cs}/preprocess.log",
    benchmark:
        "results/{cs}/benchmarks/preprocess.tsv"
    wildcard_constraints:
        cs=CLASSIFICATION_CS,
    threads: rule_threads("preprocess")
    resources:
        **rule_resources("preprocess"),
    params:
        preprocess=lambda wc: CASESTUDIES[wc.cs]["preprocess"],
    script:
        "../../../scripts/preprocess.py"
