# Preprocessing, cached once per case study (resampling, normalisation, resizing).


rule preprocess:
    input:
        unpack(preprocess_input),
    output:
        images="results/{cs}/preprocess/images.npy",
        masks="results/{cs}/preprocess/masks.npy",
        index="results/{cs}/preprocess/index.tsv",
    params:
        preprocess=lambda wc: CASESTUDIES[wc.cs]["preprocess"],
    log:
        "logs/{cs}/preprocess.log",
    benchmark:
        "results/{cs}/benchmarks/preprocess.tsv"
    threads: lambda wc: resource("preprocess", "threads", 1)
    resources:
        mem_mb=lambda wc: resource("preprocess", "mem_mb", 4000),
        runtime=lambda wc: resource("preprocess", "runtime", 60),
    script:
        "../../scripts/preprocess.py"
