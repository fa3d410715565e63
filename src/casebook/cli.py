"""The ``casebook`` command: helpers around the pipeline (the pipeline itself is Snakemake).

casebook datasets [--registry config/datasets.yaml]   list the registry's data sets
casebook audit PATH [--format text|json] [--no-stale-check] [--snakemake-args ...]
    the lineage of a result back to the raw downloads; exit 1 if a checksum no longer
    matches, a file is missing, or code or config changed since a step was made
"""

from __future__ import annotations

import argparse
import json
import sys

from casebook.audit import AuditError, params_changed, problems, render_text, to_json, trace
from casebook.registry import RegistryError, load_registry


def list_datasets(registry_path: str) -> list[str]:
    """One line per registry entry: name, dimensionality, task, access, adapter, sizes, licence."""
    registry = load_registry(registry_path)
    rows = [("name", "dims", "task", "access", "adapter", "files", "licence")]
    for name, entry in sorted(registry.items()):
        if entry.get("file"):
            files = entry["file"]["filename"]
        else:
            files = ",".join(str(s) for s in sorted(entry.get("files") or {})) or "-"
        rows.append(
            (
                name,
                str(entry.get("spatial_dims", "?")),
                entry.get("task", ""),
                entry.get("access", "open"),
                entry.get("adapter", ""),
                files,
                entry.get("licence", ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="casebook", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    datasets = sub.add_parser("datasets", help="list the data sets of the registry")
    datasets.add_argument("--registry", default="config/datasets.yaml")
    audit = sub.add_parser("audit", help="trace a figure, metric or model back to its data, config and code")
    audit.add_argument("path", help="an output of the pipeline, relative to the working directory")
    audit.add_argument("--format", choices=("text", "json"), default="text")
    audit.add_argument("--no-stale-check", action="store_true", help="skip asking Snakemake whether config values changed")
    audit.add_argument("--snakemake-args", nargs=argparse.REMAINDER, default=[], help="passed to Snakemake (e.g. --configfile ...)")
    args = parser.parse_args(argv)
    try:
        if args.command == "datasets":
            print("\n".join(list_datasets(args.registry)))
        elif args.command == "audit":
            return run_audit(args.path, fmt=args.format, stale_check=not args.no_stale_check, snakemake_args=args.snakemake_args)
    except (RegistryError, AuditError, OSError) as exc:
        print(f"casebook: {exc}", file=sys.stderr)
        return 2
    return 0


def run_audit(path: str, *, fmt: str, stale_check: bool, snakemake_args: list[str]) -> int:
    """Print the lineage; 0 when every step checks out, 1 otherwise (problems on stderr)."""
    changed = params_changed(snakemake_args) if stale_check else []
    root = trace(path, changed_params=changed)
    found = problems(root)
    if fmt == "json":
        print(json.dumps(to_json(root), indent=2))
    else:
        print(render_text(root))
    for line in found:
        print(f"casebook audit: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
