"""The ``casebook`` command: helpers around the pipeline (the pipeline itself is Snakemake).

    casebook datasets [--registry config/datasets.yaml]   list the registry's data sets
"""

from __future__ import annotations

import argparse
import sys

from casebook.registry import RegistryError, load_registry


def list_datasets(registry_path: str) -> list[str]:
    """One line per registry entry: name, dimensionality, access, sizes, licence."""
    registry = load_registry(registry_path)
    lines = [f"{'name':22s} {'dims':>4s}  {'access':9s} {'sizes':16s} licence"]
    for name, entry in sorted(registry.items()):
        sizes = ",".join(str(s) for s in sorted(entry.get("files") or {})) or "-"
        lines.append(f"{name:22s} {entry.get('spatial_dims', '?')!s:>4s}  {entry.get('access', 'open'):9s} {sizes:16s} {entry.get('licence', '')}")
    return lines


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
