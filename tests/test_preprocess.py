"""Tests for casebook.tasks.classification.preprocess: resampling, normalisation, resizing and the array cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
import torchio as tio

from casebook.imaging import resample_to_spacing
from casebook.layout import Record, write_dataset
from casebook.tasks.classification.preprocess import load_cache, preprocess_dataset, preprocess_subject


def _image(array: np.ndarray, spacing) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    return image


def _physical_centroid(image: sitk.Image) -> np.ndarray:
    """Intensity-weighted centroid in physical coordinates (x, y[, z])."""
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    idx = np.stack(np.nonzero(array > 0), axis=1)  # array order
    weights = array[array > 0]
    points = np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in i[::-1])) for i in idx])
    return (points * weights[:, None]).sum(0) / weights.sum()


def _square_image(shape=(20, 30), square=(slice(4, 9), slice(10, 16)), spacing=(1.0, 1.0)):
    array = np.zeros(shape, dtype=np.float32)
    array[square] = 100.0
    image = _image(array, spacing)
    mask = sitk.GetImageFromArray((array > 0).astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


# --------------------------------------------------------------------------------------
# resample_to_spacing
# --------------------------------------------------------------------------------------


def test_resample_2d_keeps_physical_extent_and_position() -> None:
    image, _ = _square_image(spacing=(0.5, 1.0))  # SimpleITK size (30, 20), extent 15 x 20 mm
    out = resample_to_spacing(image, (1.0, 0.5), is_label=False)
    assert out.GetSpacing() == (1.0, 0.5)
    assert out.GetSize() == (15, 39)
    # voxel centres stay inside the image, short of its last centre by less than a voxel
    span_in = (np.array(image.GetSize()) - 1) * np.array(image.GetSpacing())
    span_out = (np.array(out.GetSize()) - 1) * np.array(out.GetSpacing())
    assert np.all(span_out <= span_in + 1e-9) and np.all(span_in - span_out < np.array(out.GetSpacing()))
    assert out.GetOrigin() == image.GetOrigin()
    # the bright square stays where it was in millimetres (within a voxel)
    np.testing.assert_allclose(_physical_centroid(out), _physical_centroid(image), atol=1.0)


def test_resample_3d_keeps_physical_extent() -> None:
    array = np.zeros((10, 12, 14), dtype=np.float32)  # (z, y, x)
    array[3:6, 4:8, 5:9] = 1.0
    image = _image(array, (0.8, 0.8, 3.0))
    out = resample_to_spacing(image, (1.6, 1.6, 1.5), is_label=False)
    assert out.GetSize() == (7, 6, 19)  # floor((n - 1) * s / t) + 1
    np.testing.assert_allclose((np.array(out.GetSize()) - 1) * out.GetSpacing(), [9.6, 8.0, 27.0], atol=1e-6)
    np.testing.assert_allclose(_physical_centroid(out), _physical_centroid(image), atol=1.6)


def test_resample_fills_nothing_from_outside_the_image() -> None:
    # CT patch in HU: a 0 fill would put a soft-tissue slab at the edge of air
    image = _image(np.full((12, 40, 40), -900, dtype=np.int16), (0.8, 0.8, 2.5))
    out = sitk.GetArrayFromImage(resample_to_spacing(image, (1.0, 1.0, 1.0), is_label=False))
    assert out.max() == -900


def test_resample_label_uses_nearest_neighbour() -> None:
    array = np.zeros((9, 9), dtype=np.uint8)
    array[2:7, 2:7] = 3
    label = _image(array, (1.0, 1.0))
    out = sitk.GetArrayFromImage(resample_to_spacing(label, (0.4, 0.7), is_label=True))
    assert set(np.unique(out)) == {0, 3}
    smooth = sitk.GetArrayFromImage(resample_to_spacing(_image(array.astype(np.float32), (1, 1)), (0.4, 0.7), is_label=False))
    assert len(np.unique(smooth)) > 2  # linear interpolation for images


def test_resample_refuses_spacing_of_the_wrong_dimension() -> None:
    image, _ = _square_image()
    with pytest.raises(ValueError, match="does not match"):
        resample_to_spacing(image, (1.0, 1.0, 1.0), is_label=False)


# --------------------------------------------------------------------------------------
# preprocess_subject
# --------------------------------------------------------------------------------------


def test_zscore_gives_zero_mean_unit_sd() -> None:
    rng = np.random.default_rng(0)
    image = _image((rng.normal(300, 40, (16, 16))).astype(np.float32), (1, 1))
    out, mask = preprocess_subject(image, None, {"intensity": "zscore", "size": [16, 16]})
    assert mask is None
    assert out.shape == (1, 16, 16) and out.dtype == np.float32
    assert abs(out.mean()) < 1e-4
    assert out.std() == pytest.approx(1.0, abs=0.01)


def test_minmax_gives_zero_to_one() -> None:
    rng = np.random.default_rng(1)
    image = _image(rng.uniform(-1000, 3000, (12, 12)).astype(np.float32), (1, 1))
    out, _ = preprocess_subject(image, None, {"intensity": "minmax", "size": [12, 12]})
    assert out.min() == pytest.approx(0.0, abs=1e-6)
    assert out.max() == pytest.approx(1.0, abs=1e-6)


def test_window_clamps_and_rescales() -> None:
    array = np.array([[-1000, -100, 0, 25], [50, 75, 100, 2000]], dtype=np.float32)
    out, _ = preprocess_subject(_image(array, (1, 1)), None, {"intensity": "window", "window": [0, 100], "size": [2, 4]})
    np.testing.assert_allclose(out[0], [[0, 0, 0, 0.25], [0.5, 0.75, 1, 1]], atol=1e-6)


def test_unknown_intensity_method_is_refused() -> None:
    image, _ = _square_image()
    with pytest.raises(ValueError, match="histogram"):
        preprocess_subject(image, None, {"intensity": "histogram", "size": [8, 8]})


@pytest.mark.parametrize("spatial", ["resize", "crop_or_pad"])
@pytest.mark.parametrize("shape, size", [((20, 30), [16, 24]), ((10, 12, 14), [8, 16, 10])], ids=["2d", "3d"])
def test_output_has_the_configured_shape(shape, size, spatial) -> None:
    array = np.random.default_rng(0).random(shape).astype(np.float32)
    out, _ = preprocess_subject(_image(array, (1,) * len(shape)), None, {"intensity": "zscore", "size": size, "spatial": spatial})
    assert out.shape == (1, *size)
    assert out.dtype == np.float32


def test_crop_or_pad_keeps_pixels_unscaled() -> None:
    image, _ = _square_image(shape=(20, 30))
    out, _ = preprocess_subject(image, None, {"intensity": "minmax", "size": [24, 24], "spatial": "crop_or_pad"})
    # no interpolation: still exactly 5 x 6 pixels of 1 and the rest 0
    assert set(np.unique(out)) == {0.0, 1.0}
    assert out.sum() == 30


def test_size_of_the_wrong_dimension_is_refused() -> None:
    image, _ = _square_image()
    with pytest.raises(ValueError, match="does not match"):
        preprocess_subject(image, None, {"intensity": "zscore", "size": [8, 8, 8]})


def test_rgb_image_becomes_three_channels() -> None:
    rgb = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 255, (28, 28, 3)).astype(np.uint8), isVector=True)
    out, _ = preprocess_subject(rgb, None, {"intensity": "minmax", "size": [16, 16]})
    assert out.shape == (3, 16, 16)


@pytest.mark.parametrize(
    "cfg",
    [
        {"intensity": "minmax", "size": [16, 16]},
        {"intensity": "zscore", "size": [13, 21]},
        {"intensity": "minmax", "size": [24, 24], "spatial": "crop_or_pad"},
        {"intensity": "minmax", "size": [18, 18], "spacing": [0.7, 1.3]},
    ],
    ids=["resize", "anisotropic-resize", "crop_or_pad", "resample+resize"],
)
@pytest.mark.filterwarnings("ignore:Output shape .* != target shape:RuntimeWarning")  # TorchIO's own rounding fix
def test_mask_stays_binary_and_aligned(cfg) -> None:
    image, mask = _square_image(shape=(20, 30), square=(slice(4, 9), slice(18, 25)), spacing=(0.9, 1.1))
    out, out_mask = preprocess_subject(image, mask, cfg)
    assert out_mask.shape == out.shape
    assert out_mask.dtype == np.uint8
    assert set(np.unique(out_mask)) == {0, 1}
    bright = out[0] > (out[0].min() + out[0].max()) / 2
    centre_image = np.array(np.nonzero(bright)).mean(1)
    centre_mask = np.array(np.nonzero(out_mask[0])).mean(1)
    np.testing.assert_allclose(centre_mask, centre_image, atol=1.0)


def test_mask_stays_aligned_in_3d() -> None:
    array = np.zeros((10, 12, 14), dtype=np.float32)
    array[2:5, 7:11, 3:7] = 50
    image = _image(array, (1.0, 1.0, 2.0))
    mask = sitk.GetImageFromArray((array > 0).astype(np.uint8))
    mask.CopyInformation(image)
    out, out_mask = preprocess_subject(image, mask, {"intensity": "minmax", "size": [16, 8, 8], "spacing": [1, 1, 1]})
    assert out.shape == out_mask.shape == (1, 16, 8, 8)
    assert set(np.unique(out_mask)) == {0, 1}
    centre_image = np.array(np.nonzero(out[0] > 0.5)).mean(1)
    centre_mask = np.array(np.nonzero(out_mask[0])).mean(1)
    np.testing.assert_allclose(centre_mask, centre_image, atol=1.0)


# --------------------------------------------------------------------------------------
# preprocess_dataset
# --------------------------------------------------------------------------------------


def _write_canonical(root: Path, *, with_masks: bool) -> Path:
    rng = np.random.default_rng(3)
    records = []
    for i, shape in enumerate([(20, 24), (18, 18), (16, 30), (22, 20)]):
        image = rng.normal(100, 20, shape).astype(np.float32)
        mask = None
        if with_masks and i != 1:  # one image without a lesion
            mask = np.zeros(shape, dtype=np.uint8)
            mask[5:10, 5:10] = 1
            image[5:10, 5:10] += 200
        records.append(Record(f"im{i}", f"p{i // 2}", i % 2, image, spacing=(1.0, 1.0), mask=mask))
    write_dataset(records, root, class_names=["a", "b"], modality="CT")
    return root / "manifest.tsv"


def _outputs(tmp_path: Path) -> dict[str, Path]:
    out = tmp_path / "cache"
    return {"images_out": out / "images.npy", "masks_out": out / "masks.npy", "index_out": out / "index.tsv"}


def test_preprocess_dataset_end_to_end_without_masks(tmp_path: Path) -> None:
    manifest = _write_canonical(tmp_path / "ds", with_masks=False)
    outs = _outputs(tmp_path)
    index = preprocess_dataset(manifest, {"intensity": "zscore", "size": [16, 16]}, **outs)

    images = np.load(outs["images_out"])
    assert images.shape == (4, 1, 16, 16)
    assert images.dtype == np.float32
    assert np.isfinite(images).all()
    for image in images:  # each image normalised on its own
        assert abs(float(image.mean())) < 0.2
    on_disk = pd.read_csv(outs["index_out"], sep="\t", dtype={"image_id": str, "patient_id": str})
    assert list(on_disk.columns) == ["row", "image_id", "patient_id", "label", "has_mask"]
    assert on_disk["row"].tolist() == [0, 1, 2, 3]
    assert on_disk["image_id"].tolist() == ["im0", "im1", "im2", "im3"]
    assert on_disk["patient_id"].tolist() == ["p0", "p0", "p1", "p1"]
    assert on_disk["label"].tolist() == [0, 1, 0, 1]
    assert not on_disk["has_mask"].any()
    assert index["image_id"].tolist() == on_disk["image_id"].tolist()


def test_preprocess_dataset_without_masks_writes_a_loadable_empty_masks_file(tmp_path: Path) -> None:
    manifest = _write_canonical(tmp_path / "ds", with_masks=False)
    outs = _outputs(tmp_path)
    preprocess_dataset(manifest, {"intensity": "zscore", "size": [16, 16]}, **outs)
    assert sorted(p.name for p in outs["images_out"].parent.iterdir()) == ["images.npy", "index.tsv", "masks.npy"]
    assert np.load(outs["masks_out"]).size == 0
    images, masks = load_cache(outs["images_out"], outs["masks_out"])
    assert images.shape == (4, 1, 16, 16)
    assert masks is None


def test_preprocess_dataset_end_to_end_with_masks(tmp_path: Path) -> None:
    manifest = _write_canonical(tmp_path / "ds", with_masks=True)
    outs = _outputs(tmp_path)
    index = preprocess_dataset(manifest, {"intensity": "minmax", "size": [16, 16]}, **outs)
    images, masks = load_cache(outs["images_out"], outs["masks_out"])
    assert images.shape == (4, 1, 16, 16)
    assert masks.shape == (4, 1, 16, 16)
    assert masks.dtype == np.uint8
    assert set(np.unique(masks)) == {0, 1}
    assert index["has_mask"].tolist() == [True, False, True, True]
    assert masks[1].sum() == 0  # the image without a lesion gets an empty mask
    for i in (0, 2, 3):
        assert masks[i].sum() > 0
        # the lesion is the bright part of the image
        assert images[i][masks[i] == 1].mean() > images[i][masks[i] == 0].mean() + 0.3
    assert sorted(p.name for p in outs["images_out"].parent.iterdir()) == ["images.npy", "index.tsv", "masks.npy"]


def test_preprocess_dataset_refuses_a_broken_manifest(tmp_path: Path) -> None:
    manifest = _write_canonical(tmp_path / "ds", with_masks=False)
    (tmp_path / "ds" / "images" / "im2.nii.gz").unlink()
    outs = _outputs(tmp_path)
    with pytest.raises(ValueError, match="im2.nii.gz"):
        preprocess_dataset(manifest, {"intensity": "zscore", "size": [16, 16]}, **outs)
    assert not outs["images_out"].exists()


@pytest.mark.filterwarnings("ignore:Rescaling image")
def test_minmax_of_a_constant_image_stays_in_unit_range() -> None:
    out, _ = preprocess_subject(_image(np.full((8, 8), 5.0, np.float32), (1, 1)), None, {"intensity": "minmax", "size": [8, 8]})
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_preprocess_dataset_with_a_blank_image_names_it_or_copes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    records = [
        Record("ok", "p0", 0, rng.normal(size=(12, 12)).astype(np.float32), (1.0, 1.0)),
        Record("blank", "p1", 1, np.zeros((12, 12), np.float32), (1.0, 1.0)),
    ]
    write_dataset(records, tmp_path / "ds", class_names=["a", "b"], modality="CT")
    try:
        preprocess_dataset(tmp_path / "ds" / "manifest.tsv", {"intensity": "zscore", "size": [8, 8]}, **_outputs(tmp_path))
    except ValueError as exc:  # a clear error naming the image would be fine too
        assert "blank" in str(exc)
    else:
        assert np.isfinite(np.load(tmp_path / "cache" / "images.npy")).all()


def test_a_mask_on_another_grid_is_refused_naming_both_files(tmp_path: Path) -> None:
    image = np.zeros((8, 8), dtype=np.float32)
    image[2:5, 2:5] = 1
    records = [Record("a", "p1", 1, image, (1.0, 1.0), mask=(image > 0).astype(np.uint8))]
    write_dataset(records, tmp_path / "ds", class_names=["no", "yes"], modality="test")
    mask_path = tmp_path / "ds/masks/a.nii.gz"
    moved = sitk.ReadImage(str(mask_path))
    moved.SetOrigin((5.0, 0.0))
    sitk.WriteImage(moved, str(mask_path))
    with pytest.raises(ValueError, match=r"a\.nii\.gz: origin .* differs from its image .*images/a\.nii\.gz"):
        preprocess_dataset(
            tmp_path / "ds/manifest.tsv",
            {"size": [8, 8]},
            images_out=tmp_path / "i.npy",
            masks_out=tmp_path / "m.npy",
            index_out=tmp_path / "x.tsv",
        )
    assert not (tmp_path / "i.npy").exists()


# ---- the plan from the fingerprint ----------------------------------------------------

CT_PLAN = {
    "spacing": [0.8, 0.8, 2.6],
    "intensity": {"scheme": "ct", "channels": [{"channel": 0, "clip": [-1000.0, 400.0], "mean": -300.0, "std": 350.0}]},
}


def test_auto_settings_come_from_the_plan() -> None:
    from casebook.tasks.classification.preprocess import apply_plan

    cfg = apply_plan({"size": [8, 8, 8], "spacing": "auto", "intensity": "auto"}, CT_PLAN)
    assert cfg["spacing"] == [0.8, 0.8, 2.6]
    assert (cfg["intensity"], cfg["clip"], cfg["mean"], cfg["std"]) == ("ct", [-1000.0, 400.0], -300.0, 350.0)
    mri = apply_plan({"size": [8, 8, 8], "intensity": "auto"}, {"spacing": [1, 1, 1], "intensity": {"scheme": "zscore"}})
    assert mri["intensity"] == "zscore"
    with pytest.raises(ValueError, match="plan"):
        apply_plan({"size": [8, 8, 8], "spacing": "auto"}, None)


def test_ct_scheme_clips_then_standardizes_with_the_plan_values() -> None:
    from casebook.tasks.classification.preprocess import apply_plan, intensity_transform

    cfg = apply_plan({"size": [4, 4, 4], "intensity": "auto"}, CT_PLAN)
    tensor = torch.tensor([-3000.0, -1000.0, -300.0, 50.0, 400.0, 3000.0]).reshape(1, 6, 1, 1)
    out = intensity_transform(cfg)(tio.ScalarImage(tensor=tensor)).data.flatten()
    expected = (np.clip([-3000, -1000, -300, 50, 400, 3000], -1000, 400) + 300) / 350
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)


def test_ct_scheme_leaves_masks_alone_and_zscore_can_use_the_roi() -> None:
    from casebook.tasks.classification.preprocess import apply_plan

    rng = np.random.default_rng(0)
    array = rng.normal(-500, 200, (8, 8, 8)).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    mask = sitk.GetImageFromArray((array > -500).astype(np.uint8))
    cfg = apply_plan({"size": [8, 8, 8], "spatial": "crop_or_pad", "intensity": "auto"}, CT_PLAN)
    _, mask_out = preprocess_subject(image, mask, cfg)
    np.testing.assert_array_equal(mask_out[0], sitk.GetArrayFromImage(mask))  # labels are not standardized

    roi_array = np.zeros((8, 8, 8), np.uint8)
    roi_array[2:6, 2:6, 2:6] = 1
    roi = sitk.GetImageFromArray(roi_array)
    cfg = apply_plan(
        {"size": [8, 8, 8], "spatial": "crop_or_pad", "intensity": "auto"},
        {"spacing": [1, 1, 1], "intensity": {"scheme": "zscore", "use_roi": True}},
    )
    out, _ = preprocess_subject(image, None, cfg, roi=roi)
    inside = out[0][roi_array == 1]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std(ddof=1) - 1) < 1e-3  # TorchIO: unbiased sd


def test_multichannel_images_resample_and_preprocess() -> None:
    channels = [sitk.GetImageFromArray(np.full((4, 6, 6), v, np.float32)) for v in (1.0, 5.0)]
    for c in channels:
        c.SetSpacing((1.0, 1.0, 2.0))
    vector = sitk.Compose(channels)
    out, _ = preprocess_subject(
        vector, None, {"size": [8, 6, 6], "spacing": [1.0, 1.0, 1.0], "spatial": "crop_or_pad", "intensity": "minmax"}
    )
    assert out.shape == (2, 8, 6, 6)
