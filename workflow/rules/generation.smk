# Task family "generation" (casebook.tasks.generation): class-conditional synthesis. The
# ingested 2D images are prepared once (one size, [-1, 1]); a diffusion model per model
# entry learns the first fold's training images (the shared train rule), samples with
# every configured sampler, and is measured against held-out real images in the feature
# space of a judge the pipeline trains; the utility study trains classifiers on real,
# synthetic and both. Its hooks for the shared rules (train, targets), then its rules.


def generation_settings(cs):
    return CASESTUDIES[cs].get("generation", {})


def generation_fold(cs):
    """The one fold every model, the judge and the utility study use: the judge and the
    memorization check read its training images, which the models must have learnt."""
    folds = sorted({f for _, f in first_runs(cs)})
    if len(folds) != 1:
        raise WorkflowError(
            f"case study {cs!r}: every model of a generation study must train the same first fold "
            f"(the judge and the memorization check use its training images); got folds {folds}"
        )
    return folds[0]


def generation_evaluation_settings(cs):
    """What evaluate_generation reads (not the utility study's or the sampling's keys)."""
    cfg = generation_settings(cs)
    keys = ("k", "memorization_quantile", "n_bootstrap_fd", "ci_level")
    return {
        **{k: cfg[k] for k in keys if k in cfg},
        "class_names": CASESTUDIES[cs]["class_names"],
        "title": CASESTUDIES[cs].get("title") or cs,
    }


def generation_targets(cs):
    out = [
        f"results/{cs}/evaluation/metrics.json",
        f"results/{cs}/figures/sample_grid.png",
        f"results/{cs}/figures/nearest_neighbours.png",
        f"results/{cs}/figures/sampler_steps.png",
    ]
    for model, fold in runs(cs):
        out += [
            f"{model_dir(cs, model, fold)}/metadata.json",
            f"results/{cs}/figures/{model}/fold_{fold}/training_curves.png",
        ]
    utility = generation_settings(cs).get("utility", {})
    if utility.get("fractions"):
        out += [
            f"results/{cs}/utility/{model}/utility.json" for model in utility_models(cs)
        ]
    return out


def utility_models(cs):
    """The models whose samples the utility study uses (generation.utility.models)."""
    chosen = generation_settings(cs).get("utility", {}).get("models") or model_names(cs)
    unknown = sorted(set(chosen) - set(model_names(cs)))
    if unknown:
        raise WorkflowError(
            f"case study {cs!r}: generation.utility.models names {unknown}, "
            f"which are not among its models {model_names(cs)}"
        )
    return chosen


FAMILY_HOOKS["generation"] = {
    "train_input": lambda wc: {
        "images": f"results/{wc.cs}/generation/images.npz",
        "splits": f"results/{wc.cs}/split/splits.json",
        "leakage": f"results/{wc.cs}/split/leakage_check.json",
    },
    # what the denoiser's training depends on beyond the model: the classes, the process
    "train_params": lambda wc: {
        "n_classes": len(CASESTUDIES[wc.cs]["class_names"]),
        "diffusion": generation_settings(wc.cs).get("diffusion", {}),
    },
    "targets": generation_targets,
}

GENERATION_CS = cases_of("generation")


include: "generation/rules.smk"
