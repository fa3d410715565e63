"""The ``casebook`` console command."""

from __future__ import annotations

import json
from pathlib import Path

from casebook import provenance
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


def _job(rule: str, inputs: list[str], outputs: list[str], beside: str | None = None) -> None:
    """Run a pretend job in the working directory: write its outputs, the record beside
    them when it has one (as train and evaluate do), then one record per output (as
    casebook.scripting.logged does)."""
    started = provenance.now()
    for output in outputs:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(f"{rule} made {output}\n")
    if beside:
        provenance.write_record(beside, rule=rule, inputs=inputs, outputs=outputs, started=started, seed=1, device="cpu")
    rec = provenance.record(rule=rule, inputs=inputs, outputs=[*outputs, *([beside] if beside else [])], started=started, seed=1)
    provenance.write_job_records(rec)


def test_audit_traces_a_result_through_records_of_one_format(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("raw.csv").write_text("x\n")
    _job("make", ["raw.csv"], ["out/a.txt"], beside="out/provenance.json")
    _job("summarise", ["out/a.txt", "out/provenance.json"], ["out/b.txt"])

    assert main(["audit", "out/b.txt", "--no-stale-check", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["problems"] == []
    lineage = report["lineage"]
    assert (lineage["rule"], lineage["status"]) == ("summarise", "ok")
    assert {(s["path"], s["rule"]) for s in lineage["inputs"]} == {("out/a.txt", "make"), ("out/provenance.json", "make")}
    assert lineage["inputs"][0]["inputs"][0]["path"] == "raw.csv" and lineage["inputs"][0]["inputs"][0]["rule"] is None
    # the record beside the outputs and the per-output records say the same, in the same keys
    beside = provenance.read_record("out/provenance.json")
    per_output = provenance.read_record(provenance.record_path("out/a.txt"))
    assert set(beside) == set(per_output) and beside["outputs"]["out/a.txt"] == per_output["outputs"]["out/a.txt"]

    Path("raw.csv").write_text("y\n")  # a source changed after the fact
    assert main(["audit", "out/b.txt", "--no-stale-check"]) == 1
    captured = capsys.readouterr()
    assert "[summarise]" in captured.out and "raw.csv" in captured.out
    assert "casebook audit: raw.csv: checksum differs from the record" in captured.err


def test_audit_of_a_file_without_a_record_fails_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("loose.txt").write_text("x\n")
    assert main(["audit", "loose.txt", "--no-stale-check"]) == 2
    assert "loose.txt: no provenance record" in capsys.readouterr().err
