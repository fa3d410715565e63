"""One run of the tiny default DAG per test session, shared by every integration test
that only reads its outputs (conftest.py's ``tiny_run`` fixture).

The tests that read it: tests/test_workflow.py (outputs, metrics, provenance, audit,
dry runs, the report, a second run from scratch) and tests/test_slurm_profile.py (the
cluster run must end where this local run did, byte for byte). Tests that change it put
back what they change, bytes and modification times (Snakemake tells a changed input
by its mtime), so that the other readers see the run as it was made. Tests that need a
fresh state (a failure, a resume, a changed input) make their own run.
"""

from __future__ import annotations

from pathlib import Path

from workflow_helpers import copy_workflow, edit_yaml, make_tiny, snakemake

#: training epochs of the chest X-ray DenseNet (both folds) in the shared run: 10, not
#: make_tiny's 6, so that the SLURM test can cancel its training job mid-run and compare
#: the resumed cluster run with this one (about a second per epoch: cheaper than a second
#: local run).
CXR_EPOCHS = 10
#: training epochs of the chest X-ray ResNet-18 in the shared run: no test reads its
#: quality, only that it trains, is evaluated, explained, swept and compared; it is the
#: slowest model per epoch (about ten times the DenseNet's).
RESNET_EPOCHS = 1


def configure_tiny_run(workdir: Path) -> Path:
    """Make ``workdir`` (a copy of the workflow) the shared run's config: make_tiny's two
    classification case studies, the chest X-ray DenseNet trained for CXR_EPOCHS and the
    ResNet-18 for RESNET_EPOCHS (models' own 'train' settings, over the case study's)."""
    make_tiny(workdir)

    def epochs(cs):
        for model, n in (("densenet_small", CXR_EPOCHS), ("resnet18", RESNET_EPOCHS)):
            spec = cs["models"][model]
            spec["train"] = {**spec.get("train", {}), "epochs": n}

    edit_yaml(workdir / "config/casestudies/pneumonia_cxr.yaml", epochs)
    return workdir


def make_tiny_run(dest: Path) -> Path:
    """Copy the workflow to ``dest``, configure it as the shared run and run every target."""
    workdir = configure_tiny_run(copy_workflow(dest))
    snakemake(workdir)
    return workdir
