# Training of one model on one fold (a job per fold, so folds run in parallel on a
# cluster), for every task family: what it reads and its family's settings come from the
# family's rules file (family_input, family_params); the script runs the family's stage.


rule train:
    input:
        unpack(family_input("train")),
    output:
        model="results/{cs}/models/{model}/fold_{fold}/model.pt",
        history="results/{cs}/models/{model}/fold_{fold}/history.tsv",
        card="results/{cs}/models/{model}/fold_{fold}/metadata.json",
        provenance="results/{cs}/models/{model}/fold_{fold}/provenance.json",
    log:
        "logs/{cs}/train/{model}/fold_{fold}.log",
    benchmark:
        "results/{cs}/benchmarks/train/{model}/fold_{fold}.tsv"
    threads: rule_threads("train")
    resources:
        **rule_resources("train"),
    params:
        task=lambda wc: task_of(wc.cs),
        model=lambda wc: model_config(wc.cs, wc.model),
        family=family_params("train"),
    script:
        "../../scripts/train.py"
