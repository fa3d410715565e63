# Federated training (casebook.engine.federated), a training strategy of the engine: a
# case study with a 'federated' section trains one model per arm (pooled, each site
# alone, each Flower strategy) on the sites of its patient-level split, then compares
# the arms on every site's test patients. Its family provides the site trainer (the
# stages train_federated and evaluate_federated); the data side is the family's own.


def is_federated(cs):
    return "federated" in CASESTUDIES[cs]


def federated_settings(cs):
    fed = CASESTUDIES[cs]["federated"]
    if fed["model"] not in CASESTUDIES[cs]["models"]:
        raise WorkflowError(
            f"case study {cs!r}: federated.model {fed['model']!r} is not one of its models {model_names(cs)}"
        )
    return fed


def federated_site_names(cs):
    """The sites, known when the DAG is planned (a site-alone arm is a job per site)."""
    sites = federated_settings(cs)["sites"]
    if sites.get("dirichlet"):
        return [f"site_{k + 1}" for k in range(int(sites["dirichlet"]["sites"]))]
    if not sites.get("names"):
        raise WorkflowError(
            f"case study {cs!r}: federated.sites.names must list the sites of column {sites.get('column', 'site')!r} "
            "(the site-alone arms are planned before the data are read)"
        )
    return list(sites["names"])


def federated_arms(cs):
    fed = federated_settings(cs)
    arms = ["pooled"] if "pooled" in fed["baselines"] else []
    if "sites" in fed["baselines"]:
        arms += [f"site_{s}" for s in federated_site_names(cs)]
    return arms + list(fed["strategies"])


def federated_train_settings(cs, arm):
    """What one arm's training reads: the shared settings and its own strategy only, so
    that adding or changing an arm reruns that arm alone."""
    fed = federated_settings(cs)
    shared = {
        k: v
        for k, v in fed.items()
        if k not in ("n_bootstrap", "baselines", "strategies")
    }
    mine = {arm: fed["strategies"][arm]} if arm in fed["strategies"] else {}
    return {**shared, "strategies": mine}


def federated_targets(cs):
    return [
        f"results/{cs}/federated/comparison.tsv",
        f"results/{cs}/figures/federated_rounds.png",
        f"results/{cs}/figures/federated_sites.png",
        f"results/{cs}/figures/federated_privacy.png",
    ] + [f"results/{cs}/federated/{arm}/metadata.json" for arm in federated_arms(cs)]


for _cs in CASESTUDIES:
    if is_federated(_cs) and "train_federated" not in family(task_of(_cs)).stages:
        raise WorkflowError(
            f"case study {_cs!r}: task {task_of(_cs)} has no federated site trainer; "
            f"federated training is available for {[t for t in TASKS if 'train_federated' in TASKS[t].stages]}"
        )

FEDERATED_CS = cs_pattern([cs for cs in CASESTUDIES if is_federated(cs)])


include: "federated/rules.smk"
