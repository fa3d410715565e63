"""``casebook audit PATH``: where a published figure, number or model came from.

Every job of the pipeline leaves a record per output under ``provenance/``, in the one
record format of :mod:`casebook.provenance` (read by :func:`casebook.provenance.read_record`,
older records included): rule, wildcards, inputs and outputs with checksums, params,
config, seed, device, code (git commit, dirty flag, hashes of the package, scripts and
workflow), the environment and timings. The audit walks these records from ``PATH`` back to the raw downloads and
checks, at every step:

* that each recorded checksum still matches the file on disk (a tampered or stale file
  is named, and the audit fails);
* that the code which made the step is the code in the working tree now;
* that its config values are still the current ones (Snakemake's own
  ``--list-changes params``, so "current" means exactly what a rerun would use).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from casebook.provenance import RECORDS_DIR, code_fingerprint, path_digest, read_record, record_path

__all__ = [
    "Step", "AuditError", "trace", "problems", "render_text", "to_json", "params_changed", "data_sources",
    "summary_rst",
]  # fmt: skip


class AuditError(RuntimeError):
    """The path has no provenance record (it was not made by the pipeline)."""


@dataclass
class Step:
    """One file of the lineage: how it was made and whether it still checks out."""

    path: str
    rule: str | None  # None: a source file that the pipeline did not make
    wildcards: dict[str, str] = field(default_factory=dict)
    recorded: str | None = None  # checksum when it was made (or when its consumer read it)
    actual: str | None = None  # checksum now; None when the file is gone
    commit: str | None = None
    dirty: bool | None = None
    code_changed: list[str] = field(default_factory=list)  # parts whose code differs now
    params_changed: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    inputs: list["Step"] = field(default_factory=list)
    repeated: bool = False  # already shown elsewhere in the tree

    @property
    def status(self) -> str:
        if self.actual is None:
            return "missing"
        if self.recorded is not None and self.actual != self.recorded:
            return "modified"
        if self.code_changed or self.params_changed:
            return "stale"
        return "ok"


def _read_record(path: str, records_dir: Path) -> dict[str, Any] | None:
    """The record of ``path`` in the current layout (the one reader of every record the
    audit and the report summaries use), None when the pipeline did not make ``path``."""
    file = Path(records_dir) / record_path(path, "")
    try:
        return read_record(file)
    except ValueError as exc:  # not JSON, another format, or a newer version
        raise AuditError(f"{path}: unreadable provenance record {file}: {exc}") from exc


def trace(
    path: str | Path,
    *,
    records_dir: str | Path = RECORDS_DIR,
    changed_params: Iterable[str] = (),
    current_code: dict[str, str] | None = None,
) -> Step:
    """The lineage of ``path`` as a tree of :class:`Step`, checked against the disk."""
    records_dir = Path(records_dir)
    path = Path(path).as_posix()
    if _read_record(path, records_dir) is None:
        raise AuditError(f"{path}: no provenance record in {records_dir}/ (was it made by this pipeline's rules?)")
    current_code = current_code if current_code is not None else code_fingerprint()
    changed = {Path(p).as_posix() for p in changed_params}
    seen: set[str] = set()

    def visit(file: str, recorded: str | None) -> Step:
        exists = Path(file).exists()
        record = _read_record(file, records_dir)
        step = Step(path=file, rule=None, recorded=recorded, actual=path_digest(file) if exists else None)
        if record is None:
            return step
        step.rule, step.wildcards, step.params = record["rule"], record.get("wildcards", {}), record.get("params", {})
        step.recorded = record["outputs"].get(file, recorded)
        code = record.get("code", {})
        step.commit, step.dirty = code.get("commit"), code.get("dirty")
        hashes = code.get("hashes", {})
        step.code_changed = sorted(k for k, v in hashes.items() if current_code.get(k) != v)
        step.params_changed = file in changed
        if file in seen:
            step.repeated = True
            return step
        seen.add(file)
        step.inputs = [visit(Path(p).as_posix(), digest) for p, digest in sorted(record.get("inputs", {}).items())]
        return step

    return visit(path, None)


def _walk(step: Step) -> Iterable[Step]:
    yield step
    for child in step.inputs:
        yield from _walk(child)


def problems(root: Step) -> list[str]:
    """One line per file that does not check out, naming it and what is wrong."""
    out = []
    for step in _walk(root):
        if step.repeated:
            continue
        if step.status == "missing":
            out.append(f"{step.path}: missing (recorded {step.recorded})")
        elif step.status == "modified":
            out.append(f"{step.path}: checksum differs from the record: recorded {step.recorded}, now {step.actual}")
        elif step.status == "stale":
            why = []
            if step.code_changed:
                why.append(f"code changed since it was made ({', '.join(step.code_changed)})")
            if step.params_changed:
                why.append("its config values changed since it was made")
            out.append(f"{step.path}: stale: {'; '.join(why)}")
    return out


def _describe(step: Step) -> str:
    if step.rule is None:
        return f"{step.path}  [source file]  {step.status}  {step.actual or step.recorded}"
    where = " ".join(f"{k}={v}" for k, v in step.wildcards.items())
    commit = (step.commit or "no git")[:10] + (" dirty" if step.dirty else "")
    line = f"{step.path}  [{step.rule}{' ' + where if where else ''}]  {step.status}  {step.recorded}  code {commit}"
    spec = step.params.get("spec") if step.rule == "download" else None
    if isinstance(spec, dict):  # the raw download: where it came from
        entry = spec.get("entry", {})
        origin = entry.get("url") if spec.get("source") == "url" else spec.get("path")
        line += f"  from {origin} (md5 {entry.get('md5')})"
    return line + ("  (see above)" if step.repeated else "")


def render_text(root: Step) -> str:
    """The lineage as an indented tree, the audited file first."""
    lines: list[str] = []

    def draw(step: Step, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└── " if last else "├── ")
        lines.append(prefix + branch + _describe(step))
        child_prefix = prefix if top else prefix + ("    " if last else "│   ")
        for i, child in enumerate(step.inputs):
            draw(child, child_prefix, i == len(step.inputs) - 1, False)

    draw(root, "", True, True)
    return "\n".join(lines)


def to_json(root: Step) -> dict[str, Any]:
    """The lineage as nested dicts (``--format json``)."""

    def convert(step: Step) -> dict[str, Any]:
        return {
            "path": step.path,
            "rule": step.rule,
            "wildcards": step.wildcards,
            "status": step.status,
            "recorded": step.recorded,
            "actual": step.actual,
            "commit": step.commit,
            "dirty": step.dirty,
            "code_changed": step.code_changed,
            "params_changed": step.params_changed,
            "params": step.params,
            "repeated": step.repeated,
            "inputs": [convert(child) for child in step.inputs],
        }

    tree = convert(root)
    return {"lineage": tree, "problems": problems(root)}


def params_changed(snakemake_args: Iterable[str] = ()) -> list[str]:
    """Outputs whose params differ from what the current config gives.

    Snakemake decides, in a dry run that only considers params (its ``--list-changes
    params`` also lists outputs whose params did not change, so it is not used): every
    job it would rerun because "Params have changed" lists its outputs.
    """
    cmd = [sys.executable, "-m", "snakemake", "--dry-run", "--rerun-triggers", "params", *snakemake_args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise AuditError(f"could not ask Snakemake for changed params: {(done.stdout + done.stderr).strip()[-2000:]}")
    changed, outputs = [], []
    for line in done.stdout.splitlines():
        line = line.strip()
        if line.startswith("rule "):
            outputs = []
        elif line.startswith("output: "):
            outputs = [p.strip() for p in line.removeprefix("output: ").split(",")]
        elif line.startswith("reason: ") and "Params have changed" in line:
            changed += outputs
    return changed


# --------------------------------------------------------------------------------------
# A short provenance summary per output, shown under each figure of the Snakemake report
# --------------------------------------------------------------------------------------


def data_sources(path: str | Path, *, records_dir: str | Path = RECORDS_DIR) -> list[dict[str, Any]]:
    """Where the data behind ``path`` came from, from the records alone (nothing is
    hashed, so it is cheap enough to run after every job): downloads with their URL or
    local path and md5, embedded data sets with their generator and parameters, and files
    that the pipeline did not make, with the checksum their consumer recorded."""
    records_dir = Path(records_dir)
    sources: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()

    def visit(file: str, recorded: str | None) -> None:
        if file in seen:
            return
        seen.add(file)
        record = _read_record(file, records_dir)
        if record is None:
            sources[file] = {"kind": "file", "path": file, "checksum": recorded}
            return
        params = record.get("params", {})
        if record["rule"] == "download" and isinstance(params.get("spec"), dict):
            spec = params["spec"]
            entry = spec.get("entry", {})
            origin = entry.get("url") if spec.get("source", "url") == "url" else spec.get("path")
            sources[file] = {"kind": "download", "path": file, "origin": origin, "md5": entry.get("md5")}
        ingest = params.get("ingest")
        if record["rule"] == "ingest" and isinstance(ingest, dict) and ingest.get("generator"):
            sources[file] = {
                "kind": "generated", "path": file, "dataset": ingest.get("dataset"),
                "generator": ingest["generator"], "params": ingest.get("params", {}), "seed": record.get("seed"),
            }  # fmt: skip
        for child, digest in sorted(record.get("inputs", {}).items()):
            visit(Path(child).as_posix(), digest)

    visit(Path(path).as_posix(), None)
    return list(sources.values())


def _source_line(source: dict[str, Any]) -> str:
    if source["kind"] == "download":
        return f"``{source['path']}`` from {source['origin']} (md5 ``{source['md5']}``)"
    if source["kind"] == "generated":
        params = ", ".join(f"{k}={v}" for k, v in sorted(source["params"].items()))
        return f"``{source['path']}``: {source['dataset']} generated by ``{source['generator']}`` ({params}; seed {source['seed']})"
    return f"``{source['path']}`` (not made by the pipeline; ``{source['checksum']}``)"


def summary_rst(path: str | Path, *, records_dir: str | Path = RECORDS_DIR) -> str:
    """reStructuredText: which rule, code, environment and data made ``path``, and the
    command that audits it in full. Included by the report captions."""
    path = Path(path).as_posix()
    record = _read_record(path, records_dir)
    if record is None:
        raise AuditError(f"{path}: no provenance record in {records_dir}/")
    code = record.get("code", {})
    commit = code["commit"][:12] if code.get("commit") else "not in a git repository"
    commit += " (uncommitted changes)" if code.get("dirty") else ""
    env = record.get("environment", {})
    packages = env.get("packages", {})
    device = env.get("device", {})
    device_text = device.get("gpu") or ("CPU" if device else "unknown")
    where = ", ".join(f"{k}={v}" for k, v in record.get("wildcards", {}).items())
    lines = [
        "**Provenance.**",
        "",
        f"- Made by rule ``{record['rule']}``{f' ({where})' if where else ''}, finished {record.get('finished')}, seed {record.get('seed')}.",
        f"- Output checksum ``{record['outputs'].get(path)}``.",
        f"- Code: commit ``{commit}``; package hash ``{code.get('hashes', {}).get('package', '?')[:12]}``.",
        "- Environment: " + ", ".join(f"{k} {packages[k]}" for k in ("python", "torch", "monai", "torchio", "snakemake") if k in packages)
        + f"; {device_text}.",
        "- Data:",
        "",
    ]  # fmt: skip
    lines += [f"  - {_source_line(src)}" for src in data_sources(path, records_dir=records_dir)] or ["  - none"]
    lines += ["", f"Full lineage and checksum verification: ``casebook audit {path}``."]
    return "\n".join(lines) + "\n"
