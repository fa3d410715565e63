# Task family "restoration" (casebook.tasks.restoration): 2D slices of the ingested
# volumes degraded at each level of the study (a dose: projection, Poisson counts,
# filtered back projection; a slice-thickness factor: slabs averaged, B-spline
# interpolated back; a source channel: histogram-matched; a hole: cut and filled by
# biharmonic inpainting), the models learn to restore them, and every method, tuned
# classical baselines included, is scored with PSNR and SSIM per level. Its hooks for
# the shared rules (train, targets), then its own rules.


def restoration_settings(cs):
    return CASESTUDIES[cs].get("restoration", {})


def degradation_of(cs):
    return restoration_settings(cs).get("degradation", "dose")


#: what each degradation's simulated pairs depend on (not the window, baselines or bootstrap)
SIMULATION_KEYS = {
    "dose": ("doses", "photons", "n_angles", "slices"),
    "thick_slices": ("factors", "slices", "channel"),
    "contrast": ("source_channel", "channel", "slices"),
    "missing_region": ("holes", "channel", "slices"),
}


def simulation_params(cs):
    cfg = restoration_settings(cs)
    return {k: cfg[k] for k in SIMULATION_KEYS[degradation_of(cs)] if k in cfg}


def pairs_of(cs):
    """The simulated pairs of a restoration study: results/<cs>/<degradation>/pairs.npz."""
    return f"results/{cs}/{degradation_of(cs)}/pairs.npz"


def restoration_targets(cs):
    out = [
        f"results/{cs}/evaluation/metrics.json",
        f"results/{cs}/figures/restoration_panels.png",
        f"results/{cs}/figures/metrics_vs_level.png",
    ]
    for model, fold in runs(cs):
        out += [
            f"{model_dir(cs, model, fold)}/metadata.json",
            f"results/{cs}/figures/{model}/fold_{fold}/training_curves.png",
        ]
    if restoration_settings(cs).get("downstream"):
        out += [
            f"results/{cs}/downstream/metrics.json",
            f"results/{cs}/figures/downstream_dice.png",
        ]
    return out


def restoration_fold(cs):
    """The one fold every model's evaluation uses: the baselines are tuned on its
    validation slices, so a model trained on another fold could have trained on them."""
    folds = sorted({f for _, f in first_runs(cs)})
    if len(folds) != 1:
        raise WorkflowError(
            f"case study {cs!r}: every model of a restoration study must train the same first fold "
            f"(the baselines are tuned on its validation slices); got folds {folds}"
        )
    return folds[0]


FAMILY_HOOKS["restoration"] = {
    "train_input": lambda wc: {
        "pairs": pairs_of(wc.cs),
        "splits": f"results/{wc.cs}/split/splits.json",
        "leakage": f"results/{wc.cs}/split/leakage_check.json",
    },
    # the window sets the networks' input scale; the rest of the section is evaluation's
    "train_params": lambda wc: {"window": restoration_settings(wc.cs).get("window")},
    "targets": restoration_targets,
}

RESTORATION_CS = cases_of("restoration")
DOSE_CS = cs_pattern(
    [
        cs
        for cs in CASESTUDIES
        if task_of(cs) == "restoration" and degradation_of(cs) == "dose"
    ]
)
CONTRAST_CS = cs_pattern(
    [
        cs
        for cs in CASESTUDIES
        if task_of(cs) == "restoration" and degradation_of(cs) == "contrast"
    ]
)
THICK_SLICE_CS = cs_pattern(
    [
        cs
        for cs in CASESTUDIES
        if task_of(cs) == "restoration" and degradation_of(cs) == "thick_slices"
    ]
)

MISSING_REGION_CS = cs_pattern(
    [
        cs
        for cs in CASESTUDIES
        if task_of(cs) == "restoration" and degradation_of(cs) == "missing_region"
    ]
)

DOWNSTREAM_CS = cs_pattern(
    [
        cs
        for cs in CASESTUDIES
        if task_of(cs) == "restoration" and restoration_settings(cs).get("downstream")
    ]
)


include: "restoration/rules.smk"
