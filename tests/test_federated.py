"""Federated training (casebook.engine.federated): the site partition, the privacy
accountant, and real federations (a Flower server and clients as separate processes on
127.0.0.1) of a numpy site trainer: they learn, match pooled training on IID sites,
survive a killed client and a killed server, refuse a wrong-shaped update, clip under
differential privacy, and leave no process behind."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
from federated_toy import ToySite, accuracy, gaussian_data, toy_site

from casebook.engine.federated.launch import FederationError, federate
from casebook.engine.federated.privacy import epsilon
from casebook.engine.federated.sites import SiteError, dirichlet_sites, partition, patient_parts, site_of_patients, sites_stage

INITIAL = [np.zeros(5), np.zeros(1)]


# ---------------------------------------------------------------------------- sites


def manifest(rows):
    return pd.DataFrame(rows, columns=["image_id", "patient_id", "label", "site"])


def test_sites_come_from_the_manifest_one_site_per_patient():
    m = manifest([("i1", "p1", 0, "A"), ("i2", "p1", 1, "A"), ("i3", "p2", 0, "B")])
    assert site_of_patients(m, "site").to_dict() == {"p1": "A", "p2": "B"}
    mixed = manifest([("i1", "p1", 0, "A"), ("i2", "p1", 1, "B")])
    with pytest.raises(SiteError, match="patient p1 has images from several sites"):
        site_of_patients(mixed, "site")
    with pytest.raises(SiteError, match="no column 'hospital'"):
        site_of_patients(m, "hospital")


def test_partition_keeps_each_sites_split_and_refuses_bad_sites():
    sites = pd.Series({"p1": "A", "p2": "A", "p3": "A", "p4": "B", "p5": "B"})
    parts = pd.Series({"p1": "train", "p2": "val", "p3": "test", "p4": "train", "p5": "test"})
    out = partition(sites, parts)
    assert out["A"] == {"train": ["p1"], "val": ["p2"], "test": ["p3"]}
    assert out["B"] == {"train": ["p4"], "val": [], "test": ["p5"]}
    with pytest.raises(SiteError, match=r"site\(s\) \['Z'\]; the sites in the data are \['A', 'B'\]"):
        partition(sites, parts, ["A", "Z"], "m.tsv")
    no_train = parts.copy()
    no_train["p4"] = "val"
    with pytest.raises(SiteError, match="site 'B' has no training patients"):
        partition(sites, no_train)


def test_dirichlet_split_is_seeded_and_skews_labels_when_alpha_is_small():
    labels = pd.Series(np.repeat([0, 1], 200), index=[f"p{i}" for i in range(400)])
    a, b = dirichlet_sites(labels, 4, 0.1, seed=3), dirichlet_sites(labels, 4, 0.1, seed=3)
    assert a.equals(b) and a.notna().all() and set(a) <= {"site_1", "site_2", "site_3", "site_4"}
    skew = pd.crosstab(a, labels).div(pd.crosstab(a, labels).sum(axis=1), axis=0).max(axis=1)
    iid = dirichlet_sites(labels, 4, 1000.0, seed=3)
    iid_skew = pd.crosstab(iid, labels).div(pd.crosstab(iid, labels).sum(axis=1), axis=0).max(axis=1)
    assert skew.mean() > iid_skew.mean() + 0.2


def test_sites_stage_reads_the_patient_level_split(tmp_path):
    m = manifest([("i1", "p1", 1, "A"), ("i2", "p1", 1, "A"), ("i3", "p2", 0, "A"), ("i4", "p3", 0, "B"), ("i5", "p4", 1, "B")])
    m.to_csv(tmp_path / "manifest.tsv", sep="\t", index=False)
    splits = {"test": ["i5"], "folds": [{"train": ["i1", "i2", "i4"], "val": ["i3"]}]}
    assert patient_parts(m, splits).to_dict() == {"p1": "train", "p2": "val", "p3": "train", "p4": "test"}
    doc = sites_stage(tmp_path / "manifest.tsv", splits, {"column": "site"}, seed=0)
    assert doc["sites"]["A"]["train"] == ["p1"] and doc["sites"]["B"]["test"] == ["p4"]
    with pytest.raises(SiteError, match="site\\(s\\) \\['C'\\]"):
        sites_stage(tmp_path / "manifest.tsv", splits, {"column": "site", "names": ["A", "C"]}, seed=0)


def test_epsilon_falls_with_noise_and_grows_with_rounds():
    assert epsilon(noise_multiplier=0.0, rounds=5) == float("inf")
    e = [epsilon(noise_multiplier=s, rounds=10) for s in (0.5, 1.0, 2.0)]
    assert e[0] > e[1] > e[2] > 0
    assert epsilon(noise_multiplier=1.0, rounds=20) > e[1]


# ------------------------------------------------------------------- real federations


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def started_pids(work_dir) -> list[int]:
    doc = json.loads((work_dir / "processes.json").read_text())
    return [doc["server"], *doc["clients"].values()]


def run(tmp_path, sites, strategy=None, **kwargs):
    kwargs = {"rounds": 4, "local_epochs": 2, "resume_key": "k", **kwargs}
    return federate(factory=toy_site, sites=sites, initial=INITIAL, strategy=strategy or {"name": "fedavg"}, work_dir=tmp_path, **kwargs)


def pooled(sites: list[int], epochs: int) -> list[np.ndarray]:
    """The same trainer on the sites' data together, as many epochs as the federation."""
    x, y = zip(*(gaussian_data(200, s) for s in sites))
    site = ToySite(sites[0])
    site.x, site.y = np.concatenate(x), np.concatenate(y)
    site.fit(epochs)
    return site.get_weights()


@pytest.mark.parametrize("strategy", [{"name": "fedavg"}, {"name": "fedprox", "mu": 0.1}, {"name": "fedadam", "eta": 0.3}])
def test_a_federation_of_two_processes_learns_and_matches_pooled_training(tmp_path, strategy):
    result = run(tmp_path, {"a": {"seed": 1}, "b": {"seed": 2}}, strategy)
    x, y = gaussian_data(1000, 99)
    assert accuracy(INITIAL, x, y) < 0.6  # the untrained model
    fed, central = accuracy(result["parameters"], x, y), accuracy(pooled([1, 2], 8), x, y)
    assert fed > 0.85 and abs(fed - central) < 0.03, (fed, central)  # IID sites: within 3 points
    assert [r["round"] for r in result["history"]] == [1, 2, 3, 4]
    assert {"val_accuracy_a", "val_accuracy_b", "bytes_up"} <= set(result["history"][-1])
    assert not any(alive(p) for p in started_pids(tmp_path))
    assert len(list((tmp_path / "rounds").glob("round_*.npz"))) == 4


def kill_after_round(tmp_path, round_: int, pick) -> threading.Thread:
    """Kill the process ``pick(processes.json)`` once round ``round_`` is checkpointed."""

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tmp_path / "rounds" / f"round_{round_:03d}.npz").exists():
            time.sleep(0.02)
        os.kill(pick(json.loads((tmp_path / "processes.json").read_text())), signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread


def test_a_client_killed_mid_federation_is_survived(tmp_path):
    sites = {s: {"seed": k, "sleep": 0.4} for k, s in enumerate("abc")}
    kill_after_round(tmp_path, 1, lambda doc: doc["clients"]["c"])
    result = run(tmp_path, sites, rounds=4, local_epochs=1, min_clients=2)
    history = result["history"]
    assert [r["round"] for r in history] == [1, 2, 3, 4]
    assert history[0]["clients"] == 3 and history[-1]["clients"] == 2
    assert sum(r["failures"] for r in history) >= 1  # the round it died in went on without it
    assert "val_accuracy_c" not in history[-1]
    assert not any(alive(p) for p in started_pids(tmp_path))


def test_too_few_sites_left_stops_the_federation_and_every_process(tmp_path):
    kill_after_round(tmp_path, 1, lambda doc: doc["clients"]["b"])
    with pytest.raises(FederationError, match=r"lost: \['b'\]"):
        run(tmp_path, {s: {"seed": k, "sleep": 0.4} for k, s in enumerate("ab")}, rounds=6, local_epochs=1)
    assert not any(alive(p) for p in started_pids(tmp_path))


def test_a_killed_server_is_restarted_from_its_last_round(tmp_path):
    first_server = {}

    def server(doc):
        first_server["pid"] = doc["server"]
        return doc["server"]

    kill_after_round(tmp_path, 2, server)
    result = run(tmp_path, {s: {"seed": k, "sleep": 0.3} for k, s in enumerate("ab")}, rounds=5, local_epochs=1)
    assert result["resumed_after"] >= 2
    assert [r["round"] for r in result["history"]] == [1, 2, 3, 4, 5]
    assert json.loads((tmp_path / "processes.json").read_text())["server"] != first_server["pid"]
    assert not any(alive(p) for p in [first_server["pid"], *started_pids(tmp_path)])


def test_an_update_of_the_wrong_shape_is_refused_naming_its_site(tmp_path, caplog):
    sites = {"good": {"seed": 1}, "bad": {"seed": 2, "wrong_shape": True}}
    result = run(tmp_path, sites, rounds=2, local_epochs=1)
    assert [r["refused"] for r in result["history"]] == ["bad", "bad"]
    assert all(r["clients"] == 1 for r in result["history"])
    assert [np.shape(a) for a in result["parameters"]] == [(5,), (1,)]


def test_client_side_privacy_clips_every_update(tmp_path):
    clip = 0.05
    strategy = {"name": "fedavg", "privacy": {"noise_multiplier": 0.0, "clipping_norm": clip}}
    run(tmp_path, {"a": {"seed": 1}, "b": {"seed": 2}}, strategy, rounds=3, local_epochs=3)
    rounds = [np.concatenate([z[k].ravel() for k in sorted(z.files)]) for z in map(np.load, sorted((tmp_path / "rounds").glob("*.npz")))]
    steps = [np.linalg.norm(b - a) for a, b in zip([np.zeros(6)] + rounds, rounds)]
    assert all(s <= clip + 1e-9 for s in steps) and steps[0] > clip / 2  # unclipped, a step is far longer


def test_min_clients_must_fit_the_sites(tmp_path):
    with pytest.raises(ValueError, match="between 1 and the 2 sites"):
        run(tmp_path, {"a": {"seed": 1}, "b": {"seed": 2}}, min_clients=3)


def test_a_dirichlet_split_needs_no_site_column(tmp_path):
    rows = [(f"i{k}", f"p{k}", k % 2, "A") for k in range(40)]
    m = manifest(rows).drop(columns="site")
    m.to_csv(tmp_path / "manifest.tsv", sep="\t", index=False)
    splits = {
        "test": [f"i{k}" for k in range(30, 40)],
        "folds": [{"train": [f"i{k}" for k in range(24)], "val": [f"i{k}" for k in range(24, 30)]}],
    }
    doc = sites_stage(tmp_path / "manifest.tsv", splits, {"dirichlet": {"sites": 2, "alpha": 100.0}}, seed=1)
    assert set(doc["sites"]) == {"site_1", "site_2"} and "Dirichlet" in doc["method"]
    patients = [p for s in doc["sites"].values() for part in s.values() for p in part]
    assert sorted(patients) == sorted(f"p{k}" for k in range(40))  # every patient, once


def test_clients_told_to_stop_before_the_server_exits_are_not_lost(tmp_path):
    """At the end, the server tells every client to disconnect and then exits: clients that
    exit (code 0) first must not count as lost sites (a real race seen in a full run)."""
    import sys

    from casebook.engine.federated.launch import _supervise
    from casebook.engine.processes import Child

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    server = Child("server", "federated_toy", ["1.5", "0"], env)
    clients = {s: Child(f"site {s}", "federated_toy", ["0.1", "0"], env) for s in "ab"}
    try:
        _supervise(server, clients, None, env, "", [], 2, 0, 30, tmp_path)  # returns: no FederationError
        assert server.poll() == 0 and all(c.poll() == 0 for c in clients.values())
    finally:
        for child in [server, *clients.values()]:
            child.stop()
