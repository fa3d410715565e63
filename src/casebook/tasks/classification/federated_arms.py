"""The arms of a federated classification study: train one, then compare them all.

Arms: ``pooled`` (every site's training patients in one place), ``site_<name>`` (one
site alone) and each configured strategy (a real Flower federation). Every arm trains
the same network from the same seed for the same number of epochs (rounds times
local epochs) and keeps its weights after every round (``rounds.npz``), so the test
AUC can be drawn against the round. The comparison scores every arm on the test
patients of all sites and of each site, with patient-bootstrap intervals, and the
paired bootstrap of each federation against pooled training and against the best
site alone.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from casebook import provenance
from casebook.analysis.stats import bootstrap_ci, paired_bootstrap_test
from casebook.engine.checkpoint import resume_key as make_resume_key
from casebook.engine.checkpoint import save_torch
from casebook.engine.federated.launch import federate
from casebook.engine.federated.privacy import epsilon
from casebook.engine.loop import write_history
from casebook.engine.runtime import seed_everything, select_device
from casebook.fileio import atomic_path, read_json
from casebook.tasks.classification.cache import load_cache
from casebook.tasks.classification.data import CachedImages, make_loader, rows_for
from casebook.tasks.classification.federated import SiteClassifier, image_ids, site_classifier, weights_to_state
from casebook.tasks.classification.networks import build_network
from casebook.tasks.classification.train import auc_score, predict

log = logging.getLogger(__name__)

POOLED = "pooled"
SITE_PREFIX = "site_"


def arm_kind(arm: str) -> str:
    return "pooled" if arm == POOLED else "site alone" if arm.startswith(SITE_PREFIX) else "federated"


def site_digest(manifest: pd.DataFrame, ids: list[str]) -> str:
    """A digest of a site's images: their ids and source checksums (the audit's handle on a site's data)."""
    rows = manifest.set_index("image_id").loc[sorted(ids)]
    text = "\n".join(f"{i}\t{c}" for i, c in zip(rows.index, rows.get("source_checksum", pd.Series("", index=rows.index))))
    return hashlib.sha256(text.encode()).hexdigest()


def _initial_weights(cfg: dict[str, Any], images: np.ndarray, num_classes: int, seed: int) -> list[np.ndarray]:
    seed_everything(seed)
    net = build_network(cfg["network"], spatial_dims=images.ndim - 2, in_channels=images.shape[1], num_classes=num_classes)
    return [v.detach().numpy().copy() for v in net.state_dict().values()]


def train_arm(
    cfg: dict[str, Any],
    fed: dict[str, Any],
    arm: str,
    *,
    images: str,
    index: str,
    manifest: pd.DataFrame,
    sites: dict[str, dict[str, list[str]]],
    num_classes: int,
    out_dir: Path,
    resume_key: str,
    threads: int = 1,
) -> dict[str, Any]:
    """Train one arm; return its final weights, history (one row per round) and extras."""
    rounds, local_epochs = int(fed["rounds"]), int(fed["local_epochs"])
    seed = int(cfg.get("seed", 0))

    def kwargs(names: list[str], k: int) -> dict[str, Any]:
        train = [p for s in names for p in sites[s]["train"]]
        val = [p for s in names for p in sites[s]["val"]]
        return dict(
            cfg=cfg,
            images_path=images,
            index_path=index,
            train_ids=image_ids(manifest, train),
            val_ids=image_ids(manifest, val),
            num_classes=num_classes,
            seed=seed + k,
        )

    initial = _initial_weights(cfg, load_cache(images)[0], num_classes, seed)
    if arm == POOLED or arm.startswith(SITE_PREFIX):
        names = list(sites) if arm == POOLED else [arm[len(SITE_PREFIX) :]]
        return _train_in_one_place(SiteClassifier(**kwargs(names, 0)), initial, rounds, local_epochs, arm)
    spec = fed["strategies"][arm]
    result = federate(
        factory=site_classifier,
        sites={s: kwargs([s], k) for k, s in enumerate(sites)},
        initial=initial,
        strategy=spec,
        rounds=rounds,
        local_epochs=local_epochs,
        work_dir=out_dir / "federation",
        resume_key=resume_key,
        min_clients=fed.get("min_clients"),
        threads=max(1, threads // len(sites)),  # the job's threads shared by its clients
        round_timeout=fed.get("round_timeout"),
        seed=seed,
    )
    extra = {"resumed_after": result["resumed_after"], **_privacy_spent(spec, rounds)}
    return {"weights": result["parameters"], "history": result["history"], "snapshots": _round_weights(out_dir, result["history"]), **extra}


def _train_in_one_place(trainer: SiteClassifier, initial: list[np.ndarray], rounds: int, local_epochs: int, arm: str) -> dict[str, Any]:
    """A reference arm: the same epochs as a federation, scored and kept at the same points."""
    trainer.set_weights(initial)
    history, snapshots = [], []
    for round_ in range(1, rounds + 1):
        out = trainer.fit(local_epochs)
        scores = trainer.evaluate()
        history.append({"round": round_, "train_loss": out["train_loss"], "val_loss": scores["loss"], "val_auc": scores["auc"]})
        snapshots.append(trainer.get_weights())
        log.info("%s round %d: %s", arm, round_, history[-1])
    return {"weights": snapshots[-1], "history": history, "snapshots": snapshots}


def _round_weights(out_dir: Path, history: list[dict[str, Any]]) -> list[list[np.ndarray]]:
    """The global weights of every round the server wrote."""
    snapshots = []
    for row in history:
        with np.load(out_dir / "federation" / "rounds" / f"round_{row['round']:03d}.npz") as z:
            snapshots.append([z[f"arr_{i}"] for i in range(len(z.files))])
    return snapshots


def _privacy_spent(spec: dict[str, Any], rounds: int) -> dict[str, float]:
    """(epsilon, delta) of a private arm; nothing for the others."""
    privacy = spec.get("privacy") or {}
    if privacy.get("noise_multiplier") is None:
        return {}
    delta = float(privacy.get("delta", 1e-3))
    sample_rate = float(spec.get("fraction_fit", 1.0))
    return {
        "epsilon": epsilon(noise_multiplier=float(privacy["noise_multiplier"]), rounds=rounds, sample_rate=sample_rate, delta=delta),
        "delta": delta,
    }


def train_stage(
    cfg: dict[str, Any],
    fed: dict[str, Any],
    arm: str,
    *,
    inputs: dict[str, str],
    outputs: dict[str, str],
    class_names: list[str],
    wildcards,
    threads: int,
) -> dict[str, Any]:
    """The train_federated rule: one arm's model.pt, history, rounds, card and record."""
    started, code = provenance.now(), provenance.code_state()
    manifest = pd.read_csv(Path(inputs["data"]) / "manifest.tsv", sep="\t", dtype={"image_id": str, "patient_id": str})
    sites_doc = read_json(inputs["sites"])
    sites = sites_doc["sites"]
    if arm.startswith(SITE_PREFIX) and arm[len(SITE_PREFIX) :] not in sites:
        raise ValueError(f"{inputs['sites']}: arm {arm!r} names a site that is not in the federation; the sites are {sorted(sites)}")
    if arm not in (POOLED,) and not arm.startswith(SITE_PREFIX) and arm not in fed["strategies"]:
        raise ValueError(f"unknown federated arm {arm!r}: neither 'pooled', 'site_<name>' nor a strategy of {sorted(fed['strategies'])}")
    file_inputs = [inputs["images"], inputs["index"], inputs["splits"], inputs["sites"], str(Path(inputs["data"]) / "manifest.tsv")]
    sums = provenance.checksums(file_inputs)
    out_dir = Path(outputs["model"]).parent
    key = make_resume_key({"model": {k: v for k, v in cfg.items() if k != "device"}, "federated": fed, "arm": arm}, 0, sums)
    trained = train_arm(
        cfg, fed, arm, images=inputs["images"], index=inputs["index"], manifest=manifest, sites=sites,
        num_classes=len(class_names), out_dir=out_dir, resume_key=key, threads=threads,
    )  # fmt: skip
    images = load_cache(inputs["images"])[0]
    net = build_network(cfg["network"], spatial_dims=images.ndim - 2, in_channels=images.shape[1], num_classes=len(class_names))
    save_torch(Path(outputs["model"]), {"state_dict": weights_to_state(net, trained["weights"]), "round": int(fed["rounds"]), "arm": arm})
    with atomic_path(outputs["rounds"]) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{f"r{r}_{i}": w for r, ws in enumerate(trained["snapshots"], start=1) for i, w in enumerate(ws)})
    columns = list(dict.fromkeys(k for row in trained["history"] for k in row))
    write_history(Path(outputs["history"]), trained["history"], columns)
    site_data = {
        s: {
            "train_patients": len(sites[s]["train"]),
            "val_patients": len(sites[s]["val"]),
            "digest": site_digest(manifest, image_ids(manifest, sites[s]["train"] + sites[s]["val"])),
        }
        for s in sites
    }
    card = {
        "name": f"{wildcards['cs']}/federated/{arm}",
        "task": "classification",
        "strategy": arm_kind(arm),
        "arm": arm,
        "network": cfg["network"],
        "federated": {**{k: v for k, v in fed.items() if k != "strategies"}, "strategy": fed["strategies"].get(arm)},
        "sites": site_data,
        "rounds": len(trained["history"]),
        "privacy": {"epsilon": trained["epsilon"], "delta": trained["delta"]} if "epsilon" in trained else None,
        "resumed_after_round": trained.get("resumed_after", 0),
        "output": {"type": "softmax probabilities", "class_names": class_names},
        "intended_use": "Research and teaching (book case study). Not a medical device; not for clinical use.",
        "package_versions": provenance.package_versions(),
    }
    provenance.write_training_record(
        outputs,
        card,
        inputs=file_inputs,
        params={"model": cfg, "federated": fed, "arm": arm, "sites": site_data, "rounds": len(trained["history"])},
        seed=cfg.get("seed"),
        started=started,
        code=code,
        device=str(select_device(cfg.get("device", "auto"))),  # where the arm's trainers ran
        wildcards=wildcards,
    )
    return card


# ------------------------------------------------------------------------ comparison


def _test_predictions(net, images, index, manifest, patients, batch_size=64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = image_ids(manifest, patients)
    rows, labels = rows_for(index, ids)
    probs, labels = predict(net, make_loader(CachedImages(images, labels, rows), batch_size=batch_size, shuffle=False), torch.device("cpu"))
    groups = index.set_index("row").loc[rows, "patient_id"].to_numpy()
    return probs, labels, groups


def _auc_ci(labels, probs, groups, n_boot, seed) -> dict[str, float]:
    ci = bootstrap_ci(labels, probs, groups, lambda y, p: {"auc": auc_score(y, p)}, n_boot=n_boot, seed=seed)["auc"]
    return {"auc": auc_score(labels, probs), "ci_low": ci[0], "ci_high": ci[1]}


def compare_arms(
    arms: dict[str, str], *, network: dict[str, Any], images_path: str, index_path: str, manifest: pd.DataFrame,
    sites: dict[str, dict[str, list[str]]], num_classes: int, n_boot: int, seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:  # fmt: skip
    """(per-arm test scores overall and per site, test AUC per round, paired tests).

    ``arms`` maps arm names to their folders (model.pt, rounds.npz, metadata.json)."""
    images, _ = load_cache(images_path)
    index = pd.read_csv(index_path, sep="\t", dtype={"image_id": str, "patient_id": str})
    test_all = [p for s in sites for p in sites[s]["test"]]
    dims = dict(spatial_dims=images.ndim - 2, in_channels=images.shape[1], num_classes=num_classes)
    scores, curves, preds = [], [], {}
    for arm, folder in arms.items():
        net = build_network(network, **dims)
        net.load_state_dict(torch.load(Path(folder) / "model.pt", map_location="cpu", weights_only=True)["state_dict"])
        net.eval()
        card = read_json(Path(folder) / "metadata.json")
        eps = (card.get("privacy") or {}).get("epsilon")
        probs, labels, groups = _test_predictions(net, images, index, manifest, test_all)
        preds[arm] = (probs, labels, groups)
        scores.append(
            {"arm": arm, "kind": arm_kind(arm), "test_on": "all sites", **_auc_ci(labels, probs, groups, n_boot, seed), "epsilon": eps}
        )
        for site in (s for s in sites if sites[s]["test"]):  # a site without test patients has no row
            p, y, g = _test_predictions(net, images, index, manifest, sites[site]["test"])
            scores.append({"arm": arm, "kind": arm_kind(arm), "test_on": site, **_auc_ci(y, p, g, n_boot, seed), "epsilon": eps})
        if arm_kind(arm) != "federated":  # drawn as their final AUC only
            continue
        with np.load(Path(folder) / "rounds.npz") as z:
            n_rounds = len({k.split("_")[0] for k in z.files})
            for r in range(1, n_rounds + 1):
                net.load_state_dict(weights_to_state(net, [z[f"r{r}_{i}"] for i in range(len(net.state_dict()))]))
                p, y, _ = _test_predictions(net.eval(), images, index, manifest, test_all)
                curves.append({"arm": arm, "kind": arm_kind(arm), "round": r, "test_auc": auc_score(y, p)})
    return pd.DataFrame(scores), pd.DataFrame(curves), paired_tests(preds, n_boot=n_boot, seed=seed)


def paired_tests(preds: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], *, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Each federated arm against pooled training and against the best site alone (by test AUC)."""
    singles = {a: auc_score(y, p) for a, (p, y, _) in preds.items() if arm_kind(a) == "site alone"}
    references = ([POOLED] if POOLED in preds else []) + ([max(singles, key=singles.get)] if singles else [])
    out = []
    for arm in (a for a in preds if arm_kind(a) == "federated"):
        probs, labels, groups = preds[arm]
        for ref in references:
            test = paired_bootstrap_test(labels, probs[:, 1], preds[ref][0][:, 1], groups, n_boot=n_boot, seed=seed)
            out.append({"arm": arm, "reference": ref, **test})
    return out


def evaluate_stage(job) -> None:
    """The evaluate_federated rule: the comparison tables and the three figures."""
    from casebook.fileio import write_json
    from casebook.tasks.classification.federated_figures import plot_privacy, plot_rounds, plot_sites

    started = provenance.now()
    inputs, outputs, params = job.input, job.output, job.params
    manifest = pd.read_csv(Path(inputs["data"]) / "manifest.tsv", sep="\t", dtype={"image_id": str, "patient_id": str})
    sites = read_json(inputs["sites"])["sites"]
    folders = {arm: str(Path(inputs["sites"]).parent / arm) for arm in params["arms"]}
    scores, curves, paired = compare_arms(
        folders, network=params["model"]["network"], images_path=inputs["images"], index_path=inputs["index"], manifest=manifest,
        sites=sites, num_classes=len(params["family"]["class_names"]), n_boot=int(params["n_bootstrap"]), seed=int(params["seed"]),
    )  # fmt: skip
    for key, table in (("scores", scores), ("rounds", curves)):
        with atomic_path(outputs[key]) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    write_json(outputs["paired"], paired)
    title = params["title"]
    plot_rounds(curves, scores, title, outputs["figure_rounds"])
    plot_sites(scores, title, outputs["figure_sites"])
    plot_privacy(scores, title, outputs["figure_privacy"])
    provenance.write_record(
        outputs["provenance"],
        rule="evaluate_federated",
        inputs=[inputs["sites"], *inputs["models"]],
        outputs=[outputs[k] for k in ("scores", "rounds", "paired", "figure_rounds", "figure_sites", "figure_privacy")],
        params={"arms": params["arms"], "n_bootstrap": params["n_bootstrap"]},
        seed=params["seed"],
        started=started,
        wildcards=job.wildcards,
    )
