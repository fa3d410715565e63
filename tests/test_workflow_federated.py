"""Integration test of federated training (casebook.engine.federated) through the real
Snakemake on a tiny config: the arms (pooled, two sites alone, FedAvg and a private
FedAvg as real Flower federations), their comparison and figures, the global model's
provenance back to every site's data, a rerun that does nothing, and an unknown site."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from workflow_helpers import audited_rules, copy_workflow, edit_yaml, planned_jobs, snakemake

pytestmark = pytest.mark.integration

CASESTUDY = "config/casestudies/cxr_federated.yaml"
RESULTS = "results/cxr_federated/federated"
ARMS = ["pooled", "site_A", "site_B", "fedavg", "fedavg_dp"]


def make_tiny_federation(workdir) -> None:
    """cxr_federated only: 48 patients at 16 px, sites A and B, two rounds."""

    def shrink(cs):
        cs["dataset"]["params"].update(n_patients=48, size=16)
        cs["preprocess"]["size"] = [16, 16]
        cs["split"].update(k=3, test_fraction=0.25)
        cs["federated"].update(
            rounds=2, n_bootstrap=50, sites={"column": "site", "names": ["A", "B"]},
            strategies={"fedavg": {"name": "fedavg"}, "fedavg_dp": {"name": "fedavg", "privacy": {"noise_multiplier": 0.5, "clipping_norm": 1.0}}},
        )  # fmt: skip

    edit_yaml(workdir / CASESTUDY, shrink)
    edit_yaml(workdir / "config/config.yaml", lambda c: c.update(casestudies=[CASESTUDY]))


@pytest.fixture(scope="module")
def federated_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("federated") / "wf")
    make_tiny_federation(workdir)
    snakemake(workdir)
    return workdir


def test_every_arm_is_scored_on_every_sites_test_patients(federated_run):
    scores = pd.read_csv(federated_run / RESULTS / "comparison.tsv", sep="\t")
    assert list(dict.fromkeys(scores["arm"])) == ARMS
    assert set(scores["test_on"]) == {"all sites", "A", "B"}
    assert scores["auc"].between(0, 1).all() and (scores["ci_low"] <= scores["ci_high"]).all()
    private = scores[scores["arm"] == "fedavg_dp"]["epsilon"]
    assert np.isfinite(private).all() and scores[scores["arm"] == "fedavg"]["epsilon"].isna().all()
    curves = pd.read_csv(federated_run / RESULTS / "rounds.tsv", sep="\t")
    assert sorted(zip(curves["arm"], curves["round"])) == [("fedavg", 1), ("fedavg", 2), ("fedavg_dp", 1), ("fedavg_dp", 2)]
    paired = json.loads((federated_run / RESULTS / "paired.json").read_text())
    assert {(p["arm"], p["reference"]) for p in paired} >= {("fedavg", "pooled"), ("fedavg_dp", "pooled")}
    for name in ("federated_rounds", "federated_sites", "federated_privacy"):
        assert (federated_run / f"results/cxr_federated/figures/{name}.png").stat().st_size > 10_000


def test_a_federations_history_has_every_round_and_site(federated_run):
    history = pd.read_csv(federated_run / RESULTS / "fedavg/history.tsv", sep="\t")
    assert history["round"].tolist() == [1, 2] and (history["clients"] == 2).all()
    assert {"val_auc_A", "val_auc_B", "val_auc", "bytes_up"} <= set(history.columns)
    with np.load(federated_run / RESULTS / "fedavg/rounds.npz") as z:
        assert {k.split("_")[0] for k in z.files} == {"r1", "r2"}


def test_the_global_models_record_names_every_sites_data_and_the_rounds(federated_run):
    record = json.loads((federated_run / RESULTS / "fedavg/provenance.json").read_text())
    sites = record["params"]["sites"]
    assert set(sites) == {"A", "B"} and all(len(s["digest"]) == 64 and s["train_patients"] > 0 for s in sites.values())
    assert record["params"]["rounds"] == 2 and record["params"]["arm"] == "fedavg"
    assert any(p.endswith("manifest.tsv") for p in record["inputs"]) and any(p.endswith("sites.json") for p in record["inputs"])
    rules = audited_rules(federated_run, f"{RESULTS}/fedavg/model.pt")
    assert {"train_federated", "federated_sites", "split", "ingest"} <= rules


def test_a_rerun_does_nothing(federated_run):
    done = snakemake(federated_run, "--dry-run")
    assert "Nothing to be done" in done.stdout + done.stderr


def test_a_new_arm_trains_that_arm_alone(federated_run):
    override = "overrides={'cxr_federated': {'federated': {'strategies': {'fedprox': {'name': 'fedprox'}}}}}"
    jobs = planned_jobs(snakemake(federated_run, "--dry-run", "--config", override).stdout)
    assert jobs == {"train_federated": 1, "evaluate_federated": 1, "all": 1}, jobs


def test_a_site_the_manifest_lacks_is_refused_naming_it(federated_run):
    # last: the failed job's output (sites.json) is removed
    override = "overrides={'cxr_federated': {'federated': {'sites': {'column': 'site', 'names': ['A', 'Z']}}}}"
    done = snakemake(federated_run, f"{RESULTS}/sites.json", "--config", override, check=False)
    assert done.returncode != 0
    assert "no patient belongs to site(s) ['Z']; the sites in the data are ['A', 'B', 'C']" in done.stdout + done.stderr
    assert not (federated_run / RESULTS / "sites.json").exists()
