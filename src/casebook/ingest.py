"""Dataset adapters: turn a source (a MedMNIST npz, an embedded generator, a Decathlon
task, case folders, image files, DICOM series) into the canonical layout of
:mod:`casebook.layout`.

An adapter is a function returning ``(records, total)`` or ``(records, total, info)``
(see :mod:`casebook.adapters`); :func:`ingest` writes them. Adding a dataset in a new
format means adding one adapter to ``ADAPTERS``. Adapters of real data take the
pseudonymization key and never let a source identifier through; :func:`ingest` checks
its own text outputs for the identifiers an adapter saw, and refuses to finish if one
got through.
"""

from __future__ import annotations

import inspect
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from casebook.adapters.case_folders import case_folder_records
from casebook.adapters.dicom_series import dicom_records
from casebook.adapters.fracatlas import fracatlas_records
from casebook.adapters.image_folder import image_folder_records
from casebook.adapters.luna16 import luna16_records
from casebook.adapters.msd import msd_records
from casebook.deid import DeidError, find_leaks, load_or_create_key
from casebook.fileio import file_digest
from casebook.layout import Record, write_dataset
from casebook.registry import REAL_DATA_ADAPTERS

MEDMNIST_SPLITS = ("train", "val", "test")


class IngestError(ValueError):
    """A source file that cannot be ingested (corrupt, or not in the expected format)."""


def load_medmnist(path: str | Path) -> dict[str, np.ndarray]:
    """Load a MedMNIST npz fully into memory, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise IngestError(f"{path}: not a MedMNIST npz file (it holds a single array)")
        with loaded as npz:
            arrays = {key: npz[key] for key in npz.files}
    # a damaged compressed member surfaces as zlib.error or NotImplementedError, not BadZipFile
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, OSError, ValueError, EOFError) as exc:
        raise IngestError(f"{path}: not a readable MedMNIST npz file ({type(exc).__name__}: {exc})") from exc
    for split in MEDMNIST_SPLITS:
        for kind in ("images", "labels"):
            key = f"{split}_{kind}"
            if key not in arrays:
                raise IngestError(f"{path}: missing array {key!r} (found {sorted(arrays)})")
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise IngestError(f"{path}: {split}_images and {split}_labels differ in length")
    return arrays


def medmnist_records(path: str | Path, *, spatial_dims: int, name: str) -> tuple[Iterator[Record], int]:
    """Records of a MedMNIST v2 npz (2D or 3D, any published size).

    MedMNIST publishes no patient identifiers, so every image is its own "patient";
    the source's train/val/test split is kept in ``source_split`` and used by the
    split stage, which is how the MedMNIST benchmarks are defined.
    """
    arrays = load_medmnist(path)
    checksum = file_digest(path, "md5")
    total = sum(len(arrays[f"{s}_labels"]) for s in MEDMNIST_SPLITS)

    def generate() -> Iterator[Record]:
        for split in MEDMNIST_SPLITS:
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if labels.ndim == 2 and labels.shape[1] != 1:
                raise IngestError(f"{path}: multi-label data sets are not supported yet")
            width = len(str(len(images)))
            for i, (image, label) in enumerate(zip(images, labels.reshape(-1))):
                image_id = f"{name}_{split}_{i:0{width}d}"
                yield Record(
                    image_id=image_id,
                    patient_id=image_id,
                    label=int(label),
                    image=image,
                    spacing=(1.0,) * spatial_dims,
                    source_split=split,
                    source_checksum=f"md5:{checksum}",
                    source=f"{path}, {split}_images[{i}]",
                )

    return generate(), total


def synthetic_records(generator: str, params: dict[str, Any]) -> tuple[Iterator[Record], int | None, dict]:
    """Records of one of the embedded, seeded generators (the default run's data), and
    the channel and voxel label names of a segmentation generator."""
    from casebook.synthetic import GENERATORS, info

    if generator not in GENERATORS:
        raise IngestError(f"unknown synthetic generator {generator!r}; known: {sorted(GENERATORS)}")
    return GENERATORS[generator](**params), None, info(generator, params)


ADAPTERS: dict[str, Callable[..., tuple]] = {
    "medmnist": medmnist_records,
    "synthetic": synthetic_records,
    "msd": msd_records,
    "case_folders": case_folder_records,
    "image_folder": image_folder_records,
    "dicom": dicom_records,
    "luna16": luna16_records,
    "fracatlas": fracatlas_records,
}
# adapters of real data: they take the pseudonymization key and the source's location


def ingest(
    adapter: str,
    out_dir: str | Path,
    *,
    class_names: list[str],
    modality: str,
    source: dict | None = None,
    non_finite: str = "error",
    **kwargs: Any,
):
    """Run one adapter and write its records in the canonical layout; return the manifest.

    ``non_finite`` is the case study's ``dataset.non_finite``: ``error`` (the default)
    refuses an image with NaN or infinite voxels, naming it and the count; ``replace``
    replaces them by the image's smallest finite value and reports them (see
    :func:`casebook.layout.write_dataset`). Every adapter's records go through this check.
    """
    if adapter not in ADAPTERS:
        raise IngestError(f"unknown dataset adapter {adapter!r}; known: {sorted(ADAPTERS)}")
    function = ADAPTERS[adapter]
    if "class_names" in inspect.signature(function).parameters:  # adapters that map label names
        kwargs["class_names"] = class_names
    records, total, *rest = function(**kwargs)
    info = rest[0] if rest else {}
    manifest = write_dataset(
        records,
        out_dir,
        class_names=class_names,
        modality=modality,
        total=total,
        channel_names=info.get("channel_names"),
        labels=info.get("labels"),
        source=source,
        non_finite=non_finite,
    )
    _refuse_leaks(Path(out_dir), info.get("identifiers") or set())
    return manifest


def _refuse_leaks(out_dir: Path, identifiers: set[str]) -> None:
    """Delete the data set and fail if a source identifier reached one of its text files."""
    if not identifiers:
        return
    texts = [out_dir / name for name in ("manifest.tsv", "dataset.json", "boxes.tsv") if (out_dir / name).is_file()]
    leaks = find_leaks(texts, identifiers)
    if leaks:
        shutil.rmtree(out_dir)
        files = sorted({path for path, _ in leaks})
        # the message names the files, never the identifying values themselves
        raise DeidError(f"{len(leaks)} source identifier(s) found in {', '.join(files)}; the data set was deleted")


def ingest_stage(params: dict[str, Any], inputs: list[str], out_dir: str | Path):
    """The ingest rule: pick the adapter's arguments from the rule's params and inputs."""
    adapter = params["adapter"]
    if adapter == "medmnist":
        kwargs: dict[str, Any] = {"path": inputs[0], "spatial_dims": params["spatial_dims"], "name": params["dataset"]}
    elif adapter == "synthetic":
        kwargs = {"generator": params["generator"], "params": params["params"]}
    elif adapter in REAL_DATA_ADAPTERS:
        kwargs = {"root": inputs[0], "key": load_or_create_key(params["key_file"]), "name": params["dataset"]}
        kwargs.update(params.get("adapter_params") or {})
        if adapter == "dicom":
            kwargs["spatial_dims"] = params["spatial_dims"]
    else:
        raise IngestError(f"unknown dataset adapter {adapter!r}; known: {sorted(ADAPTERS)}")
    manifest = ingest(
        adapter,
        out_dir,
        class_names=params["class_names"],
        modality=params["modality"],
        source={"dataset": params["dataset"]},
        non_finite=params.get("non_finite") or "error",
        **kwargs,
    )
    if params.get("require_labels") and manifest["label"].eq("").any():
        shutil.rmtree(out_dir)
        raise IngestError(
            f"data set {params['dataset']}: {int(manifest['label'].eq('').sum())} image(s) have no class label, but the "
            f"case study is a classification; give a patient_id,label table as dataset.adapter_params.labels_csv"
        )
    return manifest
