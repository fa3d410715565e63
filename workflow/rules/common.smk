# Config loading, validation, input functions and wildcard constraints.
import copy
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from casebook.config import deep_merge, schema_problems
from casebook.registry import REAL_DATA_ADAPTERS, load_registry, resolve
from casebook.tasks import TASKS, UnknownTask, casestudy_problems, family

CASESTUDY_SCHEMA = str(
    Path(workflow.basedir) / "workflow/schemas/casestudy.schema.yaml"
)


def validated(document, schema, where):
    """Concise errors naming the key path first; then Snakemake's validate fills defaults."""
    problems = schema_problems(document, schema)
    if problems:
        raise WorkflowError(f"{where}:\n  " + "\n  ".join(problems))
    validate(document, schema)
    return document


validated(
    config,
    str(Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"),
    "invalid configuration (config/config.yaml and any --configfile/--config)",
)


def _load_casestudy(path):
    """Read one case-study file, apply config 'overrides' for it, validate (filling defaults)."""
    if not Path(path).is_file():
        raise WorkflowError(
            f"case study file {path} (listed in config 'casestudies') does not exist"
        )
    with open(path) as fh:
        cs = yaml.safe_load(fh)
    if not isinstance(cs, dict) or "name" not in cs:
        raise WorkflowError(f"{path}: a case study must be a mapping with a 'name'")
    cs = deep_merge(cs, config.get("overrides", {}).get(cs["name"], {}))
    # each model's training settings are the case study's with the model's on top, merged
    # before validation so that schema defaults fill only what neither of them sets
    for spec in (cs.get("models") or {}).values():
        if isinstance(spec, dict):
            spec["train"] = deep_merge(cs.get("train") or {}, spec.get("train") or {})
    where = (
        f"{path} (with config overrides)"
        if cs["name"] in config.get("overrides", {})
        else path
    )
    try:  # the task registry (casebook.tasks), before schema defaults fill every section
        problems = casestudy_problems(cs)
    except UnknownTask as exc:
        raise WorkflowError(f"{where}: invalid case study: {exc}") from None
    if problems:
        raise WorkflowError(f"{where}: invalid case study:\n  " + "\n  ".join(problems))
    return validated(cs, CASESTUDY_SCHEMA, f"{where}: invalid case study")


CASESTUDIES = {}
for _path in config["casestudies"]:
    _cs = _load_casestudy(_path)
    if _cs["name"] in CASESTUDIES:
        raise WorkflowError(f"{_path}: case study name {_cs['name']!r} is used twice")
    CASESTUDIES[_cs["name"]] = _cs

REGISTRY = load_registry(config["registry"])


wildcard_constraints:
    cs="|".join(CASESTUDIES),
    model="[a-z][a-z0-9_]*",
    fold=r"\d+",
    dataset="[a-z][a-z0-9_]*",
    filename="[^/]+",


# Light jobs run where Snakemake runs (on a cluster: the login node, which also has the
# internet that compute nodes often lack): downloads, the inventory, figures, the summary.
localrules:
    all,
    download,
    raw_data,
    figure_fingerprint,
    figure_samples,
    figure_split,
    figure_training,
    summarize,
    summarize_seg,
    crossval,
    select_model,
    compare_models,
    subgroups,
    validation_figures,
    robustness_summary,


def cs_seed(cs):
    seed = CASESTUDIES[cs].get("split", {}).get("seed")
    return config["seed"] if seed is None else seed


# Fallbacks when config 'resources' names neither the rule nor a 'default'.
BASE_RESOURCES = {"threads": 1, "mem_mb": 4000, "runtime": 60}


def summary_of(path):
    """The provenance summary of a reported figure (provenance/<figure>.rst): written by
    the job that makes the figure, included by its report caption. Declared as an output,
    so that a missing summary makes its figure again rather than break the report."""
    return f"provenance/{path}.rst"


def rule_settings(rule):
    """A rule's row of config 'resources': its own entry over 'default' over the base."""
    table = config.get("resources", {})
    return {**BASE_RESOURCES, **table.get("default", {}), **table.get(rule, {})}


def rule_threads(rule):
    return int(rule_settings(rule)["threads"])


def rule_resources(rule):
    """Resources of one rule, from config (one place for a site: memory, wall time,
    GPUs and GPU model, SLURM partition, account, constraint). Memory and wall time grow
    with each retry (the SLURM profile sets 'retries'), so a job killed for running out
    of either is resubmitted with more: attempt n asks for 1 + growth * (n - 1) times.
    """
    growth = float(config.get("retry_growth", 0.5))
    out = {k: v for k, v in rule_settings(rule).items() if k != "threads"}
    for key in ("mem_mb", "runtime"):
        base = out[key]
        out[key] = lambda wc, attempt, base=base: int(
            base * (1 + growth * (attempt - 1))
        )
    return out


# ---- data -------------------------------------------------------------------------


def dataset_entry(cs):
    """The registry entry of a case study's data set, resolved at its image size."""
    ds = CASESTUDIES[cs]["dataset"]
    return resolve(REGISTRY, ds["name"], ds.get("size"))


ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")


def is_archive(filename):
    return filename.endswith(ARCHIVE_SUFFIXES)


def local_source(cs):
    """The case study's local path when it reads data in place (a folder), else None.

    A folder that holds the registry's file name is a mirror (copied and checksummed by
    the download rule); any other folder is the data set itself, already extracted
    (registration-only sets, a shared copy of an extracted Decathlon task).
    """
    ds = CASESTUDIES[cs]["dataset"]
    entry = dataset_entry(cs)
    if entry["access"] == "registration":
        path = ds.get("path")
        if ds.get("source") != "path" or not path:
            raise WorkflowError(
                f"case study {cs!r}: data set {ds['name']!r} needs registration and is never downloaded; "
                f"set dataset: {{source: path, path: <folder>}}. How to obtain it: {entry['obtain']}"
            )
        if not Path(path).exists():
            raise WorkflowError(
                f"case study {cs!r}: {path} (dataset.path of {ds['name']!r}) does not exist. {entry['obtain']}"
            )
        return path
    path = ds.get("path")
    filename = entry.get("filename")
    # only an archive can stand for its extracted folder; a folder lacking any other file
    # is a mirror missing it, which the download rule reports
    if (
        ds.get("source") == "path"
        and path
        and Path(path).is_dir()
        and filename
        and is_archive(filename)
    ):
        if not (Path(path) / filename).exists():
            return path
    return None


def download_path(cs):
    """Where the raw file of a case study's data set lands (None when nothing is fetched)."""
    entry = dataset_entry(cs)
    if not entry.get("filename") or local_source(cs):
        return None
    return f"resources/{CASESTUDIES[cs]['dataset']['name']}/{entry['filename']}"


def raw_files(cs):
    """What a case study's data set puts under resources/: the download and, for an
    archive, its extracted folder (all of resources/ is made by the raw_data target)."""
    path = download_path(cs)
    if path is None:
        return []
    dataset, filename = path.split("/")[1:]
    return (
        [path, f"resources/{dataset}/extracted/{filename}"]
        if is_archive(path)
        else [path]
    )


def inventory_params():
    """Per case study: its data set and where the raw data comes from (keyed by case
    study, as two case studies may read one data set with different parameters)."""
    out = {}
    for cs in CASESTUDIES:
        ds, entry = CASESTUDIES[cs]["dataset"], dataset_entry(cs)
        local = local_source(cs)
        out[cs] = {
            "dataset": ds["name"],
            "access": entry["access"],
            "source": (
                "embedded"
                if entry["access"] == "embedded"
                else ("path" if local else ds.get("source", "url"))
            ),
            "url": entry.get("url"),
            "path": local or ds.get("path"),
            "md5": ds.get("md5") or entry.get("md5"),
            "files": raw_files(cs),
            "generator": entry.get("generator"),
            "params": ds.get("params", {}) if entry["access"] == "embedded" else {},
            "licence": entry.get("licence"),
            "citation": entry.get("citation"),
        }
    return out


def download_params(wildcards):
    """Registry entry plus the case study's source/path/md5 choice for one raw file."""
    for cs in CASESTUDIES:
        if download_path(cs) == f"resources/{wildcards.dataset}/{wildcards.filename}":
            ds = CASESTUDIES[cs]["dataset"]
            full = dataset_entry(cs)
            # only what the transfer depends on: a corrected citation must not re-download
            entry = {
                "url": full["url"],
                "md5": ds.get("md5") or full["md5"],
                "filename": full["filename"],
            }
            return {
                "entry": entry,
                "source": ds.get("source", "url"),
                "path": ds.get("path"),
            }
    raise WorkflowError(
        f"no case study uses resources/{wildcards.dataset}/{wildcards.filename}"
    )


def ingest_input(wildcards):
    """What the adapter reads: the data folder in place, the extracted archive, or the file."""
    # a labels table is an input too: editing it must rerun ingest
    labels_csv = ingest_params(wildcards.cs)["adapter_params"].get("labels_csv")
    extra = [labels_csv] if labels_csv else []
    local = local_source(wildcards.cs)
    if local:
        return [local, *extra]
    path = download_path(wildcards.cs)
    if path is None:
        return extra
    if is_archive(path):
        dataset, filename = path.split("/")[1:]
        return [f"resources/{dataset}/extracted/{filename}", *extra]
    return [path, *extra]


def ingest_params(cs):
    """Everything the ingest stage depends on, and nothing else (so only its changes rerun it)."""
    entry = dataset_entry(cs)
    ds = CASESTUDIES[cs]["dataset"]
    return {
        "adapter": entry["adapter"],
        "dataset": ds["name"],
        "generator": entry.get("generator"),
        "params": ds.get("params", {}),
        "spatial_dims": entry.get("spatial_dims"),
        "class_names": CASESTUDIES[cs]["class_names"],
        "modality": CASESTUDIES[cs].get("modality", ""),
        "require_labels": family(task_of(cs)).image_labels,
        **(
            {"non_finite": ds["non_finite"]}
            if ds.get("non_finite", "error") != "error"
            else {}
        ),  # the default must not rerun ingest
        # real data only: a new key path must not rerun the embedded or MedMNIST ingest
        **(
            {
                "adapter_params": deep_merge(
                    entry.get("adapter_params") or {}, ds.get("adapter_params") or {}
                ),
                "key_file": config["deid_key"],
            }
            if entry["adapter"] in REAL_DATA_ADAPTERS
            else {"adapter_params": {}}
        ),
    }


# ---- task families ------------------------------------------------------------------
# Each family's rules file (workflow/rules/<task>.smk) fills FAMILY_HOOKS[<task>] with
# what the shared rules need from it: the input and params functions of each shared
# rule, its targets, its evaluate params and its robustness metric.
FAMILY_HOOKS = {task: {} for task in TASKS}


def task_of(cs):
    return CASESTUDIES[cs].get("task", "classification")


def family_hook(cs, name):
    """A hook of the case study's family; an error naming the family when it lacks one."""
    task = task_of(cs)
    if name not in FAMILY_HOOKS[task]:
        raise WorkflowError(
            f"case study {cs!r}: task {task} does not provide {name!r} (workflow/rules/{task}.smk)"
        )
    return FAMILY_HOOKS[task][name]


def family_input(rule):
    """Input function of a shared rule: the family's files for it."""
    return lambda wc: family_hook(wc.cs, f"{rule}_input")(wc)


def family_params(rule):
    """The family's own params of a shared rule (empty when it has none)."""
    return lambda wc: FAMILY_HOOKS[task_of(wc.cs)].get(f"{rule}_params", lambda wc: {})(
        wc
    )


def training_curves(cs):
    """What a training-curves figure plots: the family's selection score and loss."""
    fam = family(task_of(cs))
    return {
        "score": fam.selection_metric,
        "score_label": fam.selection_label,
        "loss_label": fam.loss_label,
    }


def cs_pattern(names):
    """A wildcard constraint matching exactly these case studies ("(?!)" matches none)."""
    return "|".join(names) if names else "(?!)"


def cases_of(task):
    """Wildcard constraint of a family's own rules: its case studies (every family writes
    results/<cs>/models/<model>/fold_<k>/..., the case study tells them apart)."""
    return cs_pattern([cs for cs in CASESTUDIES if task_of(cs) == task])


# ---- models -----------------------------------------------------------------------


def model_config(cs, model):
    """Network, training settings (merged at load time), augmentation and seed of one model."""
    study = CASESTUDIES[cs]
    if model not in study["models"]:
        raise WorkflowError(
            f"case study {cs!r} has no model {model!r}; it has {sorted(study['models'])}"
        )
    spec = study["models"][model]
    # the device is an execution setting, not a parameter: scripts read it from config
    out = {
        "network": spec["network"],
        "train": copy.deepcopy(spec["train"]),
        "augment": study.get("augment", {}),
        "seed": config["seed"],
    }
    # the family's sections every model reads: segmentation's patch and window settings
    out.update({key: study.get(key, {}) for key in family(task_of(cs)).model_sections})
    return out


def model_dir(cs, model, fold):
    return f"results/{cs}/models/{model}/fold_{fold}"


def model_folds(cs, model):
    """The folds one model trains: its own 'folds', else the case study's; 'all' is every
    fold of the split."""
    study = CASESTUDIES[cs]
    folds = study["models"][model].get("folds", study.get("folds", [0]))
    return list(range(split_folds(cs))) if folds == "all" else sorted(set(folds))


def split_folds(cs):
    """How many cross-validation folds the split makes: k, or the source folds listed."""
    split = CASESTUDIES[cs]["split"]
    return (
        len(split["source_folds"]["folds"]) if split.get("source_folds") else split["k"]
    )


def runs(cs):
    """(model, fold) pairs of a case study."""
    return [
        (m, f) for m in CASESTUDIES[cs].get("models") or {} for f in model_folds(cs, m)
    ]


def first_runs(cs):
    """(model, first fold) of each model: explanations and robustness sweeps are made for
    one fold per model, not repeated for every fold."""
    return [(m, model_folds(cs, m)[0]) for m in CASESTUDIES[cs].get("models") or {}]


def evaluate_settings(cs, **kwargs):
    """The case study's 'evaluate' block as a rule's params, filtered by its family, so
    that editing a key only another rule reads does not rerun the jobs that never read it.
    """
    return family_hook(cs, "evaluate_settings")(cs, **kwargs)


def model_names(cs):
    return list(CASESTUDIES[cs].get("models") or {})


# ---- targets ----------------------------------------------------------------------


def casestudy_targets(cs):
    """Every file of a case study: the data side's, then its family's."""
    data = [
        f"results/{cs}/split/leakage_check.json",
        f"results/{cs}/qc/geometry.json",
        f"results/{cs}/qc/plan.json",
        f"results/{cs}/figures/fingerprint.png",
    ]
    if is_federated(cs):  # its arms replace the family's usual models (federated.smk)
        return data + federated_targets(cs)
    return data + family_hook(cs, "targets")(cs)


def all_targets():
    return ["resources/inventory.json"] + [
        t for cs in CASESTUDIES for t in casestudy_targets(cs)
    ]
