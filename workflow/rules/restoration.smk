# Task family "restoration" (casebook.tasks.restoration): denoising of low-dose CT. The
# ingested volumes' central axial slices are simulated at each dose (projection, Poisson
# counts, filtered back projection), the models learn to restore them, and every method,
# tuned classical baselines included, is scored with PSNR and SSIM per dose. Its hooks
# for the shared rules (train, targets), then its own rules.


def restoration_settings(cs):
    return CASESTUDIES[cs].get("restoration", {})


def simulation_params(cs):
    """What the simulated pairs depend on (not the window, baselines or bootstrap)."""
    cfg = restoration_settings(cs)
    return {k: cfg[k] for k in ("doses", "photons", "n_angles", "slices") if k in cfg}


def restoration_targets(cs):
    out = [
        f"results/{cs}/evaluation/metrics.json",
        f"results/{cs}/figures/denoising_panels.png",
        f"results/{cs}/figures/metrics_vs_dose.png",
    ]
    for model, fold in runs(cs):
        out += [
            f"{model_dir(cs, model, fold)}/metadata.json",
            f"results/{cs}/figures/{model}/fold_{fold}/training_curves.png",
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
        "pairs": f"results/{wc.cs}/dose/pairs.npz",
        "splits": f"results/{wc.cs}/split/splits.json",
        "leakage": f"results/{wc.cs}/split/leakage_check.json",
    },
    # the window sets the networks' input scale; the rest of the section is evaluation's
    "train_params": lambda wc: {"window": restoration_settings(wc.cs).get("window")},
    "targets": restoration_targets,
}

RESTORATION_CS = cases_of("restoration")


include: "restoration/rules.smk"
