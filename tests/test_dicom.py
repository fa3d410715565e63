"""Tests of casebook.dicom on real DICOM files: pydicom's bundled ones and series written here.

The generated series are written in shuffled order, under random file names and with
wrong InstanceNumbers, so that only ordering by position along the slice normal can
reassemble them.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    RTStructureSetStorage,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from casebook.dicom import DicomError, DicomSeries, find_series, read_series

LABEL = "case-007"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_C30, _S30 = np.cos(np.radians(30)), np.sin(np.radians(30))
# rotated 30 degrees about the x axis: rows along x, columns tilted from y towards z
OBLIQUE = (1.0, 0.0, 0.0, 0.0, _C30, _S30)


# --------------------------------------------------------------------------- helpers


def _ds(values: Sequence[float]) -> list[DSfloat]:
    """Values for a DS attribute, formatted to DICOM's 16 characters."""
    return [DSfloat(float(v), auto_format=True) for v in values]


def _normal(orientation: Sequence[float]) -> np.ndarray:
    return np.cross(orientation[:3], orientation[3:])


def _image_dataset(
    raw: np.ndarray,
    *,
    series_uid: str,
    sop_class: str = CTImageStorage,
    patient_id: str = "PAT-001",
    study_uid: str = "1.2.3.4",
) -> Dataset:
    """A CT-like dataset with file meta and the pixels of ``raw`` (frames, rows, columns), int16."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Doe^Jane"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = raw.shape[-2:]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1  # signed
    ds.PixelData = np.ascontiguousarray(raw, dtype="<i2").tobytes()
    return ds


def _save(ds: Dataset, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or uuid.uuid4().hex)  # random names: no order to be had from them
    ds.save_as(path, enforce_file_format=True)
    return path


def _write_series(
    folder: Path,
    raw: np.ndarray,
    *,
    rng: np.random.Generator,
    origin: Sequence[float] = (-120.0, -95.5, 30.0),
    orientation: Sequence[float] = AXIAL,
    pixel_spacing: tuple[float, float] = (0.5, 0.75),
    slice_spacing: float = 2.5,
    slopes: Sequence[float] | None = None,
    intercepts: Sequence[float] | None = None,
    series_uid: str | None = None,
    patient_id: str = "PAT-001",
) -> tuple[dict[int, Path], list[np.ndarray]]:
    """Write ``raw`` (slices, rows, columns) as single-frame files, shuffled.

    Slice k lies at ``origin + k * slice_spacing * normal``. Returns the path of each
    slice index and the positions.
    """
    n = len(raw)
    series_uid = series_uid or generate_uid()
    slopes = slopes if slopes is not None else [1.0] * n
    intercepts = intercepts if intercepts is not None else [-1024.0] * n
    normal = _normal(orientation)
    positions = [np.asarray(origin) + k * slice_spacing * normal for k in range(n)]
    wrong_numbers = rng.permutation(n) + 1
    paths = {}
    for k in rng.permutation(n):
        ds = _image_dataset(raw[k], series_uid=series_uid, patient_id=patient_id)
        ds.InstanceNumber = int(wrong_numbers[k])
        ds.ImagePositionPatient = _ds(positions[k])
        ds.ImageOrientationPatient = _ds(orientation)
        ds.PixelSpacing = _ds(pixel_spacing)
        ds.SliceThickness = _ds([slice_spacing * 2])[0]  # deliberately not the slice spacing
        ds.RescaleSlope = _ds([slopes[k]])[0]
        ds.RescaleIntercept = _ds([intercepts[k]])[0]
        paths[int(k)] = _save(ds, folder)
    return paths, positions


def _raw(rng: np.random.Generator, shape: tuple[int, int, int] = (6, 5, 7)) -> np.ndarray:
    return rng.integers(-1000, 3000, size=shape).astype(np.int16)


def _only_series(folder: Path) -> DicomSeries:
    found = find_series(folder, progress=False)
    assert len(found) == 1
    return found[0]


def _direction(image: sitk.Image) -> np.ndarray:
    return np.array(image.GetDirection()).reshape(3, 3)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# --------------------------------------------------------------------------- bundled files


def test_ct_small_is_in_hounsfield_units_with_header_geometry(tmp_path: Path) -> None:
    source = get_testdata_file("CT_small.dcm")
    shutil.copy(source, tmp_path / "CT_small.dcm")
    header = pydicom.dcmread(source)

    image, warnings = read_series(_only_series(tmp_path), label=LABEL)

    expected = header.pixel_array * float(header.RescaleSlope) + float(header.RescaleIntercept)
    values = sitk.GetArrayFromImage(image)
    assert values.shape == (1, header.Rows, header.Columns)
    np.testing.assert_array_equal(values[0], expected)
    assert values.dtype == np.int16  # slope 1, intercept -1024: whole numbers
    row_spacing, column_spacing = (float(v) for v in header.PixelSpacing)
    assert image.GetSpacing() == pytest.approx((column_spacing, row_spacing, float(header.SpacingBetweenSlices)))
    assert image.GetOrigin() == pytest.approx([float(v) for v in header.ImagePositionPatient])
    iop = [float(v) for v in header.ImageOrientationPatient]
    np.testing.assert_allclose(_direction(image), np.column_stack([iop[:3], iop[3:], _normal(iop)]), atol=1e-9)
    assert image.GetMetaDataKeys() == ()
    assert warnings == []


def test_mr_small_single_slice_spacing_from_slice_thickness(tmp_path: Path) -> None:
    source = get_testdata_file("MR_small.dcm")
    shutil.copy(source, tmp_path / "MR_small.dcm")
    header = pydicom.dcmread(source)

    image, warnings = read_series(_only_series(tmp_path), label=LABEL)

    assert "SpacingBetweenSlices" not in header
    assert image.GetSize() == (header.Columns, header.Rows, 1)
    assert image.GetSpacing()[2] == pytest.approx(float(header.SliceThickness))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[0], header.pixel_array)  # no rescale in MR
    assert image.GetMetaDataKeys() == ()
    assert warnings == []


def test_bundled_multiframe_rt_dose_uses_grid_frame_offsets(tmp_path: Path) -> None:
    # rtdose.dcm is the multi-frame greyscale file pydicom ships (emri_small.dcm is not bundled)
    source = get_testdata_file("rtdose.dcm")
    if source is None:
        pytest.skip("rtdose.dcm is not bundled with this pydicom")
    shutil.copy(source, tmp_path / "rtdose.dcm")
    header = pydicom.dcmread(source)

    image, _ = read_series(_only_series(tmp_path), label=LABEL)

    offsets = [float(v) for v in header.GridFrameOffsetVector]
    assert image.GetSize() == (header.Columns, header.Rows, int(header.NumberOfFrames))
    assert image.GetSpacing()[2] == pytest.approx(offsets[1] - offsets[0])
    assert image.GetOrigin() == pytest.approx([float(v) for v in header.ImagePositionPatient])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), header.pixel_array)
    assert image.GetMetaDataKeys() == ()


# --------------------------------------------------------------------------- generated series


def test_shuffled_oblique_series_is_ordered_by_position(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = _raw(rng)
    origin = (-120.0, -95.5, 30.0)
    _, positions = _write_series(tmp_path, raw, rng=rng, origin=origin, orientation=OBLIQUE, pixel_spacing=(0.5, 0.75), slice_spacing=2.5)

    image, warnings = read_series(_only_series(tmp_path), label=LABEL)

    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), raw.astype(np.int32) - 1024)
    assert image.GetPixelID() == sitk.sitkInt16
    # PixelSpacing is [row spacing (y), column spacing (x)]; SliceThickness (5.0) is ignored
    np.testing.assert_allclose(image.GetSpacing(), (0.75, 0.5, 2.5), atol=1e-9)
    np.testing.assert_allclose(image.GetOrigin(), origin, atol=1e-9)
    expected = np.column_stack([OBLIQUE[:3], OBLIQUE[3:], _normal(OBLIQUE)])
    np.testing.assert_allclose(_direction(image), expected, atol=1e-9)
    for k, position in enumerate(positions):
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((0, 0, k)), position, atol=1e-6)
    # the first pixel of a row steps along the row cosine by the column spacing
    np.testing.assert_allclose(
        np.subtract(image.TransformIndexToPhysicalPoint((1, 0, 0)), origin), np.multiply(OBLIQUE[:3], 0.75), atol=1e-9
    )
    assert image.GetMetaDataKeys() == ()
    assert warnings == []


def test_rescale_is_applied_per_slice(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = _raw(rng, (4, 3, 3))
    slopes = [1.0, 0.5, 2.0, 1.0]
    intercepts = [-1024.0, -1000.0, 0.0, -1024.5]
    _write_series(tmp_path, raw, rng=rng, slopes=slopes, intercepts=intercepts)

    image, _ = read_series(_only_series(tmp_path), label=LABEL)

    values = sitk.GetArrayFromImage(image)
    assert values.dtype == np.float32  # fractional slope/intercept
    for k in range(len(raw)):
        np.testing.assert_array_equal(values[k], raw[k] * slopes[k] + intercepts[k])


def test_find_series_groups_two_series_and_skips_other_files(tmp_path: Path, rng: np.random.Generator) -> None:
    uid_a, uid_b = generate_uid(), generate_uid()
    paths_a, _ = _write_series(tmp_path / "PAT-A" / "study" / "s1", _raw(rng, (3, 4, 4)), rng=rng, series_uid=uid_a)
    # move one file of series A into a nested sub-folder: still one series
    moved = next(iter(paths_a.values()))
    (tmp_path / "PAT-A" / "study" / "s1" / "more").mkdir()
    moved.rename(tmp_path / "PAT-A" / "study" / "s1" / "more" / moved.name)
    _write_series(tmp_path / "PAT-B" / "s2", _raw(rng, (2, 4, 4)), rng=rng, series_uid=uid_b, patient_id="PAT-B")
    (tmp_path / "README").write_text("not DICOM\n")
    (tmp_path / "PAT-B" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    rtstruct = _image_dataset(np.zeros((1, 1), np.int16), series_uid=generate_uid(), sop_class=RTStructureSetStorage)
    for keyword in ("Rows", "Columns", "PixelData", "BitsAllocated", "BitsStored", "HighBit"):
        del rtstruct[keyword]  # a structure set holds contours, no pixels
    _save(rtstruct, tmp_path / "PAT-A" / "rt")

    found = find_series(tmp_path, progress=False)

    assert [s.series_uid for s in found] == [uid_a, uid_b]  # sorted by folder
    a, b = found
    assert len(a.files) == 3 and len(b.files) == 2
    assert a.directory == tmp_path / "PAT-A" / "study" / "s1"
    assert b.directory == tmp_path / "PAT-B" / "s2"
    assert (a.patient_id, b.patient_id, a.modality) == ("PAT-001", "PAT-B", "CT")
    assert a.study_uid == "1.2.3.4"
    assert uid_a not in repr(a) and "PAT-001" not in repr(a)  # identifiers kept out of logs
    assert find_series(tmp_path, progress=False) == found  # deterministic


def test_missing_middle_slice_is_an_error(tmp_path: Path, rng: np.random.Generator) -> None:
    paths, _ = _write_series(tmp_path, _raw(rng), rng=rng, slice_spacing=2.5)
    paths[3].unlink()

    with pytest.raises(DicomError, match=LABEL) as caught:
        read_series(_only_series(tmp_path), label=LABEL)
    message = str(caught.value)
    assert "missing slices" in message and "2.5 mm" in message and "slice 2 and slice 3" in message


def test_irregular_spacing_is_an_error(tmp_path: Path, rng: np.random.Generator) -> None:
    paths, _ = _write_series(tmp_path, _raw(rng, (5, 3, 3)), rng=rng, slice_spacing=2.0)
    ds = pydicom.dcmread(paths[2])
    ds.ImagePositionPatient = _ds([-120.0, -95.5, 30.0 + 2 * 2.0 + 0.3])  # slice 2 moved 0.3 mm
    ds.save_as(paths[2])

    with pytest.raises(DicomError, match=f"{LABEL}: irregular slice spacing"):
        read_series(_only_series(tmp_path), label=LABEL)


def test_identical_duplicate_is_kept_once_with_a_warning(
    tmp_path: Path, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    raw = _raw(rng, (4, 3, 3))
    paths, _ = _write_series(tmp_path, raw, rng=rng)
    shutil.copy(paths[1], tmp_path / "copy-of-slice-1")

    with caplog.at_level(logging.WARNING, logger="casebook.dicom"):
        image, warnings = read_series(_only_series(tmp_path), label=LABEL)

    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), raw.astype(np.int32) - 1024)
    assert len(warnings) == 1
    assert LABEL in warnings[0] and "duplicate slice" in warnings[0] and "32.500 mm" in warnings[0]
    assert warnings[0] in caplog.text


def test_duplicate_with_different_pixels_is_an_error(tmp_path: Path, rng: np.random.Generator) -> None:
    paths, _ = _write_series(tmp_path, _raw(rng, (4, 3, 3)), rng=rng)
    ds = pydicom.dcmread(paths[1])
    ds.PixelData = (ds.pixel_array + 1).astype("<i2").tobytes()
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "other-slice-1")

    with pytest.raises(DicomError, match=f"{LABEL}: duplicate slices with different pixels"):
        read_series(_only_series(tmp_path), label=LABEL)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda ds: setattr(ds, "ImageOrientationPatient", _ds(OBLIQUE)), "mixed orientations"),
        (lambda ds: setattr(ds, "PixelSpacing", _ds([0.6, 0.75])), "mixed pixel spacings"),
    ],
)
def test_mixed_geometry_is_an_error(tmp_path: Path, rng: np.random.Generator, change, problem: str) -> None:
    paths, _ = _write_series(tmp_path, _raw(rng, (3, 3, 3)), rng=rng)
    ds = pydicom.dcmread(paths[2])
    change(ds)
    ds.save_as(paths[2])

    with pytest.raises(DicomError, match=f"{LABEL}: {problem}"):
        read_series(_only_series(tmp_path), label=LABEL)


def test_mixed_in_plane_size_is_an_error(tmp_path: Path, rng: np.random.Generator) -> None:
    uid = generate_uid()
    _write_series(tmp_path, _raw(rng, (2, 3, 3)), rng=rng, series_uid=uid)
    _write_series(tmp_path, _raw(rng, (1, 4, 3)), rng=rng, series_uid=uid, origin=(-120.0, -95.5, 35.0))

    with pytest.raises(DicomError, match=f"{LABEL}: mixed in-plane sizes"):
        read_series(_only_series(tmp_path), label=LABEL)


def test_colour_series_is_refused(tmp_path: Path) -> None:
    ds = _image_dataset(np.zeros((2, 2), np.int16), series_uid=generate_uid())
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(2 * 2 * 3)
    _save(ds, tmp_path)

    with pytest.raises(DicomError, match=f"{LABEL}: colour series are not supported"):
        read_series(_only_series(tmp_path), label=LABEL)


def test_enhanced_multiframe_uses_functional_groups(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = _raw(rng, (5, 4, 3))
    origin, spacing = np.array([10.0, -20.0, 5.0]), 1.25
    normal = _normal(OBLIQUE)
    intercepts = [-1024.0, -1000.0, -900.0, -1024.0, 0.0]
    stored_order = rng.permutation(5)  # frames are stored out of spatial order
    ds = _image_dataset(raw[stored_order], series_uid=generate_uid(), sop_class=EnhancedCTImageStorage)
    ds.NumberOfFrames = 5
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = _ds(OBLIQUE)
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = _ds([0.4, 0.6])
    shared.PixelMeasuresSequence[0].SliceThickness = _ds([3.0])[0]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k in stored_order:
        group = Dataset()
        group.PlanePositionSequence = [Dataset()]
        group.PlanePositionSequence[0].ImagePositionPatient = _ds(origin + k * spacing * normal)
        group.PixelValueTransformationSequence = [Dataset()]
        transform = group.PixelValueTransformationSequence[0]
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = "1", _ds([intercepts[k]])[0], "HU"
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    _save(ds, tmp_path)

    image, warnings = read_series(_only_series(tmp_path), label=LABEL)

    expected = np.stack([raw[k] + intercepts[k] for k in range(5)])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected)
    np.testing.assert_allclose(image.GetSpacing(), (0.6, 0.4, spacing), atol=1e-9)
    np.testing.assert_allclose(image.GetOrigin(), origin, atol=1e-9)
    for k in range(5):
        position = origin + k * spacing * normal
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((0, 0, k)), position, atol=1e-6)
    assert image.GetMetaDataKeys() == ()
    assert warnings == []


def test_simple_multiframe_steps_along_the_normal_with_a_warning(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = _raw(rng, (3, 4, 4))
    ds = _image_dataset(raw, series_uid=generate_uid())
    ds.NumberOfFrames = 3
    ds.ImagePositionPatient = _ds([0.0, 0.0, -50.0])
    ds.ImageOrientationPatient = _ds(AXIAL)
    ds.PixelSpacing = _ds([0.8, 0.8])
    ds.SpacingBetweenSlices = _ds([4.0])[0]
    _save(ds, tmp_path)

    image, warnings = read_series(_only_series(tmp_path), label=LABEL)

    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), raw)
    assert image.GetSpacing() == pytest.approx((0.8, 0.8, 4.0))
    assert image.GetOrigin() == pytest.approx((0.0, 0.0, -50.0))
    assert len(warnings) == 1 and LABEL in warnings[0] and "no per-frame positions" in warnings[0]


def test_projection_image_without_geometry_gets_defaults_with_warnings(tmp_path: Path) -> None:
    ds = _image_dataset(np.arange(12, dtype=np.int16).reshape(3, 4), series_uid=generate_uid())
    ds.Modality = "MG"
    ds.ImagerPixelSpacing = _ds([0.1, 0.1])
    _save(ds, tmp_path)

    image, warnings = read_series(_only_series(tmp_path), label=LABEL)

    assert image.GetSize() == (4, 3, 1)
    assert image.GetSpacing() == pytest.approx((0.1, 0.1, 1.0))
    assert image.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert len(warnings) == 3 and all(w.startswith(f"{LABEL}: ") for w in warnings)


def test_ordering_frames_without_positions_is_an_error(tmp_path: Path, rng: np.random.Generator) -> None:
    uid = generate_uid()
    for k in range(2):
        _save(_image_dataset(_raw(rng, (1, 3, 3))[0], series_uid=uid), tmp_path)

    with pytest.raises(DicomError, match=f"{LABEL}: frames lack ImagePositionPatient"):
        read_series(_only_series(tmp_path), label=LABEL)


def test_gantry_tilt_is_stacked_along_the_normal_with_a_warning(tmp_path: Path, rng: np.random.Generator) -> None:
    paths, positions = _write_series(tmp_path, _raw(rng, (3, 3, 3)), rng=rng)
    for k, path in paths.items():  # each slice shifted 0.4 mm further along y
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = _ds(positions[k] + np.array([0.0, 0.4 * k, 0.0]))
        ds.save_as(path)

    image, warnings = read_series(_only_series(tmp_path), label=LABEL)

    assert image.GetSpacing()[2] == pytest.approx(2.5)
    assert len(warnings) == 1 and warnings[0].startswith(f"{LABEL}: ") and "gantry tilt" in warnings[0]
