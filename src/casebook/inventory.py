"""``resources/inventory.json``: where every raw data set of a run came from.

One entry per configured case study, naming its data set: access (open, registration,
embedded), the source actually used (a URL, a local path read in place, or the embedded
generator and its parameters), the registry's md5, licence and citation, and the files
under ``resources/`` with their sizes. The file is the target that fetches all raw data
(``snakemake resources/inventory.json``, on a login node), and it keeps ``resources/``
non-empty, so that DVC can version that folder even when a run downloads nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from casebook.fileio import write_json

__all__ = ["inventory", "inventory_stage"]


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def inventory(datasets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The inventory of ``datasets`` (case study -> its data set's source, as the
    workflow's ``inventory_params`` gives them); every listed file must exist, else the
    error names it."""
    out: dict[str, Any] = {}
    for name, spec in sorted(datasets.items()):
        files = {}
        for file in spec.get("files", []):
            path = Path(file)
            if not path.exists():
                raise FileNotFoundError(f"{file}: raw file of data set {spec.get('dataset', name)!r} is missing")
            files[file] = {"bytes": _size(path), "kind": "file" if path.is_file() else "folder"}
        out[name] = {**{k: v for k, v in spec.items() if k != "files" and v not in (None, {}, [])}, "files": files}
    return {"casestudies": out}


def inventory_stage(datasets: dict[str, dict[str, Any]], output: str | Path) -> None:
    """The raw_data rule: write the inventory atomically."""
    write_json(output, inventory(datasets))
