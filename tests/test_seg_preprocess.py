"""Per-case segmentation preprocessing and its inverse (casebook.tasks.segmentation.preprocess),
the patch-size plan (casebook.tasks.segmentation.plan) and the writing of predictions.

Everything runs on volumes of a few thousand voxels: the module takes a few seconds.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from casebook.fileio import read_json
from casebook.fingerprint import fingerprint_stage
from casebook.layout import read_manifest, write_dataset
from casebook.synthetic import CLASS_NAMES, GENERATORS, abdomen_ct, brain_mri
from casebook.tasks.segmentation.evaluate import PredictionGeometryError, write_prediction
from casebook.tasks.segmentation.plan import model_patch_size, patch_size
from casebook.tasks.segmentation.preprocess import (
    crop,
    foreground_box,
    label_lut,
    label_values_of,
    normalize,
    pad_to,
    preprocess_case,
    preprocess_stage,
    reorient,
    to_classes,
    to_original,
)

BRATS_VALUES = [0, 1, 2, 4]
ZSCORE = {"scheme": "zscore", "use_roi": False}
ZSCORE_ROI = {"scheme": "zscore", "use_roi": True}
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
TINY_BRAIN = {"n_patients": 4, "size": (32, 32, 24), "spacing": (6.0, 6.0, 7.0), "seed": 3}


# ----------------------------------------------------------------------------- helpers


def _one_hot(classes: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, z, y, x) float32 one-hot "probabilities" of a class-index map."""
    return np.moveaxis(np.eye(n_classes, dtype=np.float32)[classes], -1, 0)


def _image(array: np.ndarray, spacing, origin, direction) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def _through_nifti(image: sitk.Image, path: Path) -> sitk.Image:
    sitk.WriteImage(image, str(path), True)
    return sitk.ReadImage(str(path))


def _geometry(image: sitk.Image) -> tuple:
    return (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _box_slices(crop_box: dict) -> tuple[slice, ...]:
    """(z, y, x) slices of a crop given as SimpleITK (x, y, z) index and size."""
    return tuple(slice(i, i + s) for i, s in zip(crop_box["index"][::-1], crop_box["size"][::-1]))


def _write_brain(out: Path, **params) -> Path:
    records = GENERATORS["brain_mri"](**params)
    write_dataset(
        records,
        out,
        class_names=CLASS_NAMES["brain_mri"],
        modality="MRI",
        channel_names=brain_mri.CHANNEL_NAMES,
        labels=brain_mri.LABEL_NAMES,
    )
    return out


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def brain_dataset(tmp_path_factory) -> dict[str, Path]:
    """4 synthetic brain MRI subjects (32 x 32 x 24 at 6 x 6 x 7 mm), their fingerprint plan."""
    root = tmp_path_factory.mktemp("brain")
    data = _write_brain(root / "data", **TINY_BRAIN)
    fingerprint_stage(data, root / "fingerprint.json", root / "plan.json")
    return {"data": data, "plan": root / "plan.json"}


@pytest.fixture(scope="module")
def brain_preprocessed(brain_dataset, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("brain_pre")
    seg_plan = preprocess_stage(
        brain_dataset["data"],
        brain_dataset["plan"],
        {"spacing": "auto"},
        class_names=CLASS_NAMES["brain_mri"],
        cases_out=out / "cases",
        plan_out=out / "seg_plan.json",
    )
    return {"cases": out / "cases", "plan_path": out / "seg_plan.json", "seg_plan": seg_plan}


def _copy_dataset(brain_dataset, tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    shutil.copytree(brain_dataset["data"], data)
    return data, brain_dataset["plan"]


def _run_stage(data: Path, plan: Path, out: Path):
    return preprocess_stage(
        data, plan, {"spacing": "auto"}, class_names=CLASS_NAMES["brain_mri"], cases_out=out / "cases", plan_out=out / "seg_plan.json"
    )


# ----------------------------------------------------------------- 1. orientation round trip

# direction (SimpleITK, row-major 3 x 3) -> how the canonical (LPS) array is made from the
# stored array (z, y, x): each column of the direction says where one index axis points
ORIENTATIONS = {
    # NIfTI written in RAS: x and y point right and anterior, so both are flipped
    "ras": ((-1, 0, 0, 0, -1, 0, 0, 0, 1), lambda a: a[:, ::-1, ::-1]),
    # index i runs along +y, j along +z, k along +x: a pure axis permutation
    "permuted": ((0, 0, 1, 1, 0, 0, 0, 1, 0), lambda a: a.transpose(1, 2, 0)),
    # i along -z, j along -x, k along +y: a permutation with two flips
    "permuted_flipped": ((0, -1, 0, 0, 0, 1, -1, 0, 0), lambda a: a.transpose(2, 0, 1)[::-1, :, ::-1]),
    # a left-handed frame (determinant -1): only x is flipped
    "x_flipped": ((-1, 0, 0, 0, 1, 0, 0, 0, 1), lambda a: a[:, :, ::-1]),
}


@pytest.fixture
def oriented_pair(request, tmp_path):
    """An image and its label map (values 0, 1, 2, 4, no two axes alike) on a grid with a
    non-identity direction, written to and read back from NIfTI."""
    direction, to_canonical = ORIENTATIONS[request.param]
    rng = np.random.default_rng(11)
    label = rng.choice(np.array(BRATS_VALUES, dtype=np.uint8), size=(5, 6, 7))
    image = (rng.normal(size=(5, 6, 7)) + 3.0 * label).astype(np.float32)
    geometry = ((1.5, 2.0, 2.5), (10.0, -20.0, 30.0), tuple(float(d) for d in direction))
    image_sitk = _through_nifti(_image(image, *geometry), tmp_path / "image.nii.gz")
    label_sitk = _through_nifti(_image(label, *geometry), tmp_path / "label.nii.gz")
    # the header survived the round trip through NIfTI (RAS on disk, LPS in ITK)
    np.testing.assert_allclose(image_sitk.GetDirection(), direction, atol=1e-6)
    return image_sitk, label_sitk, image, label, to_canonical


@pytest.mark.parametrize("oriented_pair", list(ORIENTATIONS), indirect=True)
def test_canonical_arrays_are_reoriented_and_to_original_undoes_it_exactly(oriented_pair, tmp_path):
    image_sitk, label_sitk, image, label, to_canonical = oriented_pair
    case = preprocess_case(image_sitk, label_sitk, None, spacing=None, intensity=ZSCORE, label_values=BRATS_VALUES)

    # the preprocessed grid is LPS (identity direction), same voxel size, permuted like the axes
    np.testing.assert_allclose(case.geometry["direction"], IDENTITY, atol=1e-6)
    assert sorted(case.geometry["spacing"]) == [1.5, 2.0, 2.5]
    # the arrays really were turned: the canonical array is the flipped / permuted input
    values = np.asarray(BRATS_VALUES, dtype=np.uint8)
    np.testing.assert_array_equal(values[case.label], to_canonical(label))
    np.testing.assert_allclose(case.image[0], to_canonical((image - image.mean()) / image.std()), rtol=0, atol=1e-5)
    assert case.image.shape == (1, *to_canonical(label).shape)

    # a perfect prediction on the canonical grid maps back voxel for voxel, original header
    back = to_original(_one_hot(case.label, 4), case.geometry, image_sitk, BRATS_VALUES)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), label)
    assert _geometry(back) == _geometry(image_sitk)
    assert back.GetPixelID() == sitk.sitkUInt8

    # ... and written as NIfTI it is accepted as lying on the image's grid
    write_prediction(back, image_sitk, tmp_path / "pred.nii.gz")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pred.nii.gz"))), label)


@pytest.mark.parametrize("oriented_pair", ["ras", "permuted_flipped"], indirect=True)
def test_crop_to_roi_without_resampling_is_undone_exactly(oriented_pair):
    image_sitk, label_sitk, _, label, to_canonical = oriented_pair
    # a region of interest holding every labelled voxel, not the whole volume
    roi = np.zeros(label.shape, dtype=np.uint8)
    roi[1:4, 1:5, 2:6] = 1
    label = np.where(roi > 0, label, 0).astype(np.uint8)
    label_sitk2 = sitk.GetImageFromArray(label)
    label_sitk2.CopyInformation(label_sitk)
    roi_sitk = sitk.GetImageFromArray(roi)
    roi_sitk.CopyInformation(image_sitk)

    case = preprocess_case(image_sitk, label_sitk2, roi_sitk, spacing=None, intensity=ZSCORE, label_values=BRATS_VALUES, crop_margin=0)
    assert np.prod(case.label.shape) == roi.sum()  # cropped to the roi's box (margin 0)
    np.testing.assert_array_equal(to_canonical(roi)[_box_slices(case.crop)], 1)

    back = to_original(_one_hot(case.label, 4), case.geometry, image_sitk, BRATS_VALUES)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), label)
    assert _geometry(back) == _geometry(image_sitk)


def test_write_prediction_refuses_a_prediction_off_the_image_grid(tmp_path):
    reference = _image(np.zeros((4, 5, 6), dtype=np.float32), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), IDENTITY)
    prediction = sitk.GetImageFromArray(np.zeros((4, 5, 6), dtype=np.uint8))
    prediction.CopyInformation(reference)
    prediction.SetOrigin((0.0, 0.0, 2.0))
    with pytest.raises(PredictionGeometryError, match=r"pred\.nii\.gz.*origin"):
        write_prediction(prediction, reference, tmp_path / "pred.nii.gz")


# ------------------------------------------------------- 2. resampling and crop round trip


@pytest.fixture(scope="module")
def brain_at_3mm():
    """One synthetic subject at 3 x 3 x 3.5 mm (the case study's grid), a small field of view."""
    return next(iter(GENERATORS["brain_mri"](n_patients=1, size=(40, 40, 32), spacing=(3.0, 3.0, 3.5), seed=8)))


def test_resampled_and_cropped_case_maps_back_with_high_dice(brain_at_3mm):
    rec = brain_at_3mm
    case = preprocess_case(rec.image, rec.mask, rec.roi, spacing=(2.0, 2.0, 2.0), intensity=ZSCORE_ROI, label_values=BRATS_VALUES)
    assert case.geometry["spacing"] == [2.0, 2.0, 2.0]
    assert case.image.shape[0] == 4  # T1, T1c, T2, FLAIR
    # cropped to the brain: smaller than the head's field of view
    assert case.crop["size"] != list(rec.image.GetSize())

    truth = sitk.GetArrayFromImage(rec.mask)
    back = to_original(_one_hot(case.label, 4), case.geometry, rec.image, BRATS_VALUES)
    assert _geometry(back) == _geometry(rec.image)
    pred = sitk.GetArrayFromImage(back)
    for value in (1, 2, 4):
        assert (truth == value).sum() > 0, f"label {value} missing from the test subject"
        assert _dice(pred == value, truth == value) > 0.95, value

    # outside the crop box there is no prediction at all, so background wins there, even
    # for a network that calls every voxel it sees edema
    everywhere_edema = np.zeros((4, *case.label.shape), dtype=np.float32)
    everywhere_edema[2] = 1.0
    pred = sitk.GetArrayFromImage(to_original(everywhere_edema, case.geometry, rec.image, BRATS_VALUES))
    inside = np.zeros(pred.shape, dtype=bool)
    inside[_box_slices(case.crop)] = True
    assert (~inside).sum() > 0
    np.testing.assert_array_equal(pred[~inside], 0)
    core = tuple(slice(s.start + 1, s.stop - 1) for s in _box_slices(case.crop))
    np.testing.assert_array_equal(pred[core], 2)  # the prediction itself does reach back


# ---------------------------------------------------- 3. a label on another grid is refused


@pytest.mark.parametrize(
    "prop, change",
    [
        ("origin", lambda im: im.SetOrigin([o + d for o, d in zip(im.GetOrigin(), (5.0, 0.0, 0.0))])),
        ("spacing", lambda im: im.SetSpacing([s * 1.5 for s in im.GetSpacing()])),
    ],
)
def test_label_on_another_grid_is_refused(brain_dataset, tmp_path, prop, change):
    data, plan = _copy_dataset(brain_dataset, tmp_path)
    manifest = read_manifest(data / "manifest.tsv")
    bad = data / manifest["mask"].iloc[2]  # the third case: two are written before it
    mask = sitk.ReadImage(str(bad))
    change(mask)
    sitk.WriteImage(mask, str(bad), True)

    with pytest.raises(ValueError) as info:
        _run_stage(data, plan, tmp_path / "out")
    message = str(info.value)
    assert str(bad) in message and prop in message, message
    assert str(data / manifest["image"].iloc[2]) in message  # and the image it should match
    # the plan, which every later step reads, is not written
    assert not (tmp_path / "out" / "seg_plan.json").exists()


def test_refused_label_leaves_no_partial_cases_folder(brain_dataset, tmp_path):
    data, plan = _copy_dataset(brain_dataset, tmp_path)
    bad = data / read_manifest(data / "manifest.tsv")["mask"].iloc[2]
    mask = sitk.ReadImage(str(bad))
    mask.SetOrigin([o + 5.0 for o in mask.GetOrigin()])
    sitk.WriteImage(mask, str(bad), True)
    with pytest.raises(ValueError):
        _run_stage(data, plan, tmp_path / "out")
    cases = tmp_path / "out" / "cases"
    assert not cases.exists() or not any(cases.iterdir()), sorted(p.name for p in cases.iterdir())
    assert not (tmp_path / "out" / "cases.partial").exists()  # nor a half-written one beside it


# ------------------------------------------------------------ 4. unexpected label values


def test_unexpected_label_value_is_refused_naming_file_and_value(brain_dataset, tmp_path):
    data, plan = _copy_dataset(brain_dataset, tmp_path)
    bad = data / read_manifest(data / "manifest.tsv")["mask"].iloc[1]
    mask = sitk.ReadImage(str(bad))
    array = sitk.GetArrayFromImage(mask)
    array[array == 2] = 7  # edema relabelled with a value the case study does not have
    assert (array == 7).any()
    fixed = sitk.GetImageFromArray(array)
    fixed.CopyInformation(mask)
    sitk.WriteImage(fixed, str(bad), True)

    with pytest.raises(ValueError, match=re.escape(str(bad)) + r".*\[7\]") as info:
        _run_stage(data, plan, tmp_path / "out")
    assert "[0, 1, 2, 4]" in str(info.value)  # and what it expected


def test_to_classes_maps_brats_values_and_refuses_the_unused_3():
    label = np.array([[0, 1], [2, 4]], dtype=np.uint8)
    np.testing.assert_array_equal(to_classes(label, BRATS_VALUES, "x"), [[0, 1], [2, 3]])
    assert label_lut(BRATS_VALUES)[3] == 255 and label_lut(BRATS_VALUES)[4] == 3
    with pytest.raises(ValueError, match=r"case_7\.nii\.gz: label value\(s\) \[3, 9\]"):
        to_classes(np.array([0, 3, 9, 3, 4], dtype=np.uint8), BRATS_VALUES, "case_7.nii.gz")
    assert label_values_of(CLASS_NAMES["brain_mri"]) == BRATS_VALUES
    assert label_values_of(CLASS_NAMES["abdomen_ct"]) == [0, 1, 2, 3, 4, 5]


def test_label_value_above_255_is_a_value_error_naming_the_case():
    label = sitk.GetImageFromArray(np.array([[[0, 1], [2, 300]]], dtype=np.uint16))
    image = sitk.GetImageFromArray(np.ones((1, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"case_300.*300"):
        preprocess_case(image, label, None, spacing=None, intensity=ZSCORE, label_values=BRATS_VALUES, name="case_300")


# ------------------------------------------------------------------- 5. normalisation


def test_normalize_ct_clips_then_uses_the_plan_mean_and_sd():
    plan = {"scheme": "ct", "channels": [{"channel": "CT", "clip": [-100.0, 200.0], "mean": 50.0, "std": 25.0}]}
    image = np.array([[[-1000.0, -100.0, 0.0, 50.0, 150.0, 200.0, 3000.0]]], dtype=np.float32)[None]
    out = normalize(image, plan, roi=None)
    np.testing.assert_allclose(out[0, 0, 0], [-6.0, -6.0, -2.0, 0.0, 4.0, 6.0, 6.0])
    with pytest.raises(ValueError, match="1 channel.*2"):
        normalize(np.zeros((2, 1, 1, 1), dtype=np.float32), plan, roi=None)
    with pytest.raises(ValueError, match="unknown intensity scheme"):
        normalize(image, {"scheme": "minmax"}, roi=None)


def test_ct_stage_uses_the_plans_clip_mean_and_sd(tmp_path):
    records = GENERATORS["abdomen_ct"](n_patients=2, size=(32, 32, 16), spacing=(10.0, 10.0, 15.0), seed=4)
    data = tmp_path / "data"
    write_dataset(
        records, data, class_names=CLASS_NAMES["abdomen_ct"], modality="CT",
        channel_names=abdomen_ct.CHANNEL_NAMES, labels=abdomen_ct.LABEL_NAMES,
    )  # fmt: skip
    fingerprint_stage(data, tmp_path / "fingerprint.json", tmp_path / "plan.json")
    seg_plan = preprocess_stage(
        data, tmp_path / "plan.json", {"spacing": "auto"}, class_names=CLASS_NAMES["abdomen_ct"],
        cases_out=tmp_path / "cases", plan_out=tmp_path / "seg_plan.json",
    )  # fmt: skip
    ct = read_json(tmp_path / "plan.json")["intensity"]["channels"][0]
    low, high = ct["clip"]
    assert seg_plan["intensity"]["scheme"] == "ct" and seg_plan["label_values"] == [0, 1, 2, 3, 4, 5]

    case_id = "abdomen_p0000"
    out = np.load(tmp_path / "cases" / f"{case_id}.npy")
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(data / "images" / f"{case_id}.nii.gz"))).astype(np.float64)
    raw = raw[_box_slices(seg_plan["cases"][case_id]["crop"])]  # target spacing = the image's: no resampling
    assert out.shape == (1, *raw.shape)
    # one soft-tissue voxel by hand, and one voxel of air (-1024 HU) that is clipped
    tissue = np.argwhere((raw > low) & (raw < high))
    z, y, x = tissue[len(tissue) // 2]
    assert out[0, z, y, x] == pytest.approx((raw[z, y, x] - ct["mean"]) / ct["std"], abs=1e-4)
    air = tuple(np.argwhere(raw < low)[0])
    assert raw[air] < low - 100
    assert out[(0, *air)] == pytest.approx((low - ct["mean"]) / ct["std"], abs=1e-4)
    assert out.min() == pytest.approx((low - ct["mean"]) / ct["std"], abs=1e-4)
    assert out.max() <= (high - ct["mean"]) / ct["std"] + 1e-4


def test_mri_zscore_inside_the_roi_and_zero_outside(brain_dataset, brain_preprocessed):
    seg_plan = brain_preprocessed["seg_plan"]
    assert seg_plan["intensity"] == {"scheme": "zscore", "use_roi": True}
    data = brain_dataset["data"]
    for case_id, meta in seg_plan["cases"].items():
        image = np.load(brain_preprocessed["cases"] / f"{case_id}.npy")
        roi = sitk.GetArrayFromImage(sitk.ReadImage(str(data / "rois" / f"{case_id}.nii.gz")))[_box_slices(meta["crop"])] > 0
        assert roi.shape == image.shape[1:] and 0 < roi.sum() < roi.size
        for channel in image:
            assert abs(float(channel[roi].mean())) < 1e-3
            assert float(channel[roi].std()) == pytest.approx(1.0, abs=1e-3)
            assert (channel[~roi] == 0.0).all()


def test_zscore_without_roi_uses_the_whole_volume():
    image = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    roi = np.zeros((2, 3, 4), dtype=bool)
    roi[0, 0, :2] = True
    whole = normalize(image, ZSCORE, roi)  # use_roi off: the roi is ignored
    assert whole.mean() == pytest.approx(0.0, abs=1e-6) and whole.std() == pytest.approx(1.0, abs=1e-5)
    inside = normalize(image, ZSCORE_ROI, roi)
    np.testing.assert_allclose(inside[0][roi], [-1.0, 1.0], atol=1e-5)
    assert (inside[0][~roi] == 0).all()


# ---------------------------------------------------------- small pieces of the recipe


def test_foreground_box_grows_by_the_margin_inside_the_volume():
    region = np.zeros((6, 8, 10), dtype=bool)
    region[1, 2:4, 7] = True
    index, size = foreground_box(region, margin=2)
    assert index == [5, 0, 0]  # x, y, z
    assert size == [5, 6, 4]  # x: 5..9 (stops at the edge), y: 0..5, z: 0..3
    assert foreground_box(np.zeros((3, 4, 5), dtype=bool), margin=2) == ([0, 0, 0], [5, 4, 3])


def test_crop_and_reorient_keep_physical_positions():
    image = _image(np.arange(60, dtype=np.float32).reshape(3, 4, 5), (1.0, 2.0, 3.0), (5.0, 6.0, 7.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    part = crop(image, [1, 2, 0], [3, 2, 2])
    assert part.GetSize() == (3, 2, 2)
    # the same voxel has the same physical position and value before and after the crop
    assert part.TransformIndexToPhysicalPoint((0, 0, 0)) == image.TransformIndexToPhysicalPoint((1, 2, 0))
    assert part[0, 0, 0] == image[1, 2, 0]
    canonical = reorient(image)
    assert canonical.GetDirection() == IDENTITY
    point = image.TransformIndexToPhysicalPoint((4, 3, 2))
    assert canonical[canonical.TransformPhysicalPointToIndex(point)] == image[4, 3, 2]


def test_pad_to_pads_trailing_axes_at_their_end():
    array = np.ones((2, 3, 4, 5), dtype=np.float32)
    padded = pad_to(array, (4, 4, 4), value=-1.0)
    assert padded.shape == (2, 4, 4, 5)  # z padded to 4, y already 4, x already larger
    np.testing.assert_array_equal(padded[:, :3], 1.0)
    np.testing.assert_array_equal(padded[:, 3], -1.0)
    assert pad_to(array, (2, 2, 2)) is array


# ------------------------------------------------------------------------- 6. patch size


def test_patch_size_fits_in_the_rounded_median_shape():
    assert patch_size([10.5, 30.0, 29.0], [1.0, 1.0, 1.0], max_voxels=10**6, divisor=[4, 4, 4]) == [12, 32, 32]
    assert patch_size([3.0, 30.0, 30.0], [1.0, 1.0, 1.0], max_voxels=10**6, divisor=[4, 8, 8]) == [4, 32, 32]


def test_patch_size_shrinks_the_axis_of_largest_physical_extent_first():
    # z has the fewest voxels but the largest extent (40 x 3.5 = 140 mm vs 64 mm)
    assert patch_size([40, 64, 64], [3.5, 1.0, 1.0], max_voxels=40 * 64 * 64 - 1, divisor=[4, 4, 4]) == [36, 64, 64]
    # isotropic: the axis with the most voxels goes first
    assert patch_size([40, 64, 48], [1.0, 1.0, 1.0], max_voxels=40 * 64 * 48 - 1, divisor=[4, 4, 4]) == [40, 60, 48]
    # a whole sequence by hand (4096 voxels from 20 x 28 x 24 at 7 x 6 x 6 mm)
    assert patch_size([19.5, 27, 23], [7.0, 6.0, 6.0], max_voxels=4096, divisor=[4, 4, 4]) == [16, 16, 16]


def test_patch_size_respects_budget_and_divisor_on_many_shapes():
    rng = np.random.default_rng(0)
    for _ in range(200):
        median = rng.uniform(2, 200, 3)
        spacing = rng.uniform(0.5, 5, 3)
        divisor = [int(d) for d in rng.choice([1, 2, 4, 8, 16], 3)]
        budget = int(rng.integers(64, 200_000))
        patch = patch_size(median, spacing, max_voxels=budget, divisor=divisor)
        ceiling = [max(d, int(np.ceil(m / d)) * d) for m, d in zip(median, divisor)]
        assert all(p % d == 0 and d <= p <= c for p, d, c in zip(patch, divisor, ceiling)), (median, divisor, patch)
        assert np.prod(patch) <= budget or patch == divisor, (median, spacing, divisor, budget, patch)


def test_patch_size_stops_at_one_divisor_when_the_budget_is_unreachable():
    assert patch_size([64, 64, 64], [1.0, 1.0, 1.0], max_voxels=1, divisor=[8, 4, 2]) == [8, 4, 2]


UNET_4 = {"name": "unet", "kwargs": {"channels": [8, 16, 32], "strides": [2, 2]}}
SMALL_PLAN = {"spacing_array_order": [7.0, 6.0, 6.0], "median_shape": [19.5, 27.0, 23.0]}


def test_model_patch_size_auto_and_fixed():
    assert model_patch_size(UNET_4, SMALL_PLAN, {"max_patch_voxels": 4096}) == [16, 16, 16]
    assert model_patch_size(UNET_4, SMALL_PLAN, {"patch_size": [16, 20, 24]}) == [16, 20, 24]
    # the default UNet downsamples three times: multiples of 8
    patch = model_patch_size({"name": "unet"}, SMALL_PLAN, {"max_patch_voxels": 10**6})
    assert patch == [24, 32, 24]


def test_model_patch_size_refuses_a_fixed_patch_the_network_cannot_take():
    with pytest.raises(ValueError, match=r"'unet' cannot take patch size \(16, 16, 18\).*axis 2 must be a multiple of 4"):
        model_patch_size(UNET_4, SMALL_PLAN, {"patch_size": [16, 16, 18]})


# -------------------------------------------------------------- 7. the preprocess stage


def test_preprocess_stage_writes_brain_cases_and_plan(brain_dataset, brain_preprocessed):
    cases_dir, seg_plan = brain_preprocessed["cases"], brain_preprocessed["seg_plan"]
    manifest = read_manifest(brain_dataset["data"] / "manifest.tsv")
    ids = list(manifest["image_id"])
    assert len(ids) == 4
    assert sorted(p.name for p in cases_dir.iterdir()) == sorted([f"{i}.npy" for i in ids] + [f"{i}_label.npy" for i in ids])
    assert read_json(brain_preprocessed["plan_path"]) == seg_plan
    assert seg_plan["label_values"] == [0, 1, 2, 4]
    assert seg_plan["class_names"] == ["background", "necrotic core", "edema", "enhancing tumour"]
    assert seg_plan["channel_names"] == ["T1", "T1c", "T2", "FLAIR"]
    assert seg_plan["spacing"] == [6.0, 6.0, 7.0] and seg_plan["spacing_array_order"] == [7.0, 6.0, 6.0]
    shapes = []
    for row in manifest.itertuples():
        image = np.load(cases_dir / f"{row.image_id}.npy")
        label = np.load(cases_dir / f"{row.image_id}_label.npy")
        meta = seg_plan["cases"][row.image_id]
        assert image.dtype == np.float32 and image.shape[0] == 4
        assert label.dtype == np.uint8 and label.shape == image.shape[1:]
        assert list(label.shape) == meta["shape"] and meta["has_label"]
        assert set(np.unique(label)) <= {0, 1, 2, 3}
        # BraTS 4 (enhancing tumour) became class 3, voxel for voxel (no resampling here)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(brain_dataset["data"] / row.mask)))
        np.testing.assert_array_equal(np.asarray(BRATS_VALUES)[label], mask[_box_slices(meta["crop"])])
        assert (mask == 4).sum() > 0 and (label == 3).sum() == (mask == 4).sum()
        # the per-case geometry is where the cropped grid lies in space
        original = sitk.ReadImage(str(brain_dataset["data"] / row.image))
        assert meta["spacing"] == [6.0, 6.0, 7.0] and meta["direction"] == list(IDENTITY)
        np.testing.assert_allclose(meta["origin"], original.TransformIndexToPhysicalPoint(meta["crop"]["index"]), atol=1e-6)
        assert meta["crop"]["size"] == list(label.shape[::-1])
        shapes.append(label.shape)
    assert seg_plan["median_shape"] == [float(s) for s in np.median(np.array(shapes, dtype=float), axis=0)]


# ------------------------------------------------- review fixes: grid, axes, regions


def test_a_downsampled_case_maps_back_to_every_original_slice():
    """11 slices at 0.77 mm resampled to 1 mm: a grid that stopped short of the last
    slice would bring it back as background."""
    label = sitk.GetImageFromArray(np.ones((11, 6, 6), dtype=np.uint8))
    label.SetSpacing((1.0, 1.0, 0.77))
    image = sitk.Cast(label, sitk.sitkFloat32)
    case = preprocess_case(image, label, None, spacing=[1.0, 1.0, 1.0], intensity=ZSCORE, label_values=[0, 1])
    probs = np.stack([case.label == 0, case.label == 1]).astype(np.float32)
    back = sitk.GetArrayFromImage(to_original(probs, case.geometry, image, [0, 1]))
    assert back.sum(axis=(1, 2)).tolist() == [36] * 11


def test_the_plans_spacing_follows_a_slice_first_file_to_the_canonical_axes():
    from casebook.tasks.segmentation.preprocess import canonical_spacing

    # first file axis along z (slice-first, as KiTS stores its volumes), third along x
    direction = (0, 0, -1, 0, -1, 0, -1, 0, 0)
    assert canonical_spacing([3.0, 0.8, 0.8], direction) == [0.8, 0.8, 3.0]
    assert canonical_spacing([0.8, 0.7, 3.0], (1, 0, 0, 0, 1, 0, 0, 0, 1)) == [0.8, 0.7, 3.0]
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(64, 64, 40)).astype(np.float32))
    image.SetSpacing((3.0, 0.8, 0.8))
    image.SetDirection(direction)
    case = preprocess_case(image, None, None, spacing=canonical_spacing([3.0, 0.8, 0.8], direction), intensity=ZSCORE, label_values=[0])
    assert case.image.shape[1:] == (40, 64, 64) and case.geometry["spacing"] == [0.8, 0.8, 3.0]


def test_mri_without_roi_is_zscored_inside_its_nonzero_voxels():
    array = np.zeros((8, 10, 10), dtype=np.float32)
    array[2:6, 3:7, 3:7] = np.random.default_rng(1).normal(100, 10, size=(4, 4, 4))
    case = preprocess_case(sitk.GetImageFromArray(array), None, None, spacing=None, intensity=ZSCORE, label_values=[0], crop_margin=1)
    inside = case.image[0][1:-1, 1:-1, 1:-1]
    assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-3
    assert (case.image[0][0] == 0).all()  # the margin of zero background stays 0


def test_regions_naming_a_missing_label_value_are_refused():
    from casebook.tasks.segmentation.evaluate import regions_of

    msd = {"label_values": [0, 1, 2, 3], "class_names": ["background", "edema", "non-enhancing", "enhancing"]}
    with pytest.raises(ValueError, match=r"whole_tumour: label value\(s\) \[4\]"):
        regions_of({"regions": {"whole_tumour": [1, 2, 4], "enhancing_tumour": [4]}}, msd)
    with pytest.raises(ValueError, match="volume_region 'tumor'"):
        regions_of({"regions": {"tumour": [2, 3]}, "volume_region": "tumor"}, msd)
    assert regions_of({"regions": {"tumour_core": [2, 3]}, "volume_region": "tumour_core"}, msd) == {"tumour_core": [2, 3]}
