"""Reading source images safely: errors that name the file, multi-channel images as
vector images, and geometry checks that name the case."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk

from casebook.layout import geometry_mismatches, without_metadata

__all__ = ["AdapterError", "read_image", "as_vector", "stack_channels", "check_geometry", "files_digest", "check_labels", "id_from_pattern"]


class AdapterError(ValueError):
    """A source that cannot be ingested; the message names the case or file."""


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read an image (NIfTI, MetaImage, NRRD, ...) without its header metadata."""
    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"{path}: file not found")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise AdapterError(f"{path}: cannot read image ({str(exc).strip().splitlines()[-1]})") from exc
    return without_metadata(image)


def as_vector(image: sitk.Image) -> sitk.Image:
    """A 4D image (x, y, z, channel), as the Decathlon stores multi-sequence MRI, becomes
    a 3D vector image: channels travel with every voxel through resampling."""
    if image.GetDimension() != 4:
        return image
    channels = [image[:, :, :, c] for c in range(image.GetSize()[3])]
    return stack_channels(channels, names=[str(c) for c in range(len(channels))], case="4D image")


def stack_channels(images: Sequence[sitk.Image], *, names: Sequence[str], case: str) -> sitk.Image:
    """Compose co-registered single-channel images into one vector image."""
    if len(images) == 1:
        return images[0]
    for name, image in zip(names[1:], images[1:]):
        check_geometry(images[0], image, case=case, what=f"channel {name}", against=f"channel {names[0]}")
    # Compose needs one pixel type; float32 holds every MRI / CT value exactly enough
    return sitk.Compose([sitk.Cast(image, sitk.sitkFloat32) for image in images])


def check_geometry(reference: sitk.Image, other: sitk.Image, *, case: str, what: str, against: str = "image") -> None:
    """Refuse ``other`` unless its grid (size, spacing, origin, direction) is the reference's."""
    for prop, a, b in geometry_mismatches(reference, other)[:1]:
        raise AdapterError(
            f"case {case}: {what} has {prop} {_fmt(b)}, but its {against} has {_fmt(a)}; "
            f"image and label must share one grid"
        )


def check_labels(label: sitk.Image, allowed: Iterable[int], *, case: str) -> None:
    """Refuse voxel label values that the data set does not declare."""
    values = set(np.unique(sitk.GetArrayViewFromImage(label)).tolist())
    unknown = sorted(values - set(int(v) for v in allowed))
    if unknown:
        raise AdapterError(f"case {case}: label values {unknown} are not declared (declared: {sorted(allowed)})")


def id_from_pattern(raw: str, pattern: str | None) -> str | None:
    """The part of a source id that names the patient: the first group (or the whole
    match) of ``pattern``; ``raw`` itself without a pattern; None when it does not match."""
    if not pattern:
        return raw
    match = re.search(pattern, raw)
    if match is None:
        return None
    return match.group(1) if match.groups() else match.group(0)


def files_digest(paths: Iterable[str | os.PathLike]) -> str:
    """One sha256 over the bytes of a case's source files, in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
