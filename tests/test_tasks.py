"""Tests for the task registry (casebook.tasks): one declaration per family, checked
against the family's own code; unknown tasks and misplaced sections are errors; a job
imports only its family; planning imports no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from casebook.tasks import TASKS, UnknownTask, casestudy_problems, family, stage

ROOT = Path(__file__).resolve().parents[1]


def test_every_family_declares_exactly_the_networks_its_builder_knows() -> None:
    from casebook.tasks.classification.networks import NETWORKS
    from casebook.tasks.detection.networks import KINDS as DETECTORS
    from casebook.tasks.registration.networks import NETWORKS as REGISTRATION_NETWORKS
    from casebook.tasks.restoration.networks import RESTORATION_NETWORKS
    from casebook.tasks.segmentation.networks import SEG_NETWORKS

    assert set(TASKS["classification"].networks) == set(NETWORKS)
    assert set(TASKS["segmentation"].networks) == set(SEG_NETWORKS)
    assert set(TASKS["restoration"].networks) == set(RESTORATION_NETWORKS)
    assert set(TASKS["registration"].networks) == set(REGISTRATION_NETWORKS)
    assert set(TASKS["detection"].networks) == set(DETECTORS)
    from casebook.tasks.comparison.networks import ENCODERS

    assert set(TASKS["comparison"].networks) == set(ENCODERS)


def test_every_family_has_a_rules_file_a_stages_module_and_its_stages() -> None:
    for name, fam in TASKS.items():
        assert (ROOT / "workflow" / "rules" / f"{name}.smk").is_file(), name
        for rule in fam.stages:
            assert callable(stage(name, rule)), (name, rule)


def test_an_unknown_task_names_the_case_study_and_the_known_tasks() -> None:
    with pytest.raises(UnknownTask, match=r"config/casestudies/x\.yaml: unknown task 'captioning'.*classification.*segmentation"):
        family("captioning", "config/casestudies/x.yaml")
    with pytest.raises(ValueError, match="has no stage 'explain'"):
        stage("segmentation", "explain")


def test_problems_name_another_familys_section_a_missing_one_and_a_foreign_network() -> None:
    cs = {"task": "segmentation", "models": {"m": {"network": {"name": "resnet18"}}}, "preprocess": {"size": [8, 8]}}
    problems = casestudy_problems(cs)
    assert "'preprocess' is a setting of task classification, not segmentation" in problems
    assert any("model 'm': network 'resnet18' is not a segmentation network" in p for p in problems)
    assert casestudy_problems({"models": {"m": {"network": {"name": "densenet"}}}}) == ["task classification needs 'preprocess'"]


def test_a_train_key_of_another_family_is_named_with_its_model() -> None:
    cs = {"models": {"m": {"network": {"name": "densenet"}, "train": {"loss": {"batch": True}}}}, "preprocess": {"size": [8, 8]}}
    assert casestudy_problems(cs) == ["model 'm': 'train.loss' is a setting of task segmentation, not classification"]
    cs["train"] = cs["models"]["m"].pop("train")
    assert casestudy_problems(cs) == ["'train.loss' is a setting of task segmentation, not classification"]
    seg = {"task": "segmentation", "models": {"m": {"network": {"name": "unet"}}}, "train": {"loss": {"batch": True}}}
    assert casestudy_problems(seg) == []


def test_every_shipped_case_study_passes_the_registry() -> None:
    for path in sorted((ROOT / "config" / "casestudies").glob("*.yaml")):
        assert casestudy_problems(yaml.safe_load(path.read_text())) == [], path.name


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"], capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def test_planning_imports_no_torch_and_a_stage_only_its_family() -> None:
    planning = _modules_after("import casebook.config, casebook.registry, casebook.tasks")
    assert not {"torch", "monai", "torchio", "SimpleITK"} & planning
    one_family = _modules_after("from casebook.tasks import stage; stage('segmentation', 'train')")
    assert "casebook.tasks.segmentation.stages" in one_family
    assert not any(m.startswith("casebook.tasks.classification") for m in one_family)
    assert "torch" not in one_family  # the stage imports its training code when it runs


def test_an_unknown_task_fails_planning_naming_the_file(tmp_path) -> None:
    study = yaml.safe_load((ROOT / "config" / "casestudies" / "pneumonia_cxr.yaml").read_text())
    study["task"] = "captioning"
    path = tmp_path / "captioning.yaml"
    path.write_text(yaml.safe_dump(study))
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--directory", str(ROOT), "--snakefile", str(ROOT / "Snakefile"),
         "--config", f"casestudies=[{path}]"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"{path}" in done.stdout + done.stderr and "unknown task 'captioning'" in done.stdout + done.stderr
