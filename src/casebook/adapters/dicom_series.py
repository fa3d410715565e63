"""DICOM collections (LIDC-IDRI, CBIS-DDSM, ADNI as downloaded): every image series found
in a folder tree becomes one image, converted by :mod:`casebook.dicom`.

Identifiers stay behind: the subject is the keyed-hash pseudonym of PatientID (of the
StudyInstanceUID when PatientID is empty), the image id that of the SeriesInstanceUID,
and images are written from pixels and geometry alone. Every identifying value of the
PS3.15 basic profile seen in the headers is handed to ingest, which checks its outputs
for them. Image-level labels come from a ``patient_id,label`` table keyed by the
source's PatientID.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import pydicom

from casebook.adapters.image_folder import read_label_table
from casebook.adapters.images import AdapterError, files_digest, id_from_pattern
from casebook.deid import identifying_values, pseudonym
from casebook.dicom import DicomError, find_series, read_series
from casebook.layout import Record

__all__ = ["dicom_records"]


def _subject(raw: str, pattern: str | None) -> str:
    """The patient part of a source id (see ``patient_pattern``)."""
    subject = id_from_pattern(raw, pattern)
    if subject is None:  # the id itself is not named: it identifies the patient
        raise AdapterError(f"a PatientID does not match patient_pattern {pattern!r}")
    return subject


log = logging.getLogger(__name__)


def dicom_records(
    root: str | Path,
    *,
    key: bytes,
    name: str,
    class_names: Sequence[str],
    modalities: Sequence[str] | None = None,
    labels_csv: str | None = None,
    spatial_dims: int = 3,
    patient_pattern: str | None = None,
) -> tuple[Iterator[Record], int, dict[str, Any]]:
    """Records of every image series under ``root`` (of the given modalities, if any).

    ``patient_pattern`` is a regular expression whose first group (or whole match) is
    the patient within PatientID, for collections whose PatientID names more than the
    patient (CBIS-DDSM: ``Mass-Training_P_00001_LEFT_CC`` is patient ``P_00001``); all
    images of one patient then share one pseudonym, so no split can separate them.
    """
    root = Path(root)
    series = find_series(root)
    if modalities:
        series = [s for s in series if s.modality in set(modalities)]
    if not series:
        raise AdapterError(f"{root}: no DICOM image series found" + (f" of modality {list(modalities)}" if modalities else ""))
    table = read_label_table(labels_csv, class_names) if labels_csv else None
    identifiers: set[str] = set()

    def generate() -> Iterator[Record]:
        for item in series:
            header = pydicom.dcmread(item.files[0], stop_before_pixels=True, force=True)
            identifiers.update(identifying_values(header))
            # TCIA folders are named after the patient and the study: never in an output either
            identifiers.update(part for part in item.directory.relative_to(root).parts if any(c.isdigit() for c in part))
            subject_raw = _subject(item.patient_id or item.study_uid, patient_pattern)
            subject = pseudonym(f"{name}/{subject_raw}", key)
            series_name = pseudonym(f"{name}/{item.series_uid}", key, prefix="img")
            label = None
            if table is not None:
                if item.patient_id not in table and subject_raw not in table:
                    # name the series by its pseudonym only: folder names carry patient ids
                    raise AdapterError(f"series {series_name}: its patient has no row in {labels_csv}")
                label = table.get(item.patient_id, table.get(subject_raw))
            try:
                image, _warnings = read_series(item, label=series_name)
            except DicomError as exc:
                raise AdapterError(str(exc)) from exc
            if spatial_dims == 2 and image.GetDimension() == 3 and image.GetSize()[2] == 1:
                image = image[:, :, 0]
            yield Record(
                image_id=series_name,
                patient_id=subject,
                label=label,
                image=image,
                source_checksum=files_digest(sorted(item.files)),
                # no source path: DICOM folder names carry patient ids, so a NaN / inf voxel
                # (Float Pixel Data can hold them; rescaled integer pixels cannot) is
                # reported by write_dataset under the series' pseudonym only
            )

    info = {"channel_names": None, "labels": None, "identifiers": identifiers}
    return generate(), len(series), info
