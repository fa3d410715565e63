"""Integration tests of the data path: real downloads from a local HTTP server, local
mirrors, real MedMNIST files, and bad input that must fail clearly, leaving nothing half-written."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import cheap_validation, copy_workflow, edit_yaml, snakemake

pytestmark = pytest.mark.integration

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist"


def tiny_medmnist_npz(n_per_split=(40, 16, 24), size=28, seed=0) -> bytes:
    """A MedMNIST-format npz whose class 1 images carry a bright square (learnable)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), n_per_split):
        labels = np.arange(n) % 2
        images = rng.integers(0, 120, (n, size, size)).astype(np.uint8)
        images[labels == 1, 8:16, 8:16] = 250
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.reshape(-1, 1).astype(np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def medmnist_workdir(tmp_path: Path, *, url: str, md5: str, dataset: dict | None = None) -> Path:
    """A workflow copy whose only case study is a tiny MedMNIST-format data set at ``url``."""
    workdir = copy_workflow(tmp_path / "wf")

    def add_entry(registry):
        registry["tinymnist"] = {
            "description": "test fixture in MedMNIST format",
            "licence": "CC0-1.0",
            "citation": "none",
            "homepage": "http://127.0.0.1/",
            "adapter": "medmnist",
            "spatial_dims": 2,
            "task": "binary-class",
            "access": "open",
            "default_size": 28,
            "files": {28: {"url": url, "md5": md5, "filename": "tinymnist.npz"}},
        }

    edit_yaml(workdir / "config/datasets.yaml", add_entry)
    study = yaml.safe_load((workdir / "config/casestudies/pneumonia_cxr.yaml").read_text())
    study.update(name="tiny_medmnist", dataset={"name": "tinymnist", "size": 28, **(dataset or {})})
    study["preprocess"]["size"] = [28, 28]
    study["train"].update(epochs=3, batch_size=16)
    # the ResNet-18 (about ten times slower per epoch) runs the whole pipeline too, but no
    # test reads its quality: one epoch
    study["models"]["resnet18"]["train"] = {**study["models"]["resnet18"].get("train", {}), "epochs": 1}
    study["evaluate"].update(n_bootstrap=50, subgroups=[])  # MedMNIST has no site or sex
    study["folds"] = [0]  # MedMNIST defines its own validation split: one fold
    cheap_validation(study, mask_size=7)
    (workdir / "config/casestudies/tiny_medmnist.yaml").write_text(yaml.safe_dump(study))
    edit_yaml(workdir / "config/config.yaml", lambda c: c.update(casestudies=["config/casestudies/tiny_medmnist.yaml"]))
    return workdir


def test_download_from_http_then_ingest_train_and_evaluate(tmp_path, http_root):
    # up to one model's test metrics: the rest of the DAG on downloaded real-format data
    # (explanation, robustness, figures, the report) is test_workflow_realdata's DICOM run
    root, base = http_root
    payload = tiny_medmnist_npz()
    (root / "tinymnist.npz").write_bytes(payload)
    workdir = medmnist_workdir(tmp_path, url=f"{base}/tinymnist.npz", md5=hashlib.md5(payload).hexdigest())
    snakemake(workdir, "results/tiny_medmnist/evaluation/densenet_small/fold_0/metrics.json")
    assert (workdir / "resources/tinymnist/tinymnist.npz").read_bytes() == payload
    manifest = pd.read_csv(workdir / "results/tiny_medmnist/data/manifest.tsv", sep="\t")
    assert manifest["source_split"].value_counts().to_dict() == {"train": 40, "test": 24, "val": 16}
    splits = json.loads((workdir / "results/tiny_medmnist/split/splits.json").read_text())
    assert len(splits["test"]) == 24 and len(splits["folds"]) == 1 and len(splits["folds"][0]["val"]) == 16
    metrics = json.loads((workdir / "results/tiny_medmnist/evaluation/densenet_small/fold_0/metrics.json").read_text())
    assert metrics["auc"] > 0.9  # the bright square is easy


def test_wrong_checksum_fails_naming_file_and_leaves_nothing(tmp_path, http_root):
    root, base = http_root
    (root / "tinymnist.npz").write_bytes(tiny_medmnist_npz())
    wrong = "0" * 32
    workdir = medmnist_workdir(tmp_path, url=f"{base}/tinymnist.npz", md5=wrong)
    done = snakemake(workdir, check=False)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "tinymnist.npz" in output and wrong in output and hashlib.md5((root / "tinymnist.npz").read_bytes()).hexdigest() in output
    leftovers = list((workdir / "resources").rglob("*")) if (workdir / "resources").exists() else []
    assert [p for p in leftovers if p.is_file()] == []


def test_corrupted_npz_fails_clearly_and_writes_no_dataset(tmp_path):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(tiny_medmnist_npz()[:5000])  # truncated zip
    md5 = hashlib.md5(corrupt.read_bytes()).hexdigest()
    workdir = medmnist_workdir(
        tmp_path, url="http://127.0.0.1:9/unused.npz", md5=md5, dataset={"source": "path", "path": str(corrupt), "md5": md5}
    )
    done = snakemake(workdir, check=False)
    assert done.returncode != 0
    assert "not a readable MedMNIST npz file" in done.stdout + done.stderr
    results = workdir / "results/tiny_medmnist"
    assert not (results / "data").exists() and not (results / "data.partial").exists()


def test_manifest_pointing_at_a_missing_file_fails_naming_it(tmp_path, http_root):
    root, base = http_root
    payload = tiny_medmnist_npz()
    (root / "tinymnist.npz").write_bytes(payload)
    workdir = medmnist_workdir(tmp_path, url=f"{base}/tinymnist.npz", md5=hashlib.md5(payload).hexdigest())
    snakemake(workdir, "results/tiny_medmnist/data")
    victim = next((workdir / "results/tiny_medmnist/data/images").glob("*.nii.gz"))
    victim.unlink()
    done = snakemake(workdir, "results/tiny_medmnist/preprocess/index.tsv", check=False)
    assert done.returncode != 0
    assert victim.name in done.stdout + done.stderr and "does not exist" in done.stdout + done.stderr
    assert not (workdir / "results/tiny_medmnist/preprocess/images.npy").exists()


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda cs: cs["train"].update(learning_rate=0.1), ["pneumonia_cxr.yaml", "learning_rate"]),
        (lambda cs: cs["train"].update(epochs="ten"), ["pneumonia_cxr.yaml", "ten", "integer"]),
        (lambda cs: cs.update(colour="blue"), ["pneumonia_cxr.yaml", "colour"]),
    ],
    ids=["unknown-nested-key", "wrong-type", "unknown-top-level-key"],
)
def test_bad_config_is_refused_before_anything_runs(tmp_path, change, words):
    workdir = copy_workflow(tmp_path)
    edit_yaml(workdir / "config/casestudies/pneumonia_cxr.yaml", change)
    done = snakemake(workdir, "--dry-run", check=False)
    assert done.returncode != 0
    for word in words:
        assert word in done.stdout + done.stderr, word
    assert not (workdir / "results").exists() or not any((workdir / "results").iterdir())


@pytest.mark.skipif(not (SHARED / "pneumoniamnist.npz").exists(), reason="needs ../shared/data")
def test_real_pneumoniamnist_from_a_local_file(tmp_path):
    """The shared PneumoniaMNIST file (train split cut to 3882 images) through the shipped
    real-data case study, switched to a local path by configuration alone, up to preprocessing."""
    workdir = copy_workflow(tmp_path)
    # the shipped config names ../shared/data relative to the repository root
    edit_yaml(
        workdir / "config/shared_pneumoniamnist.yaml",
        lambda c: c["overrides"]["pneumoniamnist"]["dataset"].update(path=str(SHARED / "pneumoniamnist.npz")),
    )
    # targets first: --configfile takes every value that follows it
    targets = ["results/pneumoniamnist/split/leakage_check.json", "results/pneumoniamnist/preprocess/index.tsv"]
    snakemake(workdir, *targets, "--configfile", "config/shared_pneumoniamnist.yaml")
    splits = json.loads((workdir / "results/pneumoniamnist/split/splits.json").read_text())
    assert (len(splits["folds"][0]["train"]), len(splits["folds"][0]["val"]), len(splits["test"])) == (3882, 524, 624)
    images = np.load(workdir / "results/pneumoniamnist/preprocess/images.npy", mmap_mode="r")
    assert images.shape == (3882 + 524 + 624, 1, 28, 28)


@pytest.mark.parametrize("override, word", [("seeds=3", "'seeds' was unexpected"), ("seed=abc", "at seed")])
def test_bad_top_level_config_is_refused(tmp_path, override, word):
    workdir = copy_workflow(tmp_path)
    done = snakemake(workdir, "--dry-run", "--config", override, check=False)
    assert done.returncode != 0 and word in done.stdout + done.stderr
