"""Integration test of the registration family through the real Snakemake on a tiny
config (both case studies in one run): every method scored with intervals (SimpleITK's
baseline and a VoxelMorph trained in the run against the unregistered pairs), test pairs
from test patients only, the cine's tracked ejection fraction, the figures and the
report, a rerun that does nothing, and an evaluation setting that reruns the evaluation
only."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from workflow_helpers import copy_workflow, edit_yaml, planned_jobs, snakemake

pytestmark = pytest.mark.integration

CASESTUDY = "config/casestudies/brain_registration.yaml"
CINE = "config/casestudies/cardiac_cine.yaml"
METHODS = {"unregistered", "simpleitk", "voxelmorph"}


def make_tiny_registration(workdir) -> None:
    """brain_registration only: 8 small volumes, two slices each, three epochs."""

    def shrink(cs):
        cs["dataset"]["params"].update(n_patients=8, size=[48, 48, 8], spacing=[4.0, 4.0, 20.0])
        cs["split"].update(k=3, test_fraction=0.25)
        cs["registration"].update(slices=2, n_bootstrap=50, simpleitk={"affine_iterations": 30, "bspline_iterations": 20})
        cs["train"].update(epochs=3, batch_size=4)
        cs["models"]["voxelmorph"]["network"]["kwargs"] = {"channels": [8, 16, 16, 16], "final_conv_channels": [8]}

    def shrink_cine(cs):
        cs["dataset"]["params"].update(n_patients=6, frames=4)
        cs["split"].update(k=2, test_fraction=0.34)
        cs["registration"].update(slices=2, n_bootstrap=50, simpleitk={"affine_iterations": 30, "bspline_iterations": 20})
        cs["train"].update(epochs=3, batch_size=8)

    edit_yaml(workdir / CASESTUDY, shrink)
    edit_yaml(workdir / CINE, shrink_cine)
    edit_yaml(workdir / "config/config.yaml", lambda c: c.update(casestudies=[CASESTUDY, CINE]))


@pytest.fixture(scope="module")
def registration_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("registration") / "wf")
    make_tiny_registration(workdir)
    snakemake(workdir)
    return workdir


def test_every_method_is_scored_with_intervals_and_the_baseline_registers(registration_run):
    results = registration_run / "results/brain_registration"
    metrics = json.loads((results / "registration/metrics.json").read_text())
    assert metrics["task"] == "registration" and set(metrics["methods"]) == METHODS
    assert metrics["labels"] == {"1": "cortical grey matter", "2": "white matter", "3": "deep grey matter", "4": "cerebrospinal fluid"}
    for scores in metrics["methods"].values():
        for metric in ("dice", "hd95", "sdlogj", "folding_percent", "field_error_mm", "seconds"):
            s = scores[metric]
            assert s["ci_low"] <= s["mean"] <= s["ci_high"], (metric, s)
    methods = metrics["methods"]
    assert methods["simpleitk"]["dice"]["mean"] > methods["unregistered"]["dice"]["mean"] + 0.05
    assert methods["simpleitk"]["field_error_mm"]["mean"] < methods["unregistered"]["field_error_mm"]["mean"]
    assert methods["unregistered"]["sdlogj"]["mean"] == 0.0 and methods["unregistered"]["folding_percent"]["mean"] == 0.0
    against = metrics["comparisons"]["voxelmorph"]
    assert set(against) == {"unregistered", "simpleitk"} and against["simpleitk"]["dice"]["method"] == "paired bootstrap over patients"
    assert metrics["baseline_time_over_model_time"]["voxelmorph"] > 1.0
    for figure in ("registration_checkerboard", "registration_jacobian", "registration_metrics"):
        assert (results / f"figures/{figure}.png").stat().st_size > 10_000, figure
    assert json.loads((results / "data/dataset.json").read_text())["labels"]["2"] == "white matter"
    card = json.loads((results / "models/voxelmorph/fold_0/metadata.json").read_text())
    assert card["task"] == "registration" and card["input"]["image_size"] == [48, 48]
    history = pd.read_csv(results / "models/voxelmorph/fold_0/history.tsv", sep="\t")
    assert list(history["epoch"]) == [1, 2, 3] and history["val_dice"].between(0, 1).all()


def test_test_pairs_come_from_test_patients_only(registration_run):
    results = registration_run / "results/brain_registration"
    manifest = pd.read_csv(results / "data/manifest.tsv", sep="\t", dtype=str)
    splits = json.loads((results / "split/splits.json").read_text())
    test_patients = set(manifest.set_index("image_id").loc[splits["test"], "patient_id"])
    table = pd.read_csv(results / "registration/per_pair.tsv", sep="\t", dtype={"patient_id": str})
    assert set(table["patient_id"]) == test_patients
    assert len(table) == 3 * 2 * len(splits["test"])  # three methods, two slices per test image


def test_the_cine_is_tracked_and_its_ejection_fraction_scored(registration_run):
    results = registration_run / "results/cardiac_cine"
    metrics = json.loads((results / "registration/metrics.json").read_text())
    assert metrics["pairing"] == "cine" and "field_error_mm" not in metrics["methods"]["simpleitk"]  # no true field
    ef = json.loads((results / "registration/ejection_fraction.json").read_text())
    assert set(ef["methods"]) == METHODS and ef["n_patients"] == 2
    table = pd.read_csv(results / "registration/ejection_fraction.tsv", sep="\t")
    manifest = pd.read_csv(results / "data/manifest.tsv", sep="\t", dtype=str)
    drawn = manifest[manifest["frame"] == "0"].set_index("patient_id")["ef_percent"].astype(float)
    reference = table[table["method"] == "reference labels"].set_index("patient_id")["ef_percent"]
    assert (abs(reference - drawn[reference.index]) < 5).all()  # the labels' EF is the drawn one, in the slices used
    # the unregistered pair carries the end-diastolic labels unchanged: no ejection at all
    assert (table[table["method"] == "unregistered"]["ef_percent"] == 0).all()
    assert ef["methods"]["simpleitk"]["mae"]["mean"] < ef["methods"]["unregistered"]["mae"]["mean"]
    assert set(ef["against_drawn_ef"]) == METHODS | {"reference labels"}
    assert ef["against_drawn_ef"]["reference labels"]["mae"]["mean"] < 5
    for figure in ("ejection_fraction", "cine_tracking"):
        assert (results / f"figures/{figure}.png").stat().st_size > 10_000, figure


def test_report_has_the_registration_figures_and_a_rerun_does_nothing(registration_run):
    snakemake(registration_run, "--report", "results/report.html")
    report = (registration_run / "results/report.html").read_text(errors="replace")
    figures = ("registration_checkerboard", "registration_jacobian", "registration_metrics", "ejection_fraction", "cine_tracking")
    assert all(f"{figure}.png" in report for figure in figures)
    assert "Nothing to be done" in snakemake(registration_run, "--dry-run").stdout


def test_an_evaluation_setting_reruns_the_evaluation_only(registration_run):
    path = registration_run / CASESTUDY
    before = path.read_bytes()
    try:
        edit_yaml(path, lambda cs: cs["registration"].update(n_bootstrap=60))
        assert planned_jobs(snakemake(registration_run, "--dry-run").stdout) == {"evaluate_registration": 1, "all": 1}
        edit_yaml(path, lambda cs: cs["registration"].update(n_bootstrap=50, labels=[1, 2]))
        jobs = planned_jobs(snakemake(registration_run, "--dry-run").stdout)
        assert jobs.get("train") == 1 and "simulate_registration" not in jobs  # the labels pick the best epoch
    finally:
        path.write_bytes(before)
