# Task family "segmentation" (casebook.tasks.segmentation): 3D voxel labels, per-case
# preprocessing with the plan from the fingerprint, patch-based training, sliding-window
# inference written back in each image's own geometry, per-case metrics and the model
# comparison. Its hooks for the shared rules (train, robustness, targets), then its own rules.


def preprocess_seg_params(cs):
    """What per-case segmentation preprocessing depends on (not the training settings)."""
    cfg = CASESTUDIES[cs].get("segmentation", {})
    return {
        "spacing": cfg.get("spacing", "auto"),
        "crop_margin": cfg.get("crop_margin", 2),
    }


def segmentation_cases(cs):
    return {
        "cases": f"results/{cs}/preprocess/cases",
        "plan": f"results/{cs}/preprocess/seg_plan.json",
        "splits": f"results/{cs}/split/splits.json",
    }


def segmentation_evaluate_settings(cs, **kwargs):
    """The 'evaluate' block less the classification-only keys (subgroups, calibration)."""
    skip = ("subgroups", "min_group_patients", "calibration_bins")
    return {
        k: v for k, v in CASESTUDIES[cs].get("evaluate", {}).items() if k not in skip
    }


def segmentation_targets(cs):
    out = [
        f"results/{cs}/figures/dice_boxplot.png",
        f"results/{cs}/figures/model_comparison.png",
        f"results/{cs}/summary.html",
    ]
    for model, fold in runs(cs):
        out += [
            f"{model_dir(cs, model, fold)}/metadata.json",
            f"results/{cs}/evaluation/{model}/fold_{fold}/metrics.json",
            f"results/{cs}/evaluation/{model}/fold_{fold}/overlays.png",
            f"results/{cs}/evaluation/{model}/fold_{fold}/bland_altman.png",
            f"results/{cs}/figures/{model}/fold_{fold}/training_curves.png",
        ]
    out += [
        f"results/{cs}/robustness/{model}/fold_{fold}/robustness.png"
        for model, fold in first_runs(cs)
    ]
    return out + [f"results/{cs}/figures/robustness.png"]


FAMILY_HOOKS["segmentation"] = {
    "train_input": lambda wc: {
        **segmentation_cases(wc.cs),
        "leakage": f"results/{wc.cs}/split/leakage_check.json",
    },
    "robustness_input": lambda wc: {
        **segmentation_cases(wc.cs),
        "model": f"{model_dir(wc.cs, wc.model, wc.fold)}/model.pt",
    },
    # the evaluate regions only: other evaluate settings do not rerun the sweep
    "robustness_params": lambda wc: {
        "regions": CASESTUDIES[wc.cs].get("evaluate", {}).get("regions")
    },
    "robustness_metric": lambda cs: "dice",  # the mean Dice over the evaluate regions
    "evaluate_settings": segmentation_evaluate_settings,
    "targets": segmentation_targets,
}

SEGMENTATION_CS = cases_of("segmentation")


include: "segmentation/rules.smk"
