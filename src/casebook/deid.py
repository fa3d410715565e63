"""De-identification: pseudonymous subject ids and the DICOM identifiers to keep out.

Real data sets carry identifiers: DICOM headers hold patient names, ids, birth dates,
accession numbers and UIDs (the attributes of the DICOM PS3.15 basic confidentiality
profile), and even public collections name their cases. Nothing of that may reach an
output of the pipeline (manifest, images, logs, figures, report, provenance). So:

* every subject id that comes from a source is replaced by a keyed hash
  (HMAC-SHA256 with a secret key kept outside the repository and outside DVC); the same
  key gives the same pseudonyms, so a rerun is reproducible and the key's holder can
  re-link a result to its subject, but no one without the key can;
* images are written from pixel data and geometry only, never with header fields;
* :func:`identifying_values` lists a DICOM file's identifying values, so that ingest can
  check its own text outputs for them (and tests can scan every output).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "BASIC_PROFILE_KEYWORDS",
    "DeidError",
    "load_or_create_key",
    "pseudonym",
    "identifying_values",
    "find_leaks",
]

# Attributes of the DICOM PS3.15 Annex E basic application level confidentiality profile
# that identify a person, a visit or an instance (the ones that occur in image files).
BASIC_PROFILE_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "AccessionNumber",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "StationName",
    "DeviceSerialNumber",
    "AdmissionID",
    "IssuerOfPatientID",
)

# Values too short or too common to search for in text without false alarms ("M", "1").
_MIN_SEARCHABLE = 4
_KEY_BYTES = 32


class DeidError(RuntimeError):
    """An identifier was found in an output, or the key file is unusable."""


def load_or_create_key(path: str | os.PathLike) -> bytes:
    """Read the pseudonymization key, creating a random one (mode 0600) on first use.

    Creation is atomic (a hard link of a complete file), so two ingest jobs starting at
    once agree on one key and neither reads a half-written one.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # write the key in full under a private name, then link it into place: os.link
        # fails if the key exists, so two jobs starting at once agree on one whole key
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(_KEY_BYTES) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another job made it first: read theirs
        finally:
            tmp.unlink()
    key = path.read_text().strip()
    if len(key) < 32:
        raise DeidError(f"{path}: pseudonymization key is too short ({len(key)} characters; want at least 32)")
    return key.encode()


def pseudonym(raw_id: str, key: bytes, *, prefix: str = "sub") -> str:
    """A stable pseudonymous id for ``raw_id``: ``<prefix>-`` and 16 hex digits of HMAC-SHA256.

    Safe as a file name. 64 bits make a collision in a data set of a million subjects
    about as likely as one in 36 million.
    """
    digest = hmac.new(key, raw_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{prefix}-{digest[:16]}"


def identifying_values(dataset: Any) -> set[str]:
    """The non-trivial values of the basic-profile attributes in a pydicom Dataset.

    Person names are also split into their components (family and given name), since a
    name can reach text as "Doe" as easily as "Doe^John".
    """
    from pydicom.multival import MultiValue

    values: set[str] = set()
    for keyword in BASIC_PROFILE_KEYWORDS:
        value = dataset.get(keyword)
        if value is None or value == "":
            continue
        items = value if isinstance(value, (list, tuple, MultiValue)) else [value]
        for item in items:
            text = str(item).strip()
            values.add(text)
            values.update(part.strip() for part in text.split("^"))
    return {v for v in values if len(v) >= _MIN_SEARCHABLE}


def find_leaks(paths: Iterable[str | os.PathLike], values: Iterable[str]) -> list[tuple[str, str]]:
    """(file, value) for every identifying value found as a whole token in a file.

    Whole tokens: a value must not be glued to letters or digits on either side, so a
    numeric accession number is not "found" inside a sha256 checksum or a hex pseudonym
    by chance. Compressed files (.nii.gz, .png) are searched as they are stored; images
    are written from pixel arrays, so this mostly guards text outputs, where leaks happen.
    """
    needles = sorted({v for v in values if len(v) >= _MIN_SEARCHABLE})
    patterns = [(v, re.compile(rb"(?<![0-9A-Za-z])" + re.escape(v.encode("utf-8")) + rb"(?![0-9A-Za-z])")) for v in needles]
    hits = []
    for path in paths:
        data = Path(path).read_bytes()
        hits += [(str(path), value) for value, pattern in patterns if pattern.search(data)]
    return hits
