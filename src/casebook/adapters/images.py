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
    """Read an image (NIfTI, MetaImage, NRRD, ...) without its header metadata.

    NaN and infinite voxels are kept as they are in the file (for NIfTI, where SimpleITK
    would read them as 0, see :func:`_restore_non_finite`): ingest refuses or replaces them.
    """
    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"{path}: file not found")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise AdapterError(f"{path}: cannot read image ({str(exc).strip().splitlines()[-1]})") from exc
    return _restore_non_finite(without_metadata(image), path)


def _restore_non_finite(image: sitk.Image, path: Path) -> sitk.Image:
    """``image`` with the NaN and infinite voxels of its NIfTI file put back.

    SimpleITK 2.5's NIfTI reader turns NaN, +inf and -inf into 0.0 without a word, so
    they would pass ingest's check unseen; nibabel reads the stored values as they are.
    Only a NIfTI file of a floating-point data type is read a second time.
    """
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return image
    import zlib

    import nibabel
    from nibabel.filebasedimages import ImageFileError

    try:
        nifti = nibabel.load(str(path))
        if nifti.get_data_dtype().kind != "f":
            return image  # integer voxels cannot be non-finite
        data = np.asanyarray(nifti.dataobj)
    except (ImageFileError, OSError, ValueError, EOFError, zlib.error):  # SimpleITK read it; nibabel adds nothing
        return image
    if data.size == 0 or (np.isfinite(data.min()) and np.isfinite(data.max())):
        return image
    data = data.T  # nibabel (x, y, z[, c]) -> SimpleITK array order (z, y, x) / (c, z, y, x)
    values = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1 and data.ndim == values.ndim + 1 and data.shape[1] == 1:
        data = np.moveaxis(data[:, 0], 0, -1)  # a vector NIfTI (x, y, z, 1, c) -> (z, y, x, c)
    bad = ~np.isfinite(data)
    if values.shape != data.shape:
        raise AdapterError(
            f"{path}: {int(np.count_nonzero(bad))} non-finite voxel(s) (NaN or inf), which SimpleITK reads as 0; "
            f"replace them in the source file"
        )
    values[bad] = data[bad]
    restored = sitk.GetImageFromArray(values, isVector=image.GetNumberOfComponentsPerPixel() > 1)
    restored.CopyInformation(image)
    return restored


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
            f"case {case}: {what} has {prop} {_fmt(b)}, but its {against} has {_fmt(a)}; image and label must share one grid"
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
