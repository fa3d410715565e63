"""Unit tests for the record-only parts of casebook.audit: the data sources behind an
output and the provenance summary that the report shows under each figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from docutils.core import publish_parts

from casebook import audit, provenance


def _write(records: Path, output: str, rule: str, inputs: dict[str, str], params: dict | None = None) -> None:
    """A record of ``output`` in the current format (checksums made up: the files need not exist)."""
    record = {
        "rule": rule, "wildcards": {"cs": "demo"}, "inputs": inputs, "outputs": {output: f"sha256:{rule}"},
        "params": params or {}, "seed": 7, "finished": "2026-11-22T10:00:00+00:00",
        "code": {"commit": "0123456789abcdef", "dirty": True, "hashes": {"package": "feedbeefcafe0000"}},
        "environment": {"packages": {"python": "3.11.7", "torch": "2.13.0"}, "device": {"cuda_available": False}},
    }  # fmt: skip
    current = provenance.record(rule=rule, inputs=[], outputs=[], started="2026-11-22T09:00:00+00:00", code={})
    record = {**current, **record, "output": output, "stats": {}}
    path = provenance.record_path(output, records)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


@pytest.fixture
def records(tmp_path: Path) -> Path:
    rec = tmp_path / "provenance"
    spec = {"source": "url", "entry": {"url": "https://example.org/Task09_Spleen.tar", "md5": "abc123"}}
    _write(rec, "resources/msd/Task09_Spleen.tar", "download", {}, {"spec": spec})
    _write(rec, "resources/msd/extracted", "extract", {"resources/msd/Task09_Spleen.tar": "sha256:download"})
    _write(rec, "results/a/data", "ingest", {"resources/msd/extracted": "sha256:extract", "labels.csv": "sha256:ff"})
    _write(
        rec,
        "results/b/data",
        "ingest",
        {},
        {"ingest": {"dataset": "synthetic_cxr", "generator": "casebook.synthetic.cxr", "params": {"n_patients": 60}}},
    )
    _write(rec, "results/fig.png", "figure", {"results/a/data": "sha256:ingest", "results/b/data": "sha256:ingest"})
    return rec


def test_data_sources_reach_the_download_the_generator_and_foreign_files(records):
    sources = {s["path"]: s for s in audit.data_sources("results/fig.png", records_dir=records)}
    assert sources["resources/msd/Task09_Spleen.tar"]["origin"] == "https://example.org/Task09_Spleen.tar"
    assert sources["resources/msd/Task09_Spleen.tar"]["md5"] == "abc123"
    assert sources["results/b/data"]["generator"] == "casebook.synthetic.cxr" and sources["results/b/data"]["seed"] == 7
    assert sources["labels.csv"] == {"kind": "file", "path": "labels.csv", "checksum": "sha256:ff"}
    assert len(sources) == 3


def test_summary_names_rule_code_environment_data_and_the_audit_command(records):
    text = audit.summary_rst("results/fig.png", records_dir=records)
    assert "Made by rule ``figure`` (cs=demo)" in text and "seed 7" in text
    assert "0123456789ab (uncommitted changes)" in text
    assert "torch 2.13.0" in text and "CPU" in text
    assert "https://example.org/Task09_Spleen.tar (md5 ``abc123``)" in text
    assert "``casebook audit results/fig.png``" in text
    # valid reStructuredText: docutils renders it without a warning or error message
    html = publish_parts(text, writer="html", settings_overrides={"report_level": 2, "halt_level": 2})["body"]
    assert "<li>" in html and "System Message" not in html


def test_summary_of_an_unrecorded_file_names_it(records):
    with pytest.raises(audit.AuditError, match="results/other.png: no provenance record"):
        audit.summary_rst("results/other.png", records_dir=records)


def test_records_from_before_the_format_had_a_version_are_read_the_same_way(records):
    current = audit.summary_rst("results/fig.png", records_dir=records)
    for path in records.rglob("*.json"):
        old = json.loads(path.read_text())
        assert old.pop("format") == "casebook-provenance" and old.pop("version") == 2
        path.write_text(json.dumps(old))
    assert audit.summary_rst("results/fig.png", records_dir=records) == current
    assert len(audit.data_sources("results/fig.png", records_dir=records)) == 3


def test_a_record_of_a_newer_version_fails_the_audit_naming_it(records):
    path = provenance.record_path("results/fig.png", records)
    path.write_text(json.dumps({**json.loads(path.read_text()), "version": 99}))
    with pytest.raises(audit.AuditError, match="results/fig.png: unreadable provenance record .*newer"):
        audit.summary_rst("results/fig.png", records_dir=records)
