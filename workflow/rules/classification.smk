# Task family "classification" (casebook.tasks.classification): image labels, one cached
# array per image. Its hooks for the shared rules (train, robustness, targets) and its
# own rules: preprocessing, evaluation, explanation, validation and figures.


def classification_preprocess_input(wildcards):
    """The data, and the plan only where a setting is 'auto' (a new fingerprint must not
    rerun preprocessing, and all training after it, for nothing)."""
    cfg = CASESTUDIES[wildcards.cs]["preprocess"]
    inputs = {"data": f"results/{wildcards.cs}/data"}
    if "auto" in (cfg.get("spacing"), cfg.get("intensity")):
        inputs["plan"] = f"results/{wildcards.cs}/qc/plan.json"
    return inputs


def classification_cache(cs):
    return {
        "images": f"results/{cs}/preprocess/images.npy",
        "index": f"results/{cs}/preprocess/index.tsv",
        "splits": f"results/{cs}/split/splits.json",
    }


#: evaluate keys read only by the subgroups rule: changing them must not rerun evaluation
SUBGROUP_KEYS = ("subgroups", "min_group_patients")


def classification_evaluate_settings(cs, *, subgroups=False):
    """The 'evaluate' block: the subgroup keys only for the subgroups rule."""
    cfg = dict(CASESTUDIES[cs].get("evaluate", {}))
    return (
        cfg if subgroups else {k: v for k, v in cfg.items() if k not in SUBGROUP_KEYS}
    )


def classification_validation_targets(cs):
    """Cross-validation, calibration, selection and robustness summaries; the paired
    comparison needs two models, the subgroup analysis a column."""
    out = [
        f"results/{cs}/validation/selection.json",
        f"results/{cs}/figures/fold_spread.png",
        f"results/{cs}/figures/reliability.png",
        f"results/{cs}/figures/robustness.png",
    ]
    if (
        len(model_names(cs)) > 1 and len(CASESTUDIES[cs]["class_names"]) == 2
    ):  # paired AUC tests are binary
        out.append(f"results/{cs}/figures/pairwise.png")
    if CASESTUDIES[cs].get("evaluate", {}).get("subgroups"):
        out.append(f"results/{cs}/figures/subgroups.png")
    return out


def classification_targets(cs):
    out = [
        f"results/{cs}/figures/samples.png",
        f"results/{cs}/figures/split.png",
        f"results/{cs}/figures/model_comparison.png",
        f"results/{cs}/summary.html",
    ] + classification_validation_targets(cs)
    for model, fold in runs(cs):
        out += [
            f"{model_dir(cs, model, fold)}/metadata.json",
            f"results/{cs}/evaluation/{model}/fold_{fold}/metrics.json",
            f"results/{cs}/evaluation/{model}/fold_{fold}/roc.png",
            f"results/{cs}/evaluation/{model}/fold_{fold}/confusion.png",
            f"results/{cs}/figures/{model}/fold_{fold}/training_curves.png",
        ]
    for model, fold in first_runs(cs):
        out += [
            f"results/{cs}/explain/{model}/fold_{fold}/attributions.png",
            f"results/{cs}/robustness/{model}/fold_{fold}/robustness.png",
        ]
    return out


FAMILY_HOOKS["classification"] = {
    "train_input": lambda wc: {
        **classification_cache(wc.cs),
        "leakage": f"results/{wc.cs}/split/leakage_check.json",
        "data": f"results/{wc.cs}/data",
    },
    "train_params": lambda wc: {
        "preprocess": CASESTUDIES[wc.cs]["preprocess"],
        "class_names": CASESTUDIES[wc.cs]["class_names"],
    },
    "robustness_input": lambda wc: {
        **classification_cache(wc.cs),
        "model": f"{model_dir(wc.cs, wc.model, wc.fold)}/model.pt",
        "metrics": f"results/{wc.cs}/evaluation/{wc.model}/fold_{wc.fold}/metrics.json",
    },
    "robustness_params": lambda wc: {"class_names": CASESTUDIES[wc.cs]["class_names"]},
    "robustness_metric": lambda cs: CASESTUDIES[cs]
    .get("robustness", {})
    .get("metric", "auc"),
    "evaluate_settings": classification_evaluate_settings,
    "targets": classification_targets,
}

CLASSIFICATION_CS = cases_of("classification")


include: "classification/preprocess.smk"
include: "classification/evaluate.smk"
include: "classification/explain.smk"
include: "classification/validation.smk"
include: "classification/figures.smk"
