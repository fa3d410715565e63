# Task family "registration" (casebook.tasks.registration): central slices of the
# ingested volumes, paired (each with its copy deformed by a known random field, with an
# atlas, with another patient, or a cine's end diastole with its other frames); MONAI's
# VoxelMorph, LocalNet and GlobalNet learn to register the pairs unsupervised, and every
# method, SimpleITK's affine then B-spline baseline included, is scored on the test
# pairs; a cine's tracked labels give its ejection fraction. Its hooks for the shared
# rules (train, targets), then its own rules.


def registration_settings(cs):
    return CASESTUDIES[cs].get("registration", {})


def scored_labels(cs):
    """Label value -> name of the labels the warped label maps are scored on: the
    section's 'labels', else every class but the first (the background)."""
    names = CASESTUDIES[cs]["class_names"]
    values = registration_settings(cs).get("labels") or range(1, len(names))
    return {int(v): names[int(v)] if int(v) < len(names) else str(v) for v in values}


#: what the simulated pairs depend on (not the baselines, labels or bootstrap)
PAIR_KEYS = (
    "pairing",
    "atlas",
    "channel",
    "fixed_channel",
    "slices",
    "size",
    "deformation",
)


def registration_targets(cs):
    out = [
        f"results/{cs}/registration/metrics.json",
        f"results/{cs}/figures/registration_checkerboard.png",
        f"results/{cs}/figures/registration_jacobian.png",
        f"results/{cs}/figures/registration_metrics.png",
    ]
    if registration_settings(cs).get("pairing") == "cine":
        out += [
            f"results/{cs}/registration/ejection_fraction.json",
            f"results/{cs}/figures/ejection_fraction.png",
            f"results/{cs}/figures/cine_tracking.png",
        ]
    for model, fold in runs(cs):
        out += [
            f"{model_dir(cs, model, fold)}/metadata.json",
            f"results/{cs}/figures/{model}/fold_{fold}/training_curves.png",
        ]
    return out


FAMILY_HOOKS["registration"] = {
    "train_input": lambda wc: {
        "pairs": f"results/{wc.cs}/registration/pairs.npz",
        "splits": f"results/{wc.cs}/split/splits.json",
        "leakage": f"results/{wc.cs}/split/leakage_check.json",
    },
    # the labels of the validation Dice that picks the best epoch
    "train_params": lambda wc: {"labels": sorted(scored_labels(wc.cs))},
    "targets": registration_targets,
}

REGISTRATION_CS = cases_of("registration")
CINE_CS = cs_pattern(
    [
        cs
        for cs in CASESTUDIES
        if task_of(cs) == "registration"
        and registration_settings(cs).get("pairing") == "cine"
    ]
)


include: "registration/rules.smk"
