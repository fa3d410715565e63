"""Integration test of the restoration family through the real Snakemake on tiny
configs: low-dose CT denoising (every output, the metrics' structure and intervals, test
slices from test patients only, the report, a rerun that does nothing, a clear error for
volumes whose axial slices cannot be projected), thick-slice MRI super-resolution
(against B-spline interpolation; a slice factor that does not divide a volume refused),
contrast translation and inpainting of missing regions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from workflow_helpers import copy_workflow, edit_yaml, planned_jobs, snakemake

pytestmark = pytest.mark.integration

CASESTUDY = "config/casestudies/lowdose_ct.yaml"
METHODS = {"low-dose input", "gaussian", "nlm", "redcnn", "unet"}


def make_tiny_restoration(workdir, size=(48, 48, 8)) -> None:
    """lowdose_ct only: 8 small volumes, one slice each at two doses, two epochs."""

    def shrink(cs):
        cs["dataset"]["params"].update(n_patients=8, size=list(size))
        cs["split"].update(k=3, test_fraction=0.25)
        cs["restoration"].update(doses=[0.25, 0.1], slices=1, n_angles=90, n_bootstrap=50)
        cs["train"].update(epochs=2, batch_size=4)
        cs["models"]["unet"]["network"]["kwargs"] = {"features": [8, 8, 16, 32, 64, 8]}

    edit_yaml(workdir / CASESTUDY, shrink)
    edit_yaml(workdir / "config/config.yaml", lambda c: c.update(casestudies=[CASESTUDY]))


@pytest.fixture(scope="module")
def restoration_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("restoration") / "wf")
    make_tiny_restoration(workdir)
    snakemake(workdir)
    return workdir


def test_every_method_is_scored_at_every_dose_with_intervals(restoration_run):
    results = restoration_run / "results/lowdose_ct"
    metrics = json.loads((results / "evaluation/metrics.json").read_text())
    assert metrics["task"] == "restoration" and metrics["window"] == [-160, 240] and metrics["degradation"] == "dose"
    assert set(metrics["levels"]) == {"0.25", "0.1"} and metrics["input_method"] == "low-dose input"
    for dose in metrics["levels"].values():
        assert set(dose["methods"]) == METHODS and dose["best_baseline"] in {"gaussian", "nlm"}
        for scores in dose["methods"].values():
            for metric in ("psnr", "ssim"):
                s = scores[metric]
                assert s["ci_low"] <= s["mean"] <= s["ci_high"], (metric, s)
        for model in ("redcnn", "unet"):
            against = dose["comparisons"][model]
            assert set(against) == {"low-dose input", dose["best_baseline"]}
            assert against["low-dose input"]["psnr"]["method"] == "paired bootstrap over patients"
    # lower dose, noisier input
    assert (
        metrics["levels"]["0.1"]["methods"]["low-dose input"]["psnr"]["mean"]
        < metrics["levels"]["0.25"]["methods"]["low-dose input"]["psnr"]["mean"]
    )
    for figure in ("figures/restoration_panels.png", "figures/metrics_vs_level.png"):
        assert (results / figure).stat().st_size > 10_000, figure
    for model in ("redcnn", "unet"):
        card = json.loads((results / f"models/{model}/fold_0/metadata.json").read_text())
        assert card["task"] == "restoration" and card["metrics"]["best_epoch"] in (1, 2)
        history = pd.read_csv(results / f"models/{model}/fold_0/history.tsv", sep="\t")
        assert list(history["epoch"]) == [1, 2] and history["val_psnr"].notna().all()
        assert (results / f"figures/{model}/fold_0/training_curves.png").stat().st_size > 10_000


def test_test_slices_come_from_test_patients_only(restoration_run):
    results = restoration_run / "results/lowdose_ct"
    manifest = pd.read_csv(results / "data/manifest.tsv", sep="\t", dtype=str)
    splits = json.loads((results / "split/splits.json").read_text())
    test_patients = set(manifest.set_index("image_id").loc[splits["test"], "patient_id"])
    table = pd.read_csv(results / "evaluation/per_image.tsv", sep="\t", dtype={"patient_id": str})
    assert set(table["patient_id"]) == test_patients and set(table["image_id"]) == set(splits["test"])
    # one slice per test volume, two doses, five methods
    assert len(table) == len(splits["test"]) * 2 * len(METHODS)


def test_report_has_the_restoration_figures_and_a_rerun_does_nothing(restoration_run):
    snakemake(restoration_run, "--report", "results/report.html")
    report = (restoration_run / "results/report.html").read_text(errors="replace")
    assert "restoration_panels.png" in report and "metrics_vs_level.png" in report
    assert "Nothing to be done" in snakemake(restoration_run, "--dry-run").stdout


def test_an_evaluation_setting_reruns_the_evaluation_only(restoration_run):
    path = restoration_run / CASESTUDY
    before = path.read_bytes()
    try:
        edit_yaml(path, lambda cs: cs["restoration"].update(n_bootstrap=60))
        assert planned_jobs(snakemake(restoration_run, "--dry-run").stdout) == {"evaluate_restoration": 1, "all": 1}
        edit_yaml(path, lambda cs: cs["restoration"].update(n_bootstrap=50, window=[-200, 300]))
        jobs = planned_jobs(snakemake(restoration_run, "--dry-run").stdout)
        assert jobs.get("train") == 2 and "simulate_dose" not in jobs  # the window scales the networks' input
    finally:
        path.write_bytes(before)


def test_volumes_with_non_square_slices_are_refused_naming_the_image(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    make_tiny_restoration(workdir, size=(48, 40, 8))
    run = snakemake(workdir, "results/lowdose_ct/dose/pairs.npz", check=False)
    assert run.returncode != 0
    log = (workdir / "logs/lowdose_ct/simulate_dose.log").read_text()
    assert "abdomen_p0000" in log and "square axial slices" in log and "48 x 40 pixels" in log
    assert not (workdir / "results/lowdose_ct/dose/pairs.npz").exists()


SUPERRES = "config/casestudies/mri_superres.yaml"
TRANSLATION = "config/casestudies/mri_translation.yaml"
INPAINTING = "config/casestudies/mri_inpainting.yaml"


def _tiny_brain(cs):
    cs["dataset"]["params"].update(n_patients=8, size=[32, 32, 24])
    cs["split"].update(k=3, test_fraction=0.25)
    cs["restoration"].update(slices=2, n_bootstrap=50)
    if "downstream" in cs["restoration"]:
        cs["restoration"]["downstream"].update(epochs=1, features=[8, 8, 16, 32, 64, 8])
    cs["train"].update(epochs=1, batch_size=4)
    cs["models"]["unet"]["network"]["kwargs"] = {"features": [8, 8, 16, 32, 64, 8]}


def make_tiny_superres(workdir, factors=(2, 4)) -> None:
    """mri_superres only: 8 small brain volumes (24 slices), two coronal slices each, one epoch."""
    edit_yaml(workdir / SUPERRES, lambda cs: (_tiny_brain(cs), cs["restoration"].update(factors=list(factors))))
    edit_yaml(workdir / "config/config.yaml", lambda c: c.update(casestudies=[SUPERRES]))


@pytest.fixture(scope="module")
def mri_run(tmp_path_factory):
    """The super-resolution, translation and inpainting studies, tiny, in one Snakemake run."""
    workdir = copy_workflow(tmp_path_factory.mktemp("mri") / "wf")
    edit_yaml(workdir / SUPERRES, _tiny_brain)

    def translation(cs):
        _tiny_brain(cs)
        cs["models"]["pix2pix"]["network"]["kwargs"] = cs["models"]["unet"]["network"]["kwargs"]

    edit_yaml(workdir / TRANSLATION, translation)

    def inpainting(cs):
        _tiny_brain(cs)
        cs["restoration"].update(holes=[6, 12])
        del cs["models"]["redcnn"]  # one network is enough to test the family's inpainting path

    edit_yaml(workdir / INPAINTING, inpainting)
    edit_yaml(workdir / "config/config.yaml", lambda c: c.update(casestudies=[SUPERRES, TRANSLATION, INPAINTING]))
    snakemake(workdir)
    return workdir


def test_super_resolution_is_scored_against_b_spline_interpolation_per_factor(mri_run):
    results = mri_run / "results/mri_superres"
    metrics = json.loads((results / "evaluation/metrics.json").read_text())
    assert metrics["degradation"] == "thick_slices" and metrics["input_method"] == "B-spline interpolation"
    assert set(metrics["levels"]) == {"2", "4"}
    for level in metrics["levels"].values():
        assert set(level["methods"]) == {"B-spline interpolation", "redcnn", "unet"} and level["best_baseline"] is None
        assert set(level["comparisons"]["unet"]) == {"B-spline interpolation"}
        # 24 slices: too few rows for the coarsest MS-SSIM scale, which is left out, not failed
        assert set(level["methods"]["unet"]) == {"psnr", "ssim"}
    # thicker slices, worse interpolation
    spline = {k: v["methods"]["B-spline interpolation"]["psnr"]["mean"] for k, v in metrics["levels"].items()}
    assert spline["4"] < spline["2"]
    assert not (results / "dose").exists()  # no dose simulation for this study
    for figure in ("figures/restoration_panels.png", "figures/metrics_vs_level.png", "figures/downstream_dice.png"):
        assert (results / figure).stat().st_size > 10_000, figure
    # the downstream segmentation: every method and the reference, at every factor
    downstream = json.loads((results / "downstream/metrics.json").read_text())
    assert downstream["labels"] == [1, 2, 4] and set(downstream["levels"]) == {"2", "4"}
    for level in downstream["levels"].values():
        assert set(level["methods"]) == {"reference", "B-spline interpolation", "redcnn", "unet"}
        assert set(level["minus_input"]) == {"reference", "redcnn", "unet"}
        for scores in level["methods"].values():
            assert 0 <= scores["ci_low"] <= scores["mean"] <= scores["ci_high"] <= 1
    table = pd.read_csv(results / "downstream/per_image.tsv", sep="\t")
    splits = json.loads((results / "split/splits.json").read_text())
    assert set(table["image_id"]) == set(splits["test"]) and (table["region_voxels"] >= 0).all()
    with np.load(results / "thick_slices/pairs.npz") as pairs:  # the thin-slice label maps, with the pairs
        assert pairs["mask"].shape == pairs["reference"].shape and set(np.unique(pairs["mask"])) <= {0, 1, 2, 4}


def test_translation_is_scored_against_histogram_matching_with_and_without_a_discriminator(mri_run):
    results = mri_run / "results/mri_translation"
    metrics = json.loads((results / "evaluation/metrics.json").read_text())
    assert metrics["degradation"] == "contrast" and metrics["input_method"] == "histogram-matched source"
    (level,) = metrics["levels"].values()  # one source channel
    assert set(level["methods"]) == {"histogram-matched source", "unet", "pix2pix"}
    assert set(level["methods"]["pix2pix"]) == {"psnr", "ssim", "ms_ssim"}  # 32 x 32 axial slices
    card = json.loads((results / "models/pix2pix/fold_0/metadata.json").read_text())
    assert card["training"]["adversarial"]["layers"] == 2
    downstream = json.loads((results / "downstream/metrics.json").read_text())
    (scores,) = downstream["levels"].values()
    assert set(scores["methods"]) == {"reference", "histogram-matched source", "unet", "pix2pix"}
    # a Fréchet distance per method, named for the features it is computed on
    assert downstream["fd_label"] == "FD (casebook downstream-segmenter features)"
    assert set(scores["fd"]) == set(scores["methods"]) and all(v >= 0 for v in scores["fd"].values())
    # the histogram reference comes from development patients: test slices are in the pairs
    # but no test image shaped it (checked by the unit tests); here, every test image is scored
    table = pd.read_csv(results / "evaluation/per_image.tsv", sep="\t")
    splits = json.loads((results / "split/splits.json").read_text())
    assert set(table["image_id"]) == set(splits["test"])
    for figure in ("figures/restoration_panels.png", "figures/metrics_vs_level.png"):
        assert (results / figure).stat().st_size > 10_000, figure


def test_inpainting_is_scored_inside_the_holes_against_biharmonic_filling(mri_run):
    results = mri_run / "results/mri_inpainting"
    metrics = json.loads((results / "evaluation/metrics.json").read_text())
    assert metrics["degradation"] == "missing_region" and metrics["input_method"] == "biharmonic inpainting"
    assert set(metrics["levels"]) == {"6", "12"}
    for level in metrics["levels"].values():
        assert set(level["methods"]) == {"biharmonic inpainting", "unet"}
        assert set(level["methods"]["unet"]) == {"psnr", "ssim"}  # no MS-SSIM inside a hole
        assert set(level["comparisons"]["unet"]) == {"biharmonic inpainting"}
    # a larger hole, a worse guess (scored inside it only, where the whole slice would hide it)
    fill = {k: v["methods"]["biharmonic inpainting"]["psnr"]["mean"] for k, v in metrics["levels"].items()}
    assert fill["12"] < fill["6"] < 40
    with np.load(results / "missing_region/pairs.npz") as pairs:
        sides = pairs["region"][:, 2]
        assert (pairs["region"][:, 3] == sides).all() and (sides == pairs["level"]).all()
    table = pd.read_csv(results / "evaluation/per_image.tsv", sep="\t")
    splits = json.loads((results / "split/splits.json").read_text())
    assert set(table["image_id"]) == set(splits["test"])
    assert (results / "figures/restoration_panels.png").stat().st_size > 10_000


def test_a_slice_factor_that_does_not_divide_a_volume_is_refused_naming_it(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    make_tiny_superres(workdir, factors=(2, 5))
    run = snakemake(workdir, "results/mri_superres/thick_slices/pairs.npz", check=False)
    assert run.returncode != 0
    log = (workdir / "logs/mri_superres/simulate_thick_slices.log").read_text()
    assert "brain_p0000" in log and "slice factor of 5 does not divide its 24 slices" in log
    assert not (workdir / "results/mri_superres/thick_slices/pairs.npz").exists()
