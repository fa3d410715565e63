"""Which patients belong to which site: the federated partition.

A patient belongs to exactly one site, so no patient's images cross sites. A site's
train, validation and test patients are those of the case study's patient-level
split (fold 0 for train and validation), so every site keeps its own held-out
patients and the pooled model is tested on the union of the same patients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from casebook.fileio import atomic_path, read_json, write_json

PARTS = ("train", "val", "test")


class SiteError(ValueError):
    """A site that cannot take part in a federation (no such site, or no training patients)."""


def site_of_patients(manifest: pd.DataFrame, column: str, where: str = "manifest.tsv") -> pd.Series:
    """Each patient's site from a manifest column (one site per patient)."""
    if column not in manifest.columns:
        raise SiteError(f"{where}: has no column {column!r} to take the sites from; its columns are {list(manifest.columns)}")
    per_patient = manifest.groupby("patient_id")[column].agg(lambda s: sorted(set(map(str, s))))
    mixed = per_patient[per_patient.map(len) > 1]
    if len(mixed):
        first = mixed.index[0]
        raise SiteError(f"{where}: patient {first} has images from several sites {mixed.iloc[0]}: a patient must belong to one site")
    return per_patient.map(lambda s: s[0]).rename("site")


def dirichlet_sites(labels: pd.Series, n_sites: int, alpha: float, seed: int) -> pd.Series:
    """A label-skew split of patients over ``n_sites`` sites ``site_1``..: for each class,
    the shares of its patients per site are drawn from Dirichlet(alpha) (small alpha,
    strong skew); ``labels`` is one label per patient (the index)."""
    if n_sites < 1 or alpha <= 0:
        raise SiteError(f"a Dirichlet split needs at least one site and alpha > 0, not {n_sites} sites and alpha {alpha}")
    rng = np.random.default_rng(seed)
    names = [f"site_{k + 1}" for k in range(n_sites)]
    out = pd.Series(index=labels.index, dtype=object, name="site")
    for label in sorted(labels.unique()):
        patients = rng.permutation(labels.index[labels == label].to_numpy())
        shares = rng.dirichlet([alpha] * n_sites)
        cuts = np.round(np.cumsum(shares)[:-1] * len(patients)).astype(int)
        for name, members in zip(names, np.split(patients, cuts)):
            out.loc[members] = name
    return out


def partition(
    sites: pd.Series, split_of: pd.Series, wanted: Sequence[str] | None = None, where: str = "manifest.tsv"
) -> dict[str, dict[str, list[str]]]:
    """``{site: {"train": [patients], "val": [...], "test": [...]}}``.

    ``sites`` and ``split_of`` map patient ids to a site and to one of ``train``, ``val``,
    ``test``. ``wanted`` (config) names the sites that take part; a name the data lack,
    or a site with no training patients, is refused, naming it."""
    present = sorted(sites.unique())
    wanted = list(wanted) if wanted else present
    missing = [s for s in wanted if s not in present]
    if missing:
        raise SiteError(f"{where}: no patient belongs to site(s) {missing}; the sites in the data are {present}")
    table = pd.DataFrame({"site": sites, "part": split_of.reindex(sites.index)}).dropna()
    out: dict[str, dict[str, list[str]]] = {}
    for site in wanted:
        rows = table[table["site"] == site]
        out[site] = {part: sorted(rows.index[rows["part"] == part]) for part in PARTS}
        if not out[site]["train"]:
            raise SiteError(f"{where}: site {site!r} has no training patients (it has {len(rows)} patient(s) in all)")
    return out


def describe(parts: dict[str, dict[str, list[str]]], labels: pd.Series) -> list[dict[str, Any]]:
    """One row per site and part: patients and positives (for the sites table)."""
    rows = []
    for site, split in parts.items():
        for part in PARTS:
            members = split[part]
            rows.append({"site": site, "part": part, "patients": len(members), "positive": int((labels.reindex(members) > 0).sum())})
    return rows


def patient_parts(manifest: pd.DataFrame, splits: dict[str, Any], fold: int = 0) -> pd.Series:
    """Each patient's part (train, val or test) from a patient-level split of image ids
    (``splits.json``: fold ``fold``'s train and val, and the test ids)."""
    part_of_image = {i: "test" for i in splits["test"]}
    part_of_image.update({i: part for part in ("train", "val") for i in splits["folds"][fold][part]})
    parts = manifest.assign(part=manifest["image_id"].map(part_of_image)).dropna(subset=["part"])
    return parts.groupby("patient_id")["part"].first()


def patient_labels(manifest: pd.DataFrame) -> pd.Series:
    """One label per patient (its highest image label: a patient with one positive image is positive)."""
    return manifest.groupby("patient_id")["label"].max()


def sites_stage(manifest_path: str | Path, splits: dict[str, Any], cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """The federated_sites rule: the partition and its per-site counts.

    ``cfg``: ``column`` (a manifest column) or ``dirichlet: {sites, alpha}``, and
    optionally ``names``, the sites that take part."""
    manifest = pd.read_csv(manifest_path, sep="\t", dtype={"image_id": str, "patient_id": str})
    labels = patient_labels(manifest)
    if cfg.get("dirichlet"):
        site = dirichlet_sites(labels, int(cfg["dirichlet"]["sites"]), float(cfg["dirichlet"]["alpha"]), seed)
        method = f"Dirichlet label skew over {cfg['dirichlet']['sites']} sites, alpha {cfg['dirichlet']['alpha']}, seed {seed}"
    else:
        site = site_of_patients(manifest, cfg.get("column", "site"), str(manifest_path))
        method = f"manifest column {cfg.get('column', 'site')!r}"
    parts = partition(site, patient_parts(manifest, splits), cfg.get("names"), str(manifest_path))
    return {"method": method, "sites": parts, "table": describe(parts, labels)}


def write_sites(
    manifest_path: str | Path, splits_path: str | Path, cfg: dict[str, Any], seed: int, outputs: dict[str, str]
) -> dict[str, Any]:
    """The federated_sites rule: ``sites.json`` (the partition) and ``sites.tsv`` (its counts)."""
    doc = sites_stage(manifest_path, read_json(splits_path), cfg, seed)
    with atomic_path(outputs["table"]) as tmp:
        pd.DataFrame(doc.pop("table")).to_csv(tmp, sep="\t", index=False)
    write_json(outputs["sites"], doc)
    return doc
