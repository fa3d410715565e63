# Task family "comparison" (casebook.tasks.comparison): comparative studies of
# classifiers. The ingested images are prepared once for every arm; the sweep's nested
# patient subsets are drawn once per seed; each pretraining job learns an encoder on the
# unlabelled images of the study fold's training patients; each model (an arm) is
# trained with each seed at every level of the sweep; and the arms are compared on the
# same test patients. It uses no shared rule (its fits are a grid of arm x seed x level,
# not models x folds): its hooks are its targets only.


from casebook.tasks.comparison.plan import probe_pairs


def comparison_settings(cs):
    return CASESTUDIES[cs].get("comparison", {})


def comparison_seeds(cs):
    return comparison_settings(cs)["seeds"]


def comparison_init(cs, model):
    """The pretraining job a model starts from (None: random weights), checked."""
    network = CASESTUDIES[cs]["models"][model]["network"]
    init = network.get("init")
    jobs = comparison_settings(cs).get("pretraining") or {}
    if network.get("probe") and not (init or network.get("weights")):
        raise WorkflowError(
            f"case study {cs!r}: model {model!r} is a probe (network.probe) but names no network.init "
            "or network.weights to probe"
        )
    if init and network.get("weights"):
        raise WorkflowError(
            f"case study {cs!r}: model {model!r} sets both network.init and network.weights; it starts from one"
        )
    if init and init not in jobs:
        raise WorkflowError(
            f"case study {cs!r}: model {model!r} names network.init {init!r}, which is not among its "
            f"comparison.pretraining jobs {sorted(jobs)}"
        )
    return init


def comparison_checked(cs):
    """Plan-time checks of a study: two classes, a known reference arm, known inits,
    prevalence levels below 1."""
    study = CASESTUDIES[cs]
    sweep = comparison_settings(cs)["sweep"]
    if sweep["kind"] == "prevalence" and max(sweep["levels"]) >= 1:
        raise WorkflowError(
            f"case study {cs!r}: comparison.sweep.levels {sweep['levels']}: a prevalence must be below 1 "
            "(a training set of positives alone has no negatives to learn from)"
        )
    if len(study["class_names"]) != 2:
        raise WorkflowError(
            f"case study {cs!r}: a comparison study compares binary classifiers (AUC, AUPRC, "
            f"sensitivity at a specificity); it has classes {study['class_names']}"
        )
    reference = comparison_settings(cs).get("reference")
    if reference and reference not in study["models"]:
        raise WorkflowError(
            f"case study {cs!r}: comparison.reference {reference!r} is not among its models {model_names(cs)}"
        )
    for model in study["models"]:
        comparison_init(cs, model)
    return cs


def comparison_targets(cs):
    comparison_checked(cs)
    out = [
        f"results/{cs}/comparison/metrics.json",
        f"results/{cs}/figures/comparison_curves.png",
        f"results/{cs}/figures/comparison_cost.png",
        f"results/{cs}/figures/comparison_differences.png",
    ]
    if probe_pairs(CASESTUDIES[cs]["models"]):
        out.append(f"results/{cs}/figures/comparison_probe.png")
    out += [
        f"results/{cs}/figures/embedding_{name}.png"
        for name in comparison_settings(cs).get("pretraining") or {}
    ]
    return out


def comparison_fit_input(wc):
    inputs = {
        "images": f"results/{wc.cs}/comparison/images.npz",
        "splits": f"results/{wc.cs}/split/splits.json",
        "subsets": f"results/{wc.cs}/comparison/subsets/seed_{wc.seed}.json",
    }
    init = comparison_init(wc.cs, wc.model)
    if init:
        inputs["init"] = f"results/{wc.cs}/comparison/pretrain/{init}/encoder.pt"
    weights = CASESTUDIES[wc.cs]["models"][wc.model]["network"].get("weights")
    if weights:
        inputs["weights"] = weights["path"]
    return inputs


def comparison_arm_files(cs, name):
    return [
        f"results/{cs}/comparison/arms/{model}/seed_{seed}/{name}.tsv"
        for model in model_names(cs)
        for seed in comparison_seeds(cs)
    ]


def comparison_figure(name, caption, label):
    return report(
        f"results/{{cs}}/figures/{name}.png",
        caption=f"../../report/{caption}.rst",
        category="{cs}",
        labels={"figure": label},
    )


FAMILY_HOOKS["comparison"] = {"targets": comparison_targets}


def comparison_model(cs, model):
    """A model's settings as its fit reads them: the global seed is not among them (the
    fit's seeds are the study's), so changing it reruns no fit."""
    return {k: v for k, v in model_config(cs, model).items() if k != "seed"}


COMPARISON_CS = cases_of("comparison")


include: "comparison/rules.smk"
