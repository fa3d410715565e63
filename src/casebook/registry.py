"""The data set registry (config/datasets.yaml): what can be fetched, from where, and under which terms.

``load_registry`` reads and validates the registry; ``resolve`` picks one file of one
data set at one image size and returns everything a fetch rule and an adapter need.
"""

from __future__ import annotations

import copy
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

#: adapters that read real data from outside (their rules take the adapter params and the
#: de-identification key); the others are embedded generators and MedMNIST archives
REAL_DATA_ADAPTERS = ("msd", "case_folders", "image_folder", "dicom", "luna16", "fracatlas")

__all__ = ["RegistryError", "SCHEMA_PATH", "load_registry", "resolve", "validate_registry"]

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "datasets.schema.yaml"
# Cap the number of problems listed: past a handful, the first ones are what matter.
_MAX_REPORTED = 10


class RegistryError(ValueError):
    """The registry file is malformed, or a lookup in it names something unknown."""


@lru_cache(maxsize=None)
def _load_schema(path: str) -> dict[str, Any]:
    with open(path) as fh:
        return yaml.safe_load(fh)


def load_registry(path: str | os.PathLike = "config/datasets.yaml", *, schema_path: str | os.PathLike | None = None) -> dict:
    """Read and validate the registry; return ``{name: entry}`` with defaults filled in.

    In each entry, ``files`` (when present) is keyed by ``int`` image size.

    Raises:
        RegistryError: the file is missing, is not YAML, or does not match the schema;
            the message names the file, the data set and the offending key.
    """
    path = Path(path)
    try:
        with open(path) as fh:
            document = yaml.safe_load(fh)
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read the data set registry: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from exc
    schema = _load_schema(str(schema_path or SCHEMA_PATH))
    validate_registry(document, schema, source=path)
    return {name: _with_defaults(entry, schema) for name, entry in document.items()}


def validate_registry(document: Any, schema: dict[str, Any], *, source: str | os.PathLike = "<registry>") -> None:
    """Validate a parsed registry against ``schema``; raise :class:`RegistryError` listing the problems."""
    if not isinstance(document, dict):
        raise RegistryError(f"{source}: the registry must be a mapping of data set names, got {type(document).__name__}")
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    errors = sorted(validator.iter_errors(_json_shaped(document)), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [_describe(error) for error in errors[:_MAX_REPORTED]]
        if len(errors) > _MAX_REPORTED:
            lines.append(f"... and {len(errors) - _MAX_REPORTED} more")
        raise RegistryError(f"{source}: invalid data set registry:\n  " + "\n  ".join(lines))


def _json_shaped(document: dict) -> dict:
    """A copy whose mapping keys are strings, as JSON Schema expects.

    YAML reads ``28:`` as the integer 28; JSON objects only have string keys, and some
    keywords (``pattern`` on property names) silently skip non-strings.
    """
    if isinstance(document, dict):
        return {str(key): _json_shaped(value) for key, value in document.items()}
    if isinstance(document, list):
        return [_json_shaped(value) for value in document]
    return document


def _describe(error: jsonschema.ValidationError) -> str:
    """One line per problem: which data set, where in it, and what is wrong."""
    location = [str(part) for part in error.absolute_path]
    where = f"data set '{location[0]}'" if location else "top level"
    if len(location) > 1:
        where += f", at {'.'.join(location[1:])}"
    if error.validator == "not" and error.validator_value == {}:
        # `not: {}` forbids a key outright (files on an embedded data set); the schema's
        # description says why, which jsonschema's own message ("should not be valid
        # under {}") does not.
        return f"{where}: key '{location[-1]}' is not allowed: {error.schema.get('description', '')}"
    if error.validator == "anyOf":
        # jsonschema's message prints the whole entry; say which keys would satisfy it
        options = [" and ".join(f"'{key}'" for key in sub.get("required", [])) for sub in error.validator_value]
        return f"{where}: needs {' or '.join(options)} (" + "; ".join(s.get("description", "") for s in error.validator_value) + ")"
    if error.validator == "not" and isinstance(error.validator_value, dict) and "required" in error.validator_value:
        return f"{where}: {error.validator_value.get('description', 'keys are exclusive')}"
    return f"{where}: {error.message}"


def _with_defaults(entry: dict, schema: dict[str, Any]) -> dict:
    """Fill in the schema's defaults and key ``files`` by integer size."""
    entry = copy.deepcopy(entry)
    properties = schema.get("$defs", {}).get("dataset", {}).get("properties", {})
    for key, spec in properties.items():
        if isinstance(spec, dict) and "default" in spec:
            entry.setdefault(key, copy.deepcopy(spec["default"]))
    if "files" in entry:
        entry["files"] = {int(size): dict(spec) for size, spec in entry["files"].items()}
    return entry


def resolve(registry: dict, name: str, size: int | None = None) -> dict:
    """Everything needed to fetch and adapt one data set at one image size.

    Args:
        registry: as returned by :func:`load_registry`.
        name: data set name (a top-level key of the registry).
        size: image size in pixels per side; ``None`` means the entry's
            ``default_size``, or its smallest size.

    Returns:
        A new dict with ``name``, ``size``, ``url``, ``md5``, ``filename``, ``licence``,
        ``citation``, ``adapter``, ``generator``, ``spatial_dims``, ``access``, ``task``, ``homepage``,
        ``modality``, ``adapter_params``, ``obtain`` and ``description``. For embedded and
        registration-only data sets (no files) ``url``, ``md5`` and ``filename`` are ``None``;
        for those and for single-file data sets (``file``) ``size`` is passed through.

    Raises:
        RegistryError: unknown name or size; the message lists the known ones.
    """
    if name not in registry:
        known = ", ".join(sorted(registry)) or "(none)"
        raise RegistryError(f"unknown data set {name!r}; the registry knows: {known}")
    entry = registry[name]
    resolved = {
        "name": name,
        "description": entry.get("description"),
        "licence": entry.get("licence"),
        "citation": entry.get("citation"),
        "homepage": entry.get("homepage"),
        "adapter": entry.get("adapter"),
        "generator": entry.get("generator"),
        "spatial_dims": entry.get("spatial_dims"),
        "task": entry.get("task"),
        "access": entry.get("access", "open"),
        "modality": entry.get("modality"),
        "adapter_params": copy.deepcopy(entry.get("adapter_params") or {}),
        "obtain": entry.get("obtain"),
        "size": size,
        "url": None,
        "md5": None,
        "filename": None,
    }
    if entry.get("file"):
        single = entry["file"]
        resolved.update(url=single["url"], md5=single["md5"], filename=single["filename"])
        return resolved
    files = _int_keyed(entry.get("files") or {})
    if not files:
        return resolved
    size = _pick_size(name, entry, files, size)
    resolved.update(size=size, url=files[size]["url"], md5=files[size]["md5"], filename=files[size]["filename"])
    return resolved


def _int_keyed(files: dict) -> dict[int, dict]:
    # Tolerate a registry dict that did not come through load_registry (string keys).
    return {int(size): spec for size, spec in files.items()}


def _pick_size(name: str, entry: dict, files: dict[int, dict], size: int | None) -> int:
    """The requested size if the data set has it, else a :class:`RegistryError`."""
    if size is None:
        size = entry.get("default_size") or min(files)
    try:
        size = int(size)
    except (TypeError, ValueError):
        raise RegistryError(f"image size for {name!r} must be an integer, got {size!r}") from None
    if size not in files:
        known = ", ".join(str(s) for s in sorted(files))
        raise RegistryError(f"data set {name!r} has no image size {size}; known sizes: {known}")
    return size
