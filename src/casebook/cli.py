"""The ``casebook`` command: helpers around the pipeline (the pipeline itself is Snakemake).

    casebook datasets [--registry config/datasets.yaml]   list the registry's data sets
"""

from __future__ import annotations

import argparse
import sys

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
            (name, str(entry.get("spatial_dims", "?")), entry.get("task", ""), entry.get("access", "open"),
             entry.get("adapter", ""), files, entry.get("licence", ""))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="casebook", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    datasets = sub.add_parser("datasets", help="list the data sets of the registry")
    datasets.add_argument("--registry", default="config/datasets.yaml")
    args = parser.parse_args(argv)
    try:
        if args.command == "datasets":
            print("\n".join(list_datasets(args.registry)))
    except (RegistryError, OSError) as exc:
        print(f"casebook: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
