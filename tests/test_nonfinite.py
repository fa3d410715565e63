"""Non-finite intensities (NaN, +inf, -inf) at ingest, for every adapter.

SimpleITK's NIfTI writer keeps NaN, but its reader turns NaN and inf into 0.0 without
a word: without a check, a NaN voxel of a source image would reach training as 0. By
default ingest refuses such an image, naming it (image_id and source file) and the
count; with ``dataset.non_finite: replace`` it replaces them by the image's smallest
finite value (per channel), logs a warning and records the count in dataset.json. A
mask or region of interest with non-finite voxels is refused in either mode.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import yaml
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from realformat import make_msd_task

from casebook.adapters.images import read_image
from casebook.deid import pseudonym
from casebook.ingest import ingest, ingest_stage
from casebook.layout import NonFiniteError, Record, non_finite_voxels, write_dataset

KEY = b"0123456789abcdef0123456789abcdef"
SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "casestudy.schema.yaml"


def _spoil(array: np.ndarray, values=(np.nan, np.inf)) -> np.ndarray:
    """A float32 copy of ``array`` with ``values`` planted at its first voxels."""
    out = np.array(array, dtype=np.float32)
    flat = out.reshape(-1)
    flat[: len(values)] = values
    return out


def _write(array: np.ndarray, path: Path, spacing=None) -> None:
    image = sitk.GetImageFromArray(array)
    if spacing:
        image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(read_image(path))  # keeps NaN / inf, unlike sitk.ReadImage on NIfTI


def _assert_replaced(out: Path, manifest, image_id: str, count: int, caplog) -> np.ndarray:
    """The written image is finite, dataset.json and the log report ``count`` for it."""
    row = manifest.index[manifest["image_id"] == image_id][0]
    written = _read(out / manifest["image"][row])
    assert np.isfinite(written).all()
    report = json.loads((out / "dataset.json").read_text())["non_finite"]
    assert report["policy"] == "replace" and report["voxels_replaced"] == {image_id: count}
    assert any(image_id in r.getMessage() and f"replaced {count} non-finite" in r.getMessage() for r in caplog.records)
    return written


def _no_output(out: Path) -> bool:
    return not out.exists() and not out.with_name(out.name + ".partial").exists()


# ---- the default ------------------------------------------------------------------------


def test_the_default_is_error(tmp_path: Path, make_medmnist_npz) -> None:
    assert inspect.signature(ingest).parameters["non_finite"].default == "error"
    assert inspect.signature(write_dataset).parameters["non_finite"].default == "error"
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]["dataset"]["properties"]["non_finite"]
    assert schema["default"] == "error" and schema["enum"] == ["error", "replace"] and schema["description"]
    # the ingest rule's params without the key (the default case study) refuse NaN
    path = _float_npz(make_medmnist_npz)
    params = {"adapter": "medmnist", "dataset": "tinymnist", "spatial_dims": 2, "class_names": ["a", "b"], "modality": "x"}
    with pytest.raises(NonFiniteError, match=r"image tinymnist_train_0 .*: 2 non-finite voxel"):
        ingest_stage(params, [str(path)], tmp_path / "data")
    assert _no_output(tmp_path / "data")
    ingest_stage({**params, "non_finite": "replace"}, [str(path)], tmp_path / "data")
    assert json.loads((tmp_path / "data/dataset.json").read_text())["non_finite"]["voxels_replaced"] == {"tinymnist_train_0": 2}


def test_an_unknown_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non_finite must be one of"):
        write_dataset([], tmp_path / "data", class_names=["a", "b"], modality="x", non_finite="ignore")


def test_integer_arrays_are_not_inspected() -> None:
    assert non_finite_voxels(np.full((4, 4), 255, np.uint8)) == 0
    assert non_finite_voxels(_spoil(np.zeros((4, 4, 2)), (np.nan, np.nan, -np.inf)), channels_last=True) == 2


def test_nifti_sources_keep_their_nan_and_inf(tmp_path: Path) -> None:
    """SimpleITK alone reads them as 0; read_image puts them back."""
    array = _spoil(np.ones((3, 4, 5)), (np.nan, np.inf, -np.inf))
    _write(array, tmp_path / "x.nii.gz")
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "x.nii.gz")))).all()  # the pitfall
    np.testing.assert_array_equal(_read(tmp_path / "x.nii.gz"), array)


# ---- MedMNIST npz -------------------------------------------------------------------------


def _float_npz(make_medmnist_npz, values=(np.nan, np.inf), finite=False) -> Path:
    path, arrays = make_medmnist_npz()
    arrays = {k: (v.astype(np.float32) if k.endswith("_images") else v) for k, v in arrays.items()}
    if not finite:
        arrays["train_images"][0] = _spoil(arrays["train_images"][0], values)
    np.savez_compressed(path, **arrays)
    return path


@pytest.mark.parametrize("values, count", [((np.nan,), 1), ((np.inf,), 1), ((-np.inf,), 1), ((np.nan, np.inf), 2)])
def test_medmnist_non_finite_is_refused_naming_image_file_and_count(tmp_path: Path, make_medmnist_npz, values, count) -> None:
    path = _float_npz(make_medmnist_npz, values)
    with pytest.raises(NonFiniteError, match=rf"image tinymnist_train_0 \(.*tinymnist.npz, train_images\[0\]\): {count} non-finite voxel"):
        ingest("medmnist", tmp_path / "data", class_names=["a", "b"], modality="x", path=path, spatial_dims=2, name="tinymnist")
    assert _no_output(tmp_path / "data")


def test_medmnist_replace_writes_finite_images_and_reports_the_count(tmp_path: Path, make_medmnist_npz, caplog) -> None:
    path = _float_npz(make_medmnist_npz)
    out = tmp_path / "data"
    with caplog.at_level(logging.WARNING):
        manifest = ingest(
            "medmnist", out, class_names=["a", "b"], modality="x", path=path, spatial_dims=2, name="tinymnist", non_finite="replace"
        )
    written = _assert_replaced(out, manifest, "tinymnist_train_0", 2, caplog)
    source = np.load(path)["train_images"][0]
    finite_min = source[np.isfinite(source)].min()
    assert written.reshape(-1)[0] == written.reshape(-1)[1] == finite_min  # the documented value
    np.testing.assert_array_equal(written.reshape(-1)[2:], source.reshape(-1)[2:])  # the rest untouched
    assert manifest["image_id"].tolist() == [f"tinymnist_{s}_{i}" for s, n in (("train", 5), ("val", 3), ("test", 4)) for i in range(n)]


def test_finite_data_is_written_the_same_whatever_the_policy(tmp_path: Path, make_medmnist_npz) -> None:
    path = _float_npz(make_medmnist_npz, finite=True)
    kw = {"class_names": ["a", "b"], "modality": "x", "path": path, "spatial_dims": 2, "name": "tinymnist"}
    ingest("medmnist", tmp_path / "error", **kw)
    ingest("medmnist", tmp_path / "replace", non_finite="replace", **kw)
    for file in sorted((tmp_path / "error").rglob("*.*")):
        assert file.read_bytes() == (tmp_path / "replace" / file.relative_to(tmp_path / "error")).read_bytes(), file
    assert "non_finite" not in json.loads((tmp_path / "error/dataset.json").read_text())


# ---- embedded synthetic generators ----------------------------------------------------------


def _spoiled_generator(what: str):
    from casebook.synthetic import generate_cxr

    def generate(**params):
        for i, rec in enumerate(generate_cxr(n_patients=2, images_per_patient=(1, 1), size=16, **params)):
            if i == 0:
                if what == "image":
                    rec.image = _spoil(rec.image)
                else:
                    rec.mask = _spoil(rec.mask, (np.nan,))
            yield rec

    return generate


def test_synthetic_non_finite_is_refused_and_replaced(tmp_path: Path, monkeypatch, caplog) -> None:
    from casebook import synthetic

    monkeypatch.setitem(synthetic.GENERATORS, "cxr_spoiled", _spoiled_generator("image"))
    kw = {"class_names": ["normal", "pneumonia"], "modality": "CXR", "generator": "cxr_spoiled", "params": {}}
    first = next(synthetic.generate_cxr(n_patients=2, images_per_patient=(1, 1), size=16)).image_id
    with pytest.raises(NonFiniteError, match=rf"image {first}: 2 non-finite voxel"):
        ingest("synthetic", tmp_path / "data", **kw)
    assert _no_output(tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        manifest = ingest("synthetic", tmp_path / "data", non_finite="replace", **kw)
    _assert_replaced(tmp_path / "data", manifest, first, 2, caplog)


def test_synthetic_mask_with_nan_is_refused_even_when_replacing(tmp_path: Path, monkeypatch) -> None:
    from casebook import synthetic

    monkeypatch.setitem(synthetic.GENERATORS, "cxr_spoiled_mask", _spoiled_generator("mask"))
    with pytest.raises(NonFiniteError, match=r"image cxr_\w+: its mask has 1 non-finite voxel"):
        ingest(
            "synthetic",
            tmp_path / "data",
            class_names=["n", "p"],
            modality="CXR",
            generator="cxr_spoiled_mask",
            params={},
            non_finite="replace",
        )
    assert _no_output(tmp_path / "data")


# ---- image folder (NIfTI, MetaImage) ----------------------------------------------------------


@pytest.mark.parametrize("suffix", ["nii.gz", "mha"])
def test_image_folder_non_finite_is_refused_and_replaced(tmp_path: Path, suffix: str, caplog) -> None:
    # PNG cannot hold NaN; this adapter reads NIfTI / MetaImage / NRRD, which can
    rng = np.random.default_rng(0)
    _write(_spoil(rng.normal(size=(4, 5, 6))), tmp_path / f"src/case1.{suffix}")
    _write(rng.normal(size=(4, 5, 6)).astype(np.float32), tmp_path / f"src/case2.{suffix}")
    image_id = pseudonym(f"x/case1.{suffix}", KEY, prefix="img")
    kw = {"class_names": ["a", "b"], "modality": "MRI", "root": tmp_path / "src", "key": KEY, "name": "x", "pattern": f"*.{suffix}"}
    with pytest.raises(NonFiniteError, match=rf"image {image_id} \(.*case1.{suffix}\): 2 non-finite voxel"):
        ingest("image_folder", tmp_path / "data", **kw)
    assert _no_output(tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        manifest = ingest("image_folder", tmp_path / "data", non_finite="replace", **kw)
    _assert_replaced(tmp_path / "data", manifest, image_id, 2, caplog)


def test_image_folder_label_with_nan_is_refused(tmp_path: Path) -> None:
    _write(np.ones((4, 5, 6), np.float32), tmp_path / "src/case1.nii.gz")
    _write(_spoil(np.zeros((4, 5, 6)), (np.nan,)), tmp_path / "src/labels/case1.nii.gz")
    image_id = pseudonym("x/case1.nii.gz", KEY, prefix="img")
    with pytest.raises(NonFiniteError, match=rf"image {image_id} \(.*labels/case1.nii.gz\): its label has 1 non-finite voxel"):
        ingest(
            "image_folder",
            tmp_path / "data",
            class_names=["bg", "fg"],
            modality="MRI",
            root=tmp_path / "src",
            key=KEY,
            name="x",
            labels_dir="labels",
            non_finite="replace",
        )


# ---- DICOM series ---------------------------------------------------------------------------


def _float_dicom_series(folder: Path, values=(np.nan, np.inf)) -> str:
    """A three-slice series in Float Pixel Data (7FE0,0008), as parametric maps store it.

    Integer pixel data cannot be non-finite, and neither can it become so through
    RescaleSlope / RescaleIntercept (DS values are finite numbers): float pixel data is
    the one way a DICOM series brings NaN or inf.
    """
    folder.mkdir(parents=True)
    series_uid = generate_uid()
    for k in range(3):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.Modality, ds.PatientID = series_uid, generate_uid(), "MR", "PAT-1"
        ds.Rows = ds.Columns = 4
        ds.PixelSpacing, ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 1], [1, 0, 0, 0, 1, 0], [0, 0, 2.0 * k]
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated = 1, "MONOCHROME2", 32
        pixels = np.full((4, 4), 1.5 + k, np.float32)
        ds.FloatPixelData = (_spoil(pixels, values) if k == 1 else pixels).tobytes()
        pydicom.dcmwrite(folder / f"{k}.dcm", ds, enforce_file_format=True)
    return series_uid


def test_dicom_float_pixel_data_non_finite_is_refused_and_replaced(tmp_path: Path, caplog) -> None:
    series_uid = _float_dicom_series(tmp_path / "src/PAT-1/series")
    image_id = pseudonym(f"d/{series_uid}", KEY, prefix="img")
    kw = {"class_names": ["a", "b"], "modality": "MR", "root": tmp_path / "src", "key": KEY, "name": "d"}
    with pytest.raises(NonFiniteError, match=rf"image {image_id}: 2 non-finite voxel") as error:
        ingest("dicom", tmp_path / "data", **kw)
    assert "PAT-1" not in str(error.value)  # the series is named by its pseudonym only
    assert _no_output(tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        manifest = ingest("dicom", tmp_path / "data", non_finite="replace", **kw)
    written = _assert_replaced(tmp_path / "data", manifest, image_id, 2, caplog)
    assert written.min() == 1.5  # the series' smallest finite value


# ---- case folders (BraTS) ---------------------------------------------------------------------

CASE_PARAMS = {
    "channels": {"FLAIR": "{case}_flair.nii.gz", "T1c": "{case}_t1ce.nii.gz"},
    "label": "{case}_seg.nii.gz",
    "mask": "{case}_brain.nii.gz",
    "labels": {0: "background", 1: "necrosis", 2: "edema", 4: "enhancing"},
}


def _case(root: Path, case: str, *, spoil: str | None = None) -> None:
    rng = np.random.default_rng(0)
    folder = root / case
    flair = rng.normal(size=(4, 6, 6)).astype(np.float32)
    label = np.zeros((4, 6, 6), np.float32)  # a float label file, as some tools write them
    brain = np.ones((4, 6, 6), np.float32)
    t1ce = rng.normal(10, 1, size=(4, 6, 6)).astype(np.float32)  # above every FLAIR value
    _write(flair, folder / f"{case}_flair.nii.gz")
    _write(_spoil(t1ce) if spoil == "image" else t1ce, folder / f"{case}_t1ce.nii.gz")
    _write(_spoil(label, (np.nan,)) if spoil == "label" else label, folder / f"{case}_seg.nii.gz")
    _write(_spoil(brain, (np.nan,)) if spoil == "brain" else brain, folder / f"{case}_brain.nii.gz")


def test_case_folders_non_finite_is_refused_and_replaced_per_channel(tmp_path: Path, caplog) -> None:
    _case(tmp_path / "src", "Pat_A", spoil="image")
    _case(tmp_path / "src", "Pat_B")
    image_id = pseudonym("b/Pat_A", KEY, prefix="img")
    kw = {"class_names": ["bg", "n", "e", "x", "et"], "modality": "MRI", "root": tmp_path / "src", "key": KEY, "name": "b", **CASE_PARAMS}
    with pytest.raises(NonFiniteError, match=rf"image {image_id} \(.*Pat_A\): 2 non-finite voxel"):
        ingest("case_folders", tmp_path / "data", **kw)
    assert _no_output(tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        manifest = ingest("case_folders", tmp_path / "data", non_finite="replace", **kw)
    written = _assert_replaced(tmp_path / "data", manifest, image_id, 2, caplog)  # (z, y, x, channel)
    t1ce = _read(tmp_path / "src/Pat_A/Pat_A_t1ce.nii.gz")
    # replaced by the smallest finite value of its own channel, not of the whole image
    assert written[0, 0, 0, 1] == written[0, 0, 1, 1] == t1ce[np.isfinite(t1ce)].min() > written[..., 0].max()
    np.testing.assert_array_equal(written[..., 0], _read(tmp_path / "src/Pat_A/Pat_A_flair.nii.gz"))  # other channel intact


@pytest.mark.parametrize(
    "spoil, what, file", [("label", "label", "Pat_A_seg.nii.gz"), ("brain", "region of interest", "Pat_A_brain.nii.gz")]
)
def test_case_folders_masks_with_nan_are_refused(tmp_path: Path, spoil: str, what: str, file: str) -> None:
    _case(tmp_path / "src", "Pat_A", spoil=spoil)
    image_id = pseudonym("b/Pat_A", KEY, prefix="img")
    with pytest.raises(NonFiniteError, match=rf"image {image_id} \(.*{file}\): its {what} has 1 non-finite voxel"):
        ingest(
            "case_folders",
            tmp_path / "data",
            class_names=["bg", "n", "e", "x", "et"],
            modality="MRI",
            root=tmp_path / "src",
            key=KEY,
            name="b",
            non_finite="replace",
            **CASE_PARAMS,
        )
    assert _no_output(tmp_path / "data")


# ---- Medical Segmentation Decathlon ---------------------------------------------------------------


def _spoil_nifti(path: Path, values=(np.nan, np.inf)) -> None:
    image = sitk.ReadImage(str(path))
    spoiled = sitk.GetImageFromArray(_spoil(sitk.GetArrayFromImage(image), values), isVector=False)
    spoiled.CopyInformation(image)
    sitk.WriteImage(spoiled, str(path))


def test_msd_non_finite_is_refused_and_replaced(tmp_path: Path, caplog) -> None:
    task = make_msd_task(tmp_path / "src", n_cases=2)
    _spoil_nifti(task / "imagesTr/toy_000.nii.gz")  # a 4D (x, y, z, channel) NIfTI: channel 0
    image_id = pseudonym("toy/toy_000", KEY)
    kw = {"class_names": ["background", "rim", "core"], "modality": "MRI", "root": task, "key": KEY, "name": "toy"}
    with pytest.raises(NonFiniteError, match=rf"image {image_id} \(.*imagesTr/toy_000.nii.gz\): 2 non-finite voxel"):
        ingest("msd", tmp_path / "data", **kw)
    assert _no_output(tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        manifest = ingest("msd", tmp_path / "data", non_finite="replace", **kw)
    written = _assert_replaced(tmp_path / "data", manifest, image_id, 2, caplog)  # (z, y, x, channel)
    channel = _read(task / "imagesTr/toy_000.nii.gz")[0]  # (channel, z, y, x) in the 4D source
    assert written[0, 0, 0, 0] == written[0, 0, 1, 0] == channel[np.isfinite(channel)].min()
    np.testing.assert_array_equal(written[..., 0].reshape(-1)[2:], channel.reshape(-1)[2:])


def test_msd_label_with_nan_is_refused_before_the_label_value_check(tmp_path: Path) -> None:
    task = make_msd_task(tmp_path / "src", n_cases=1)
    label = sitk.ReadImage(str(task / "labelsTr/toy_000.nii.gz"))
    spoiled = sitk.GetImageFromArray(_spoil(sitk.GetArrayFromImage(label), (np.nan,)))
    spoiled.CopyInformation(label)
    sitk.WriteImage(spoiled, str(task / "labelsTr/toy_000.nii.gz"))
    image_id = pseudonym("toy/toy_000", KEY)
    with pytest.raises(NonFiniteError, match=rf"image {image_id} \(.*labelsTr/toy_000.nii.gz\): its label has 1 non-finite voxel"):
        ingest("msd", tmp_path / "data", class_names=["b", "r", "c"], modality="MRI", root=task, key=KEY, name="toy", non_finite="replace")


def test_a_record_mask_array_with_inf_is_refused(tmp_path: Path) -> None:
    image = np.ones((4, 4), np.float32)
    rec = Record("img1", "p1", 0, image, spacing=(1.0, 1.0), mask=_spoil(np.zeros((4, 4)), (np.inf,)), source="somewhere.npz")
    with pytest.raises(NonFiniteError, match=r"image img1 \(somewhere.npz\): its mask has 1 non-finite voxel"):
        write_dataset([rec], tmp_path / "data", class_names=["a", "b"], modality="x")
