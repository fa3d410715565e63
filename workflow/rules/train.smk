# Training of one model on one fold (a job per fold, so folds run in parallel on a cluster).


rule train:
    input:
        images="results/{cs}/preprocess/images.npy",
        index="results/{cs}/preprocess/index.tsv",
        splits="results/{cs}/split/splits.json",
        leakage="results/{cs}/split/leakage_check.json",
        data="results/{cs}/data",
    output:
        model="results/{cs}/models/{model}/fold_{fold}/model.pt",
        history="results/{cs}/models/{model}/fold_{fold}/history.tsv",
        card="results/{cs}/models/{model}/fold_{fold}/metadata.json",
        provenance="results/{cs}/models/{model}/fold_{fold}/provenance.json",
    params:
        model=lambda wc: model_config(wc.cs, wc.model),
        preprocess=lambda wc: CASESTUDIES[wc.cs]["preprocess"],
        class_names=lambda wc: CASESTUDIES[wc.cs]["class_names"],
    wildcard_constraints:
        cs=CLASSIFICATION_CS,
    log:
        "logs/{cs}/train/{model}/fold_{fold}.log",
    benchmark:
        "results/{cs}/benchmarks/train/{model}/fold_{fold}.tsv"
    threads: rule_threads("train")
    resources:
        **rule_resources("train"),
    script:
        "../../scripts/train.py"
