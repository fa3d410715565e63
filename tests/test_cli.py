"""The ``casebook`` console command."""

from __future__ import annotations

from pathlib import Path

from casebook.cli import main

REGISTRY = Path(__file__).resolve().parents[1] / "config" / "datasets.yaml"


def test_datasets_lists_every_registry_entry_with_its_access(capsys):
    assert main(["datasets", "--registry", str(REGISTRY)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert rows["pneumoniamnist"][1:6] == ["2", "binary-class", "open", "medmnist", "28,64,128,224"]
    assert rows["adrenalmnist3d"][1:6] == ["3", "binary-class", "open", "medmnist", "28,64"]
    assert rows["synthetic_cxr"][3] == "embedded"
    assert rows["msd_task01_braintumour"][3:6] == ["open", "msd", "Task01_BrainTumour.tar"]
    assert rows["brats2021"][3:6] == ["registration", "case_folders", "-"]


def test_datasets_with_a_missing_registry_fails_naming_it(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["datasets", "--registry", str(missing)]) == 2
    assert "nope.yaml" in capsys.readouterr().err
