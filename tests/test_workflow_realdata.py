"""Integration tests of real data formats through the real Snakemake DAG: a Decathlon
tarball and a DICOM zip served over HTTP on 127.0.0.1, truncated archives, the six
real BraTS cases read in place, and de-identification checked on every output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml
from realformat import PHI, make_msd_task, tar_folder, write_ct_series, zip_folder
from workflow_helpers import cheap_validation, copy_workflow, edit_yaml, snakemake

from casebook.analysis.robustness.perturbations import PERTURBATIONS
from casebook.layout import geometry_mismatches

pytestmark = pytest.mark.integration

BRATS = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats2013"


def register(workdir: Path, name: str, entry: dict) -> None:
    base = {"licence": "CC0-1.0", "citation": "test fixture", "access": "open"}
    edit_yaml(workdir / "config/datasets.yaml", lambda registry: registry.update({name: {**base, **entry}}))


def use_casestudy(workdir: Path, study: dict) -> None:
    path = workdir / f"config/casestudies/{study['name']}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    edit_yaml(workdir / "config/config.yaml", lambda c: c.update(casestudies=[str(path.relative_to(workdir))]))


def served_archive(root: Path, archive: Path) -> tuple[str, str]:
    (root / archive.name).write_bytes(archive.read_bytes())
    return archive.name, hashlib.md5(archive.read_bytes()).hexdigest()


def msd_workdir(tmp_path: Path, url: str, md5: str, filename: str) -> Path:
    workdir = copy_workflow(tmp_path / "wf")
    register(
        workdir,
        "toy_msd",
        {
            "description": "Decathlon-format fixture",
            "adapter": "msd",
            "spatial_dims": 3,
            "task": "segmentation",
            "file": {"url": url, "md5": md5, "filename": filename},
        },
    )
    use_casestudy(
        workdir,
        {
            "name": "toy_seg",
            "task": "segmentation",
            "modality": "MRI",
            "class_names": ["background", "rim", "core"],
            "dataset": {"name": "toy_msd"},
            "split": {"k": 2, "test_fraction": 0.25},
            "segmentation": {"max_patch_voxels": 2048, "samples_per_volume": 2},
            "train": {"epochs": 1, "batch_size": 2},
            "models": {"unet": {"network": {"name": "unet", "kwargs": {"channels": [4, 8], "strides": [2]}}}},
            "evaluate": {"n_bootstrap": 20},
        },
    )
    return workdir


def test_decathlon_tarball_downloads_extracts_ingests_and_fingerprints(tmp_path, http_root):
    root, base = http_root
    task = make_msd_task(tmp_path / "src", n_cases=6)
    filename, md5 = served_archive(root, tar_folder(task, tmp_path / "Task99_Toy.tar"))
    workdir = msd_workdir(tmp_path, f"{base}/{filename}", md5, filename)
    snakemake(workdir)
    extracted = workdir / "resources/toy_msd/extracted/Task99_Toy.tar/Task99_Toy"
    assert (extracted / "dataset.json").is_file() and not list(extracted.rglob("._*"))  # AppleDouble junk skipped
    results = workdir / "results/toy_seg"
    manifest = pd.read_csv(results / "data/manifest.tsv", sep="\t", keep_default_na=False)
    assert len(manifest) == 6 and manifest["patient_id"].str.match(r"^sub-[0-9a-f]{16}$").all()
    assert json.loads((results / "qc/geometry.json").read_text())["status"] == "ok"
    fingerprint = json.loads((results / "qc/fingerprint.json").read_text())
    assert fingerprint["n_cases"] == 6 and fingerprint["median_spacing"] == [1.0, 1.0, 2.0]
    plan = json.loads((results / "qc/plan.json").read_text())
    assert plan["spacing"] == [1.0, 1.0, 2.0] and plan["intensity"]["scheme"] == "zscore"
    assert (results / "figures/fingerprint.png").stat().st_size > 10_000
    assert json.loads((results / "split/leakage_check.json").read_text())["status"] == "ok"
    # the whole segmentation pipeline ran on the Decathlon format: every test case has a
    # prediction on its own image's grid, scored per label
    test_ids = json.loads((results / "split/splits.json").read_text())["test"]
    predictions = results / "evaluation/unet/fold_0/predictions"
    assert sorted(p.name for p in predictions.glob("*.nii.gz")) == sorted(f"{i}.nii.gz" for i in test_ids)
    for case_id in test_ids:
        image = sitk.ReadImage(str(results / f"data/images/{case_id}.nii.gz"))
        prediction = sitk.ReadImage(str(predictions / f"{case_id}.nii.gz"))
        assert geometry_mismatches(image, prediction) == []
        assert set(np.unique(sitk.GetArrayViewFromImage(prediction))) <= {0, 1, 2}
    metrics = json.loads((results / "evaluation/unet/fold_0/metrics.json").read_text())
    assert set(metrics["regions"]) == {"rim", "core"} and metrics["n_test_cases"] == len(test_ids)
    # nothing changed: nothing to do
    assert "Nothing to be done" in snakemake(workdir, "--dry-run").stdout


def test_truncated_tarball_fails_naming_it_and_leaves_no_extraction(tmp_path, http_root):
    root, base = http_root
    task = make_msd_task(tmp_path / "src", n_cases=2)
    archive = tar_folder(task, tmp_path / "Task99_Toy.tar")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])  # published md5 of a broken file
    filename, md5 = served_archive(root, archive)
    workdir = msd_workdir(tmp_path, f"{base}/{filename}", md5, filename)
    done = snakemake(workdir, check=False)
    assert done.returncode != 0
    assert "Task99_Toy.tar" in done.stdout + done.stderr
    extracted = workdir / "resources/toy_msd/extracted"
    assert not [p for p in extracted.rglob("*") if p.is_file()] if extracted.exists() else True
    assert not (workdir / "results/toy_seg/data").exists()


def test_wrong_checksum_of_a_tarball_fails_naming_url_and_leaves_nothing(tmp_path, http_root):
    root, base = http_root
    task = make_msd_task(tmp_path / "src", n_cases=2)
    filename, _ = served_archive(root, tar_folder(task, tmp_path / "Task99_Toy.tar"))
    workdir = msd_workdir(tmp_path, f"{base}/{filename}", "0" * 32, filename)
    done = snakemake(workdir, check=False)
    assert done.returncode != 0 and f"{base}/{filename}" in done.stdout + done.stderr
    assert not [p for p in (workdir / "resources").rglob("*") if p.is_file()]


def test_missing_file_on_the_server_fails_naming_the_url(tmp_path, http_root):
    _, base = http_root
    workdir = msd_workdir(tmp_path, f"{base}/Task99_Missing.tar", "0" * 32, "Task99_Missing.tar")
    done = snakemake(workdir, check=False)
    assert done.returncode != 0
    assert "404" in done.stdout + done.stderr and f"{base}/Task99_Missing.tar" in done.stdout + done.stderr


def test_interrupted_download_fails_cleanly_then_a_rerun_resumes(tmp_path, monkeypatch):
    """The server hangs up mid-transfer on every attempt: the run fails naming the URL and
    the file, and leaves nothing in resources/; the rerun resumes with a Range request."""
    import threading

    from test_download import LoopbackServer

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    task = make_msd_task(tmp_path / "src", n_cases=4)
    # big enough that each dropped transfer has written whole 64 KiB chunks
    (task / "LICENSE.txt").write_bytes(np.random.default_rng(0).bytes(400_000))
    payload = tar_folder(task, tmp_path / "Task99_Toy.tar").read_bytes()
    server = LoopbackServer()
    server.state.files["/Task99_Toy.tar"] = payload
    server.state.script["/Task99_Toy.tar"] = ["drop"] * 3
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = server.url("/Task99_Toy.tar")
        workdir = msd_workdir(tmp_path, url, hashlib.md5(payload).hexdigest(), "Task99_Toy.tar")
        edit_yaml(workdir / "config/config.yaml", lambda c: c.update(download={"retries": 2, "backoff": 0.01}))
        done = snakemake(workdir, check=False)
        assert done.returncode != 0
        log = (workdir / "logs/download/toy_msd/Task99_Toy.tar.log").read_text()
        assert url in log and "Task99_Toy.tar" in log and "after 3 attempt(s)" in log
        assert not [p for p in (workdir / "resources").rglob("*") if p.is_file()]
        partial = workdir / ".downloads/Task99_Toy.tar.part"
        kept = partial.stat().st_size
        assert 0 < kept < len(payload)
        asked_before = len(server.state.ranges("/Task99_Toy.tar"))

        # the server behaves now; the rerun goes as far as the assertions read (the data
        # set), the rest of the pipeline on this format is test_decathlon_tarball_...'s
        snakemake(workdir, "results/toy_seg/data")
        assert (workdir / "resources/toy_msd/Task99_Toy.tar").read_bytes() == payload
        assert server.state.ranges("/Task99_Toy.tar")[asked_before:] == [f"bytes={kept}-"]  # resumed, not restarted
        assert not partial.exists()
        assert len(pd.read_csv(workdir / "results/toy_seg/data/manifest.tsv", sep="\t")) == 4
    finally:
        server.shutdown()
        server.server_close()


def test_local_copies_a_mirrored_archive_or_an_extracted_folder(tmp_path):
    """source: path to a folder holding the registry's file is a mirror (copied, md5
    checked, extracted); to any other folder, the extracted data set read in place."""
    task = make_msd_task(tmp_path / "src", n_cases=4)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    archive = tar_folder(task, mirror / "Task99_Toy.tar")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    workdir = msd_workdir(tmp_path, "http://127.0.0.1:9/unreachable.tar", md5, "Task99_Toy.tar")

    edit_yaml(workdir / "config/casestudies/toy_seg.yaml", lambda cs: cs["dataset"].update(source="path", path=str(mirror)))
    snakemake(workdir, "results/toy_seg/data")
    assert (workdir / "resources/toy_msd/Task99_Toy.tar").read_bytes() == archive.read_bytes()
    assert (workdir / "resources/toy_msd/extracted/Task99_Toy.tar/Task99_Toy/dataset.json").is_file()

    edit_yaml(workdir / "config/casestudies/toy_seg.yaml", lambda cs: cs["dataset"].update(path=str(tmp_path / "src")))
    plan = snakemake(workdir, "results/toy_seg/data", "--forcerun", "ingest", "--dry-run").stdout
    assert "download" not in plan and "extract" not in plan and str(tmp_path / "src") in plan
    snakemake(workdir, "results/toy_seg/data", "--forcerun", "ingest")
    assert len(pd.read_csv(workdir / "results/toy_seg/data/manifest.tsv", sep="\t")) == 4


def test_registration_only_data_without_a_path_says_how_to_obtain_it(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    models = {"unet": {"network": {"name": "unet"}}}
    use_casestudy(
        workdir, {"name": "kits", "task": "segmentation", "class_names": ["bg", "kidney"], "dataset": {"name": "kits23"}, "models": models}
    )
    done = snakemake(workdir, "--dry-run", check=False)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "needs registration" in output and "github.com/neheller/kits23" in output


# ---- DICOM and de-identification ------------------------------------------------------


def dicom_collection(root: Path, n_patients: int) -> Path:
    """Patients with one CT series each (random HU) and a labels table keyed by PatientID."""
    labels = []
    for i in range(n_patients):
        phi = {**PHI, "PatientName": f"Testperson{i:02d}^Jonathan", "PatientID": f"MRN-77{i:06d}", "AccessionNumber": f"ACC-{i:08d}"}
        write_ct_series(root / f"Testperson{i:02d}" / "CT", phi=phi, seed=i)
        labels.append({"patient_id": phi["PatientID"], "label": i % 2})
    pd.DataFrame(labels).to_csv(root.parent / "labels.csv", index=False)
    return root


def test_dicom_identifiers_never_reach_any_output(tmp_path, http_root):
    """Plant identifiers in DICOM headers, run ingest and everything downstream (training,
    evaluation, explanation, figures, report), then scan every output file: zero hits."""
    served, base = http_root
    collection = dicom_collection(tmp_path / "collection" / "ToyCT", n_patients=16)
    filename, md5 = served_archive(served, zip_folder(collection, tmp_path / "ToyCT.zip"))
    workdir = copy_workflow(tmp_path / "wf")
    register(
        workdir,
        "toy_dicom",
        {
            "description": "DICOM fixture with planted identifiers",
            "adapter": "dicom",
            "spatial_dims": 3,
            "task": "binary-class",
            "file": {"url": f"{base}/{filename}", "md5": md5, "filename": filename},
        },
    )
    study = yaml.safe_load((workdir / "config/casestudies/nodule_ct.yaml").read_text())
    study.update(
        name="toy_dicom_ct", dataset={"name": "toy_dicom", "adapter_params": {"labels_csv": str(tmp_path / "collection/labels.csv")}}
    )
    study["split"] = {"k": 2, "test_fraction": 0.25, "use_source_split": False}
    study["preprocess"].update(spacing=None, size=[16, 16, 16])
    study["train"].update(epochs=1, batch_size=8)
    study["evaluate"]["n_bootstrap"] = 20
    cheap_validation(study, mask_size=8)
    study["explain"]["images_per_class"] = 1
    use_casestudy(workdir, study)
    snakemake(workdir)
    snakemake(workdir, "--report", "results/report.html")

    manifest = pd.read_csv(workdir / "results/toy_dicom_ct/data/manifest.tsv", sep="\t")
    assert len(manifest) == 16 and manifest["patient_id"].nunique() == 16
    assert sorted(manifest["label"].tolist()) == [0] * 8 + [1] * 8  # labels found through the raw PatientID

    planted = set()
    for i in range(16):
        planted |= {f"Testperson{i:02d}", f"MRN-77{i:06d}", f"ACC-{i:08d}"}
    planted |= {PHI["PatientBirthDate"], PHI["InstitutionName"], "Kildare", PHI["StudyID"]}
    outputs = [p for d in ("results", "logs", "provenance") for p in (workdir / d).rglob("*") if p.is_file()]
    outputs += [p for p in (workdir / ".snakemake").rglob("*") if p.is_file() and "conda" not in p.parts]
    assert len(outputs) > 30
    hits = [(str(p.relative_to(workdir)), v) for p in outputs for v in planted if v.encode() in p.read_bytes()]
    assert hits == []


# ---- the six real BraTS cases -----------------------------------------------------------


@pytest.mark.skipif(not BRATS.is_dir(), reason="needs ../shared/data/brats2013")
def test_real_brats_cases_run_end_to_end(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    # one epoch at 4 mm: the plumbing on real data, not the Dice (see the issue note)
    quick = {
        "dataset": {"path": str(BRATS)},
        "segmentation": {"spacing": [4.0, 4.0, 4.0], "max_patch_voxels": 4096, "samples_per_volume": 2},
        "train": {"epochs": 1},
        "evaluate": {"n_bootstrap": 20},
        "robustness": {"perturbations": {name: [] for name in PERTURBATIONS} | {"noise": [1.0]}},
    }
    edit_yaml(workdir / "config/shared_brats.yaml", lambda c: c.update(overrides={"brats2015_sample": quick}))
    snakemake(workdir, "--configfile", "config/shared_brats.yaml")
    results = workdir / "results/brats2015_sample"
    manifest = pd.read_csv(results / "data/manifest.tsv", sep="\t", keep_default_na=False)
    assert len(manifest) == 6 and sorted(manifest["source_split"]) == ["test", "test", "train", "train", "val", "val"]
    fingerprint = json.loads((results / "qc/fingerprint.json").read_text())
    assert fingerprint["channel_names"] == ["FLAIR", "T1c"] and fingerprint["median_spacing"] == [1.0, 1.0, 1.0]
    splits = json.loads((results / "split/splits.json").read_text())
    assert len(splits["test"]) == 2 and len(splits["folds"]) == 1
    assert "brats_2013" not in (results / "data/manifest.tsv").read_text()  # source case names are pseudonymized
    for case_id in splits["test"]:  # predictions back on the 240 x 240 x 155 grid of each input
        image = sitk.ReadImage(str(results / f"data/images/{case_id}.nii.gz"))
        prediction = sitk.ReadImage(str(results / f"evaluation/unet/fold_0/predictions/{case_id}.nii.gz"))
        assert prediction.GetSize() == (240, 240, 155) and geometry_mismatches(image, prediction) == []
    metrics = json.loads((results / "evaluation/unet/fold_0/metrics.json").read_text())
    assert set(metrics["regions"]) == {"whole_tumour", "tumour_core", "enhancing_tumour"}
