"""Read DICOM image series from a folder tree into SimpleITK images with correct geometry.

pydicom reads the headers and decodes the pixel data; SimpleITK holds the result. This
module is only the glue between the two, and it exists because that glue is where
public collections (LIDC-IDRI, CBIS-DDSM, ...) go wrong:

* **Slice order comes from positions, not from file names or InstanceNumber.** Both are
  unreliable in public data (renamed files, restarted or missing numbering). Slices are
  ordered by projecting ImagePositionPatient on the slice normal (the cross product of
  the two ImageOrientationPatient cosines); the slice spacing is the median distance
  between those projections, because SliceThickness is the reconstructed slab width and
  often differs from the distance between slices. Missing, irregular and duplicated
  slices are errors (or, for an identical duplicate, a warning), never silently stacked.
* **Pixel values are modality values.** RescaleSlope/RescaleIntercept are applied per
  slice (they may differ between slices, and per frame in enhanced multi-frame files),
  so CT comes out in Hounsfield units.
* **Identifiers are never copied.** The returned image carries pixel data, spacing,
  origin and direction only, no header value in its metadata dictionary, so nothing
  identifying can reach a NIfTI written from it. :class:`DicomSeries` keeps the UIDs
  and PatientID that callers need for grouping and pseudonymization, hidden from its
  ``repr``; warnings and error messages name a series only by the caller's ``label``
  and a file only by its index, because file names are often SOPInstanceUIDs.

Geometry follows DICOM and ITK alike: patient coordinates are LPS, the direction
matrix has the row cosine, the column cosine and the slice normal as its columns.
"""

from __future__ import annotations

import logging
import os
import warnings as _py_warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from tqdm.auto import tqdm

__all__ = ["DicomError", "DicomSeries", "find_series", "read_series"]

log = logging.getLogger(__name__)

# Two frames closer than this along the slice normal are at the same position. DS
# values are rounded differently by different writers, but no slice spacing in the
# collections we ingest is anywhere near this small.
SAME_POSITION_MM = 0.01
# A step between neighbouring slices larger than this multiple of the median step
# means that slices are missing.
GAP_FACTOR = 1.5
# Header values larger than this are not loaded by find_series: it needs only small
# attributes, and a large non-DICOM file parsed with force=True can claim huge lengths.
_DEFER_BYTES = 64 * 1024
# Steps between slices may spread by at most this fraction of the median step.
SPACING_TOLERANCE = 0.01
# Cosines and pixel spacings of the frames of one series must agree this closely
# (DS rounding noise is far smaller; a real difference is far larger).
GEOMETRY_ATOL = 1e-4
# A stack whose slice positions drift sideways (gantry tilt) by more than this
# fraction of a pixel cannot be described by an orthogonal direction matrix.
TILT_PIXEL_FRACTION = 0.1


class DicomError(ValueError):
    """A DICOM series that cannot be read into a volume; the message names its label."""


@dataclass
class DicomSeries:
    """The files of one DICOM series (one SeriesInstanceUID) found under a folder tree.

    ``series_uid``, ``patient_id`` and ``study_uid`` are identifiers: they are for
    grouping and for pseudonymization by the caller, and must never be written to any
    output. They are left out of ``repr`` so that printing or logging a series does not
    leak them.
    """

    series_uid: str = field(repr=False)
    patient_id: str = field(repr=False)
    study_uid: str = field(repr=False)
    modality: str
    files: list[Path]
    directory: Path


@dataclass
class _Frame:
    """One 2D frame of a series: stored pixels plus what is needed to place and scale them."""

    raw: np.ndarray  # stored values, shape (rows, columns)
    transform: Dataset  # holds RescaleSlope/RescaleIntercept (or a Modality LUT) for this frame
    position: np.ndarray | None  # ImagePositionPatient of the first pixel, mm (LPS)
    orientation: np.ndarray | None  # the six ImageOrientationPatient cosines
    pixel_spacing: tuple[float, float]  # DICOM order: (row spacing, column spacing) = (y, x)
    nominal_spacing: float | None  # SpacingBetweenSlices, else SliceThickness; for 1-slice series
    where: str  # "file i of n[, frame j]": file names may be UIDs, so they stay out of messages


# --------------------------------------------------------------------------- finding


def find_series(root: str | os.PathLike, *, progress: bool = True) -> list[DicomSeries]:
    """Find the DICOM image series under a folder tree, grouped by SeriesInstanceUID.

    Only headers are read. Files that are not DICOM (a README, ``.DS_Store``, a
    DICOMDIR) and DICOM files without pixel data (RT structure sets, structured
    reports, presentation states) are skipped silently.

    Args:
        root: the folder to walk recursively (symbolic links to folders are not followed).
        progress: show a tqdm progress bar over the files.

    Returns:
        The series, sorted by folder and then by the name of their first file, so the
        order does not depend on the file system. Each series lists its files sorted by path.

    Raises:
        NotADirectoryError: ``root`` is not a folder.
        OSError: a file under ``root`` cannot be read.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    groups: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    skipped = 0
    for path in tqdm(_walk_files(root), desc="DICOM headers", unit="file", disable=not progress):
        header = _read_image_header(path)
        if header is None:
            skipped += 1
            continue
        groups[str(header.SeriesInstanceUID)].append((path, header))
    # a count only: paths in public collections name their cases
    log.debug("find_series: %d series, %d files skipped (not DICOM images)", len(groups), skipped)
    series = [_make_series(uid, members) for uid, members in groups.items()]
    return sorted(series, key=lambda s: (s.directory, s.files[0].name))


def _walk_files(root: Path) -> list[Path]:
    """Every regular file under ``root``, in a deterministic (sorted) order."""
    paths = []
    for folder, dirnames, filenames in os.walk(root):
        dirnames.sort()  # os.walk visits sub-folders in this list's order
        # is_file() follows symbolic links, so a dangling one is left out
        paths.extend(path for name in sorted(filenames) if (path := Path(folder) / name).is_file())
    return paths


def _read_image_header(path: Path) -> Dataset | None:
    """The header of a DICOM image file, or None for anything else.

    A DICOMDIR is skipped by name: it holds no pixels, and for a large collection it
    is a large file that is slow to parse.

    Raises:
        OSError: the file cannot be read.
    """
    if path.name.upper() == "DICOMDIR":
        return None
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, defer_size=_DEFER_BYTES)
    except InvalidDicomError:
        # No "DICM" preamble. Old collections hold raw datasets without one, so try
        # again with force=True; on a text or binary file that is not DICOM this raises
        # arbitrary exceptions and warnings, or returns junk that fails the test below.
        try:
            with _py_warnings.catch_warnings():
                _py_warnings.simplefilter("ignore")
                header = pydicom.dcmread(path, stop_before_pixels=True, force=True, defer_size=_DEFER_BYTES)
                return header if _is_image(header) else None
        except Exception:
            return None
    except OSError:
        raise  # an unreadable file is an I/O problem to report, not a file to skip
    except Exception:  # a damaged DICOM file: pydicom raises many exception types
        return None
    return header if _is_image(header) else None


def _is_image(header: Dataset) -> bool:
    """Whether a header belongs to a series of images.

    Pixel data are not read (stop_before_pixels), so Rows and Columns stand for them:
    RT structure sets, SR and presentation states have neither.
    """
    try:
        return bool(header.get("SeriesInstanceUID")) and "Rows" in header and "Columns" in header
    except Exception:  # junk parsed with force=True may fail to convert
        return False


def _make_series(uid: str, members: list[tuple[Path, Dataset]]) -> DicomSeries:
    """A DicomSeries from its files and their headers (identifiers taken from the first file)."""
    members = sorted(members, key=lambda m: m[0])
    first = members[0][1]
    files = [path for path, _ in members]
    return DicomSeries(
        series_uid=uid,
        patient_id=str(first.get("PatientID", "") or ""),
        study_uid=str(first.get("StudyInstanceUID", "") or ""),
        modality=str(first.get("Modality", "") or ""),
        files=files,
        directory=Path(os.path.commonpath([p.parent for p in files])),
    )


# --------------------------------------------------------------------------- reading


def read_series(series: DicomSeries, *, label: str) -> tuple[sitk.Image, list[str]]:
    """Read a series into a 3D SimpleITK image in modality units (HU for CT).

    Frames (one per single-frame file, or the frames of multi-frame files) are ordered
    along the slice normal by their position; the slice spacing is the median distance
    between neighbours. A series of one frame becomes an image of one slice whose
    spacing is SpacingBetweenSlices, else SliceThickness, else 1.0 (with a warning).

    The pixel type is the narrowest lossless one: int16, else int32, when every slope and
    intercept is a whole number (CT usually is: slope 1, intercept -1024); float32 when
    they make values fractional; float64 only for whole numbers beyond int32.

    The image carries pixel data, spacing, origin and direction only: no header value is
    copied into its metadata dictionary.

    Args:
        series: a series from :func:`find_series`.
        label: the caller's (pseudonymous) name for the series, used in warnings and errors.

    Returns:
        The image and the list of warnings, each naming ``label`` (they are also logged).

    Raises:
        DicomError: the series is colour, undecodable, lacks the geometry to order its
            slices, mixes orientations, in-plane sizes or pixel spacings, has missing or
            irregularly spaced slices, or duplicate slices with different pixels.
        OSError: a file cannot be read.
    """
    warnings: list[str] = []
    frames: list[_Frame] = []
    for index, path in enumerate(series.files):
        where = f"file {index + 1} of {len(series.files)}"
        ds = _read_dataset(path, where, label)
        _check_greyscale(ds, where, label, warnings)
        frames.extend(_file_frames(ds, where, label, warnings))
    if not frames:
        raise DicomError(f"{label}: the series has no image frames")
    _complete_single_frame_geometry(frames, label, warnings)
    _check_uniform(frames, label)
    row, column, normal = _axes(frames[0].orientation)
    frames, along = _order_along(frames, normal)
    frames, along = _drop_duplicates(frames, along, label, warnings)
    slice_spacing = _slice_spacing(frames, along, label, warnings)
    _check_tilt(frames, normal, label, warnings)
    image = sitk.GetImageFromArray(_stack_values(frames))  # numpy (z, y, x) -> sitk (x, y, z)
    row_spacing, column_spacing = frames[0].pixel_spacing
    image.SetSpacing((column_spacing, row_spacing, slice_spacing))
    image.SetOrigin(tuple(float(v) for v in frames[0].position))
    # SimpleITK wants the 3x3 matrix row-major; its columns are the image axes in LPS
    image.SetDirection(np.column_stack([row, column, normal]).ravel().tolist())
    return image, warnings


def _warn(warnings: list[str], message: str) -> None:
    """Record a warning once (a per-file problem repeats for every file) and log it."""
    if message not in warnings:
        warnings.append(message)
        log.warning("%s", message)


def _read_dataset(path: Path, where: str, label: str) -> Dataset:
    """The full dataset of one file (force=True: find_series may have accepted a raw dataset)."""
    try:
        return pydicom.dcmread(path, force=True)
    except OSError:
        raise  # a missing or unreadable file is an I/O problem, not a DICOM one
    except Exception as exc:  # pydicom raises many exception types on malformed data
        raise DicomError(f"{label}: {where} is not a readable DICOM file ({type(exc).__name__})") from exc


def _check_greyscale(ds: Dataset, where: str, label: str, warnings: list[str]) -> None:
    """Refuse colour images; warn that MONOCHROME1 values are kept as stored."""
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise DicomError(
            f"{label}: colour series are not supported ({where} has {samples} samples per pixel, "
            f"{ds.get('PhotometricInterpretation', 'unknown')})"
        )
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        # modality values do not depend on the photometric interpretation, but a
        # viewer or a model trained on MONOCHROME2 sees MONOCHROME1 inverted
        _warn(warnings, f"{label}: MONOCHROME1 (higher values display darker); values kept as stored")


def _decode_pixels(ds: Dataset, where: str, label: str) -> np.ndarray:
    """Stored pixel values as (frames, rows, columns), decoded by pydicom."""
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # missing data, or no decoder for a compressed transfer syntax
        raise DicomError(f"{label}: cannot decode the pixel data of {where} ({exc})") from exc
    return pixels.reshape(-1, int(ds.Rows), int(ds.Columns))


def _file_frames(ds: Dataset, where: str, label: str, warnings: list[str]) -> list[_Frame]:
    """The frames of one file, with the geometry and rescale that apply to each.

    Enhanced multi-frame files keep these in functional groups (per-frame first, then
    shared); classic files at the top level of the dataset.
    """
    pixels = _decode_pixels(ds, where, label)
    n_frames = len(pixels)
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    # the functional groups that apply to each frame, most specific first
    groups = [[g for g in (per_frame[i] if i < len(per_frame) else None, shared) if g is not None] for i in range(n_frames)]
    positions = [_group_value(g, "PlanePositionSequence", "ImagePositionPatient") for g in groups]
    if any(p is None for p in positions):
        positions = _classic_positions(ds, groups[0], n_frames, where, label, warnings)
    frames = []
    for i in range(n_frames):
        frames.append(
            _Frame(
                raw=pixels[i],
                transform=_rescale_item(ds, groups[i]),
                position=_vector(positions[i], 3),
                orientation=_orientation(ds, groups[i]),
                pixel_spacing=_pixel_spacing(ds, groups[i], label, warnings),
                nominal_spacing=_nominal_spacing(ds, groups[i]),
                where=f"{where}, frame {i + 1}" if n_frames > 1 else where,
            )
        )
    return frames


def _orientation(ds: Dataset, groups: list[Dataset]) -> np.ndarray | None:
    """A frame's ImageOrientationPatient: from its Plane Orientation macro, else the file."""
    value = _group_value(groups, "PlaneOrientationSequence", "ImageOrientationPatient")
    return _vector(ds.get("ImageOrientationPatient") if value is None else value, 6)


def _rescale_item(ds: Dataset, groups: list[Dataset]) -> Dataset:
    """A dataset holding a frame's rescale: its Pixel Value Transformation macro, else the file's.

    For a classic file only the Modality LUT module is copied out, because holding on to
    the whole dataset would keep its encoded pixel data in memory next to the decoded.
    """
    item = _group_item(groups, "PixelValueTransformationSequence")
    if item is not None:
        return item
    module = Dataset()
    for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence"):
        if keyword in ds:
            module[keyword] = ds[keyword]
    if hasattr(ds, "file_meta"):  # pydicom reads the endianness of an OW Modality LUT from it
        module.file_meta = ds.file_meta
    return module


def _first_item(ds: Dataset, keyword: str) -> Dataset | None:
    """The first item of a sequence attribute, or None."""
    items = ds.get(keyword)
    return items[0] if items else None


def _group_item(groups: list[Dataset], sequence: str) -> Dataset | None:
    """The item of a functional group macro for one frame: per-frame group first, then shared."""
    for group in groups:
        item = _first_item(group, sequence)
        if item is not None:
            return item
    return None


def _group_value(groups: list[Dataset], sequence: str, keyword: str) -> Any:
    """An attribute inside a functional group macro for one frame, or None."""
    item = _group_item(groups, sequence)
    return item.get(keyword) if item is not None else None


def _vector(value: Any, length: int) -> np.ndarray | None:
    """A multi-valued DS attribute as a float array, or None when absent or malformed."""
    if value is None:
        return None
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):  # an unparsable DS stays a string in pydicom
        return None
    return array if array.shape == (length,) else None


def _classic_positions(ds: Dataset, groups: list[Dataset], n_frames: int, where: str, label: str, warnings: list[str]) -> list[Any]:
    """Frame positions when the file has none per frame: its top-level position, stepped.

    A one-frame file simply has its ImagePositionPatient. A simple multi-frame file gives
    the first frame's position; later frames lie along the slice normal, at the offsets of
    GridFrameOffsetVector when present, else SpacingBetweenSlices/SliceThickness apart.
    """
    first = _vector(ds.get("ImagePositionPatient"), 3)
    if n_frames == 1 or first is None:
        return [first] + [None] * (n_frames - 1)
    orientation = _orientation(ds, groups)
    if orientation is None:
        return [first] + [None] * (n_frames - 1)
    normal = _axes(orientation)[2]
    offsets = _vector(ds.get("GridFrameOffsetVector"), n_frames)  # RT Dose: along the normal, from the position
    if offsets is not None:
        steps = offsets - offsets[0]
    else:
        step = _nominal_spacing(ds, groups)
        source = "its slice spacing" if step is not None else "no slice spacing either, so 1.0 mm"
        step = 1.0 if step is None else step
        _warn(
            warnings,
            f"{label}: {where} has no per-frame positions; assuming frames {step:g} mm apart along the slice normal ({source})",
        )
        steps = step * np.arange(n_frames)
    return [first + s * normal for s in steps]


def _pixel_spacing(ds: Dataset, groups: list[Dataset], label: str, warnings: list[str]) -> tuple[float, float]:
    """(row spacing, column spacing) in mm: PixelSpacing, else ImagerPixelSpacing, else 1.0."""
    value = _group_value(groups, "PixelMeasuresSequence", "PixelSpacing")
    if value is None:
        value = ds.get("PixelSpacing")
    if value is None and ds.get("ImagerPixelSpacing") is not None:
        # projection radiography (CBIS-DDSM mammograms): spacing at the detector, not the patient
        value = ds.ImagerPixelSpacing
        _warn(warnings, f"{label}: no PixelSpacing; using ImagerPixelSpacing (at the detector plane)")
    spacing = _vector(value, 2)
    if spacing is None or not (spacing > 0).all():
        _warn(warnings, f"{label}: no usable PixelSpacing; assuming 1.0 mm")
        return (1.0, 1.0)
    return (float(spacing[0]), float(spacing[1]))


def _nominal_spacing(ds: Dataset, groups: list[Dataset]) -> float | None:
    """SpacingBetweenSlices, else SliceThickness (functional groups first), or None."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _group_value(groups, "PixelMeasuresSequence", keyword)
        if value is None:
            value = ds.get(keyword)
        spacing = _vector([value], 1) if value is not None else None
        if spacing is not None and spacing[0] > 0:
            return float(spacing[0])
    return None


def _complete_single_frame_geometry(frames: list[_Frame], label: str, warnings: list[str]) -> None:
    """Give a lone frame without patient geometry (e.g. a mammogram) a default one.

    Projection images have no ImagePositionPatient/ImageOrientationPatient; one such frame
    is still an image (origin 0, identity direction). Several cannot be ordered.
    """
    if all(f.position is not None and f.orientation is not None for f in frames):
        return
    if len(frames) > 1:
        raise DicomError(f"{label}: frames lack ImagePositionPatient/ImageOrientationPatient, so they cannot be ordered")
    frame = frames[0]
    if frame.position is None:
        frame.position = np.zeros(3)
    if frame.orientation is None:
        frame.orientation = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    _warn(warnings, f"{label}: no patient position/orientation; origin 0 and identity direction assumed")


def _check_uniform(frames: list[_Frame], label: str) -> None:
    """All frames must share in-plane size, orientation and pixel spacing."""
    first = frames[0]
    for frame in frames[1:]:
        if frame.raw.shape != first.raw.shape:
            raise DicomError(
                f"{label}: mixed in-plane sizes (rows x columns): {first.raw.shape} in {first.where}, {frame.raw.shape} in {frame.where}"
            )
        if not np.allclose(frame.orientation, first.orientation, rtol=0, atol=GEOMETRY_ATOL):
            raise DicomError(f"{label}: mixed orientations: {frame.where} differs from {first.where}")
        if not np.allclose(frame.pixel_spacing, first.pixel_spacing, rtol=GEOMETRY_ATOL, atol=0):
            raise DicomError(
                f"{label}: mixed pixel spacings: {first.pixel_spacing} in {first.where}, {frame.pixel_spacing} in {frame.where}"
            )


def _axes(orientation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row cosine, column cosine and slice normal from ImageOrientationPatient.

    The cosines are normalized because DS rounding leaves them a hair off unit length,
    and distances along the normal must be in mm.
    """
    row = orientation[:3] / np.linalg.norm(orientation[:3])
    column = orientation[3:] / np.linalg.norm(orientation[3:])
    normal = np.cross(row, column)
    return row, column, normal / np.linalg.norm(normal)


def _order_along(frames: list[_Frame], normal: np.ndarray) -> tuple[list[_Frame], np.ndarray]:
    """Frames sorted by their position projected on the slice normal, and those projections."""
    along = np.array([float(f.position @ normal) for f in frames])
    order = np.argsort(along, kind="stable")
    return [frames[i] for i in order], along[order]


def _drop_duplicates(frames: list[_Frame], along: np.ndarray, label: str, warnings: list[str]) -> tuple[list[_Frame], np.ndarray]:
    """Keep one of frames at the same position if their values are identical; else raise."""
    kept, kept_along = [frames[0]], [along[0]]
    for frame, position in zip(frames[1:], along[1:]):
        if position - kept_along[-1] >= SAME_POSITION_MM:
            kept.append(frame)
            kept_along.append(position)
            continue
        previous = kept[-1]
        if not np.array_equal(_values(previous), _values(frame)):
            raise DicomError(
                f"{label}: duplicate slices with different pixels at {position:.3f} mm along the "
                f"slice normal ({previous.where} and {frame.where}); several stacks in one series?"
            )
        _warn(
            warnings,
            f"{label}: duplicate slice at {position:.3f} mm along the slice normal "
            f"({previous.where} and {frame.where}) has identical pixels; one kept",
        )
    return kept, np.asarray(kept_along)


def _slice_spacing(frames: list[_Frame], along: np.ndarray, label: str, warnings: list[str]) -> float:
    """The distance between slices: the median step between positions, checked for gaps.

    Raises:
        DicomError: a step over GAP_FACTOR times the median (missing slices), or steps
            spreading by more than SPACING_TOLERANCE of the median.
    """
    if len(along) == 1:
        return _single_slice_spacing(frames[0], label, warnings)
    steps = np.diff(along)
    spacing = float(np.median(steps))
    gaps = np.flatnonzero(steps > GAP_FACTOR * spacing)
    if gaps.size:
        k = int(gaps[0])
        raise DicomError(
            f"{label}: missing slices: expected spacing {spacing:.4g} mm, but a gap of {steps[k]:.4g} mm "
            f"between slice {k} and slice {k + 1} (at {along[k]:.3f} to {along[k + 1]:.3f} mm along the slice normal)"
        )
    if steps.max() - steps.min() > SPACING_TOLERANCE * spacing:
        k = int(np.argmax(np.abs(steps - spacing)))
        raise DicomError(
            f"{label}: irregular slice spacing: steps from {steps.min():.4g} to {steps.max():.4g} mm around an "
            f"expected {spacing:.4g} mm; worst between slice {k} and slice {k + 1} "
            f"(at {along[k]:.3f} to {along[k + 1]:.3f} mm along the slice normal)"
        )
    return spacing


def _single_slice_spacing(frame: _Frame, label: str, warnings: list[str]) -> float:
    """Slice spacing of a one-slice image: from the header, else 1.0 with a warning."""
    if frame.nominal_spacing is not None:
        return frame.nominal_spacing
    _warn(warnings, f"{label}: single slice without SpacingBetweenSlices or SliceThickness; slice spacing 1.0 mm")
    return 1.0


def _check_tilt(frames: list[_Frame], normal: np.ndarray, label: str, warnings: list[str]) -> None:
    """Warn when slice positions drift sideways (gantry tilt): the geometry is then approximate."""
    offsets = np.array([f.position for f in frames]) - frames[0].position
    sideways = offsets - np.outer(offsets @ normal, normal)
    drift = float(np.linalg.norm(sideways, axis=1).max())
    if drift > TILT_PIXEL_FRACTION * min(frames[0].pixel_spacing):
        _warn(
            warnings,
            f"{label}: slice positions drift {drift:.3f} mm sideways of the slice normal (gantry tilt?); "
            f"the volume is stacked along the normal, so its geometry is approximate",
        )


def _values(frame: _Frame) -> np.ndarray:
    """A frame's modality values (rescale or Modality LUT applied by pydicom)."""
    return apply_modality_lut(frame.raw, frame.transform)


def _stack_values(frames: list[_Frame]) -> np.ndarray:
    """The (slices, rows, columns) volume of modality values, in the narrowest lossless type."""
    volume = np.empty((len(frames), *frames[0].raw.shape), dtype=_output_dtype(frames))
    for k, frame in enumerate(frames):
        volume[k] = _values(frame)  # one frame at a time: a float64 volume would double the memory
    return volume


def _output_dtype(frames: Iterable[_Frame]) -> np.dtype:
    """int16, else int32, for whole-number values in range; float32 for fractional ones."""
    low, high, whole = np.inf, -np.inf, True
    for frame in frames:
        frame_low, frame_high = _value_range(frame)
        low, high = min(low, frame_low), max(high, frame_high)
        whole = whole and _whole_values(frame)
    if not whole:
        return np.dtype(np.float32)
    for candidate in (np.int16, np.int32):
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            return np.dtype(candidate)
    return np.dtype(np.float64)  # whole numbers beyond int32: exact up to 2**53


def _value_range(frame: _Frame) -> tuple[float, float]:
    """Min and max modality value of a frame, without rescaling the whole frame if linear."""
    if "ModalityLUTSequence" in frame.transform:  # a LUT is not monotonic: apply it
        values = _values(frame)
    else:  # a linear rescale maps the extremes to the extremes (swapped for a negative slope)
        values = apply_modality_lut(np.array([frame.raw.min(), frame.raw.max()]), frame.transform)
    return float(values.min()), float(values.max())


def _whole_values(frame: _Frame) -> bool:
    """Whether a frame's modality values are whole numbers (integer pixels, whole slope/intercept)."""
    if frame.raw.dtype.kind not in "iub":
        return False
    if "ModalityLUTSequence" in frame.transform:
        return True  # LUT entries are unsigned integers
    tx = frame.transform
    if "RescaleSlope" in tx and "RescaleIntercept" in tx:  # pydicom applies them only as a pair
        return float(tx.RescaleSlope).is_integer() and float(tx.RescaleIntercept).is_integer()
    return True
