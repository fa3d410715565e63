"""Integration test of the detection family through the real Snakemake on a tiny config:
the detectors trained and scored on the test scans by the LUNA16 protocol with
intervals, candidates from test patients only, the figures and the report, a rerun that
does nothing, settings that rerun only what they change, and the real-data case
studies (LUNA16, FracAtlas) on files in their sources' formats."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from workflow_helpers import copy_workflow, edit_yaml, planned_jobs, snakemake

from casebook.tasks.detection.torchvision_standin import provider

pytestmark = pytest.mark.integration

CASESTUDY = "config/casestudies/lung_nodule_detection.yaml"
#: the tiny run's detectors: the U-Net with components on the radiographs only, RetinaNet
#: on the CT only (in 2D it runs on the FracAtlas folder below), to keep the run short
MODELS = {"centre_point", "retinanet"}
FRACTURE_MODELS = {"centre_point", "unet_components"}


FRACTURES = "config/casestudies/fracture_xray.yaml"


def make_tiny_detection(workdir) -> None:
    """The two detection case studies: 12 small CT volumes, 24 radiographs, three epochs."""

    def shrink(cs):
        cs["dataset"]["params"].update(n_patients=12, size=[32, 32, 16], spacing=[3.0, 3.0, 5.0])
        cs["split"].update(k=3, test_fraction=0.25)
        cs["detection"].update(n_bootstrap=50)
        cs["train"].update(epochs=3)
        cs["models"].pop("unet_components")
        for spec in cs["models"].values():
            spec.pop("train", None)  # a model's own epochs would override the three

    def shrink_fractures(cs):
        cs["dataset"]["params"].update(n_patients=24, size=64)
        cs["split"].update(k=3, test_fraction=0.25)
        cs["detection"].update(n_bootstrap=50)
        cs["train"].update(epochs=3)
        cs["models"].pop("retinanet")  # RetinaNet in 2D: the FracAtlas run below

    edit_yaml(workdir / CASESTUDY, shrink)
    edit_yaml(workdir / FRACTURES, shrink_fractures)
    edit_yaml(workdir / "config/config.yaml", lambda c: c.update(casestudies=[CASESTUDY, FRACTURES]))


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("detection") / "wf")
    make_tiny_detection(workdir)
    snakemake(workdir)
    return workdir


def test_both_detectors_are_scored_by_the_luna16_protocol_with_intervals(detection_run):
    results = detection_run / "results/lung_nodule_detection"
    metrics = json.loads((results / "detection/metrics.json").read_text())
    assert metrics["task"] == "detection" and set(metrics["models"]) == MODELS
    assert metrics["fp_rates"] == [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0] and metrics["map_iou"] == 0.1
    for m in metrics["models"].values():
        assert m["ci_low"] <= m["cpm"] <= m["ci_high"] and 0.0 <= m["cpm"] <= 1.0
        assert m["cpm"] == pytest.approx(sum(m["sensitivity"]) / 7)
        assert all(lo <= s <= hi for s, lo, hi in zip(m["sensitivity"], m["sensitivity_ci_low"], m["sensitivity_ci_high"]))
        assert 0.0 <= m["map"] <= 1.0 and m["seconds_per_volume"]["forward"] > 0
        assert sum(r["findings"] for r in m["sensitivity_by_size"]) <= metrics["n_test_findings"]
    assert set(metrics["comparisons"]) == {"retinanet"} and metrics["cpm_difference_from"] == "centre_point"
    assert metrics["models"]["retinanet"]["parameters"] > 0 and "mask_rcnn" in metrics["absent_models"]
    table = pd.read_csv(results / "detection/comparison.tsv", sep="\t")
    assert list(table["model"]) == ["centre_point", "retinanet", "mask_rcnn"]
    assert list(table["status"][:2]) == ["ran"] * 2 and table["status"][2].startswith("not run")
    assert (results / "data/boxes.tsv").is_file() and json.loads((results / "qc/geometry.json").read_text())["n_boxes"] > 0
    for figure in ("froc", "detection_overlays", "sensitivity_by_size", "detection_comparison"):
        assert (results / f"figures/{figure}.png").stat().st_size > 10_000, figure
    card = json.loads((results / "models/centre_point/fold_0/metadata.json").read_text())
    assert card["task"] == "detection" and card["input"]["window"] == [-1000, 400]
    history = pd.read_csv(results / "models/retinanet/fold_0/history.tsv", sep="\t")
    assert list(history["epoch"]) == [1, 2, 3] and "val_cpm" in history


def test_fractures_are_found_in_2d_radiographs_with_their_boxes(detection_run):
    results = detection_run / "results/fracture_xray"
    metrics = json.loads((results / "detection/metrics.json").read_text())
    assert metrics["map_iou"] == 0.5 and set(metrics["models"]) == FRACTURE_MODELS  # the 2D default: mAP50
    boxes = pd.read_csv(results / "data/boxes.tsv", sep="\t")
    assert boxes["centre_z"].isna().all() and set(boxes["finding"]) <= {"displaced", "hairline"}
    candidates = pd.read_csv(results / "detection/candidates.tsv", sep="\t")
    assert candidates["centre_z"].isna().all() and len(candidates) > 0
    assert (results / "figures/detection_overlays.png").stat().st_size > 10_000


def test_candidates_come_from_test_patients_only(detection_run):
    results = detection_run / "results/lung_nodule_detection"
    splits = json.loads((results / "split/splits.json").read_text())
    table = pd.read_csv(results / "detection/candidates.tsv", sep="\t", dtype={"image_id": str})
    assert set(table["image_id"]) <= set(splits["test"]) and set(table["model"]) <= MODELS
    assert set(table["outcome"]) <= {"hit", "ignored", "false positive"}


def test_report_has_the_detection_figures_and_a_rerun_does_nothing(detection_run):
    snakemake(detection_run, "--report", "results/report.html")
    report = (detection_run / "results/report.html").read_text(errors="replace")
    assert all(f"{figure}.png" in report for figure in ("froc", "detection_overlays", "sensitivity_by_size", "detection_comparison"))
    assert "Nothing to be done" in snakemake(detection_run, "--dry-run").stdout


def test_settings_rerun_only_what_they_change(detection_run):
    path = detection_run / CASESTUDY
    before = path.read_bytes()
    try:
        edit_yaml(path, lambda cs: cs["detection"].update(n_bootstrap=60))
        assert planned_jobs(snakemake(detection_run, "--dry-run").stdout) == {"evaluate_detection": 1, "all": 1}
        edit_yaml(path, lambda cs: cs["detection"].update(n_bootstrap=50, window=[-1100, 300]))
        jobs = planned_jobs(snakemake(detection_run, "--dry-run").stdout)
        assert jobs.get("prepare_detection") == 1 and jobs.get("train") == 2 and "ingest" not in jobs
    finally:
        path.write_bytes(before)


LUNA16 = "config/casestudies/luna16_detection.yaml"
FRACATLAS = "config/casestudies/fracatlas_detection.yaml"


@pytest.fixture(scope="module")
def luna16_run(tmp_path_factory):
    """The real-data case studies on folders in their sources' formats
    (tests/realformat.py), shrunk, in one Snakemake run: LUNA16 resampled, trained on
    patches and read by sliding windows, as on the real scans, by MONAI's RetinaNet (its
    sliding-window inferer) and the centre-point detector; FracAtlas's JPEGs and COCO
    boxes by RetinaNet."""
    from realformat import make_fracatlas, make_luna16

    workdir = copy_workflow(tmp_path_factory.mktemp("luna16") / "wf")
    uids = make_luna16(workdir / "luna16", n_scans=10, seed=3)
    make_fracatlas(workdir / "FracAtlas", n_images=12, seed=4)

    def shrink(cs):
        cs["dataset"]["path"] = "luna16"
        cs["split"] = {"k": 3, "test_fraction": 0.3}  # two subsets here: not the official folds (tests/test_split.py)
        cs["detection"].update(spacing=[3.0, 3.0, 3.0], window=[-1000, 400], pad_to=8, patch=[16, 16, 16], n_bootstrap=20)
        cs["train"].update(epochs=2, batch_size=2)
        cs["models"] = {
            "centre_point": {"network": {"name": "centre_point", "kwargs": {"channels": [8, 16, 32], "strides": [2, 2]}}},
            "retinanet": {"network": {"name": "retinanet", "kwargs": {"anchor_shapes": [[3, 3, 3], [5, 5, 5]]}}},
        }

    def shrink_fracatlas(cs):  # the real case study on 96-pixel JPEGs: a 2-pixel grid
        cs["dataset"].update(path="FracAtlas", adapter_params={"coco_sha256": None})  # made-up boxes: not the pinned file
        cs["split"].update(k=3, test_fraction=0.34)
        cs["detection"].update(spacing=[2.0, 2.0], pad_to=8, patch=None, n_bootstrap=20, size_bins_mm=[0, 30, 100])
        cs["train"].update(epochs=2, batch_size=4, optimizer="adam", schedule={"name": "none"})
        cs["models"] = {"retinanet": {"network": {"name": "retinanet", "kwargs": {"anchor_shapes": [[6, 6], [8, 4], [4, 8]]}}}}

    edit_yaml(workdir / LUNA16, shrink)
    edit_yaml(workdir / FRACATLAS, shrink_fracatlas)
    edit_yaml(workdir / "config/config.yaml", lambda c: c.update(casestudies=[LUNA16, FRACATLAS]))
    snakemake(workdir)
    return workdir, uids


def test_luna16_as_it_ships_is_ingested_with_its_boxes_trained_on_patches_and_scored(luna16_run):
    workdir, uids = luna16_run
    results = workdir / "results/luna16_detection"
    manifest = pd.read_csv(results / "data/manifest.tsv", sep="\t", dtype=str)
    assert len(manifest) == 10 and set(manifest["source_split"]) == {"subset0", "subset1"}
    boxes = pd.read_csv(results / "data/boxes.tsv", sep="\t", dtype={"image_id": str})
    assert set(boxes["image_id"]) <= set(manifest["image_id"]) and boxes["excluded"].sum() > 0
    metrics = json.loads((results / "detection/metrics.json").read_text())
    test = json.loads((results / "split/splits.json").read_text())["test"]
    assert set(metrics["models"]) == {"centre_point", "retinanet"} and metrics["n_test_volumes"] == len(test) > 0
    assert all(0.0 <= m["cpm"] <= 1.0 for m in metrics["models"].values())
    card = json.loads((results / "models/centre_point/fold_0/metadata.json").read_text())
    assert card["input"]["patch"] == [16, 16, 16] and card["input"]["spacing_mm"] == [3.0, 3.0, 3.0]
    # no series UID in any text the run wrote
    for path in (p for p in (workdir / "results").rglob("*") if p.suffix in {".tsv", ".json", ".csv", ".html", ".rst", ".txt"}):
        text = path.read_text(errors="replace")
        assert not any(uid in text for uid in uids), path


def test_fracatlas_as_it_ships_is_ingested_with_its_coco_boxes_trained_and_scored(luna16_run):
    workdir, _ = luna16_run
    results = workdir / "results/fracatlas_detection"
    manifest = pd.read_csv(results / "data/manifest.tsv", sep="\t", dtype=str, keep_default_na=False)
    boxes = pd.read_csv(results / "data/boxes.tsv", sep="\t", dtype={"image_id": str})
    assert len(manifest) == 12 and set(boxes["image_id"]) == set(manifest.loc[manifest["label"] == "1", "image_id"])
    assert set(manifest["source_split"]) <= {"train", "test", ""} and boxes["centre_z"].isna().all()
    metrics = json.loads((results / "detection/metrics.json").read_text())
    assert set(metrics["models"]) == {"retinanet"} and metrics["map_iou"] == 0.5
    assert metrics["torchvision_helpers"] in ("torchvision", provider())
    text = "".join(p.read_text(errors="replace") for p in results.rglob("*") if p.suffix in {".tsv", ".json"})
    assert "IMG000" not in text  # no source file name in what the run wrote
