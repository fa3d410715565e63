"""Tests of the seeded synthetic segmentation generators (brain MRI, abdominal CT)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from casebook.layout import Record, geometry_mismatches, read_manifest, write_dataset
from casebook.synthetic import CLASS_NAMES, GENERATORS, abdomen_ct, brain_mri, generate_abdomen_ct, generate_brain_mri

# Small data sets at the default grid sizes: the module runs in a few seconds.
BRAIN_ARGS = {"n_patients": 4, "seed": 5}
CT_ARGS = {"n_patients": 4, "seed": 5, "liver_lesion_fraction": 1.0, "kidney_lesion_fraction": 1.0}
CUBE = np.ones((3, 3, 3), dtype=bool)  # 26-neighbourhood


@pytest.fixture(scope="module")
def brain_records() -> list[Record]:
    return list(generate_brain_mri(**BRAIN_ARGS))


@pytest.fixture(scope="module")
def ct_records() -> list[Record]:
    return list(generate_abdomen_ct(**CT_ARGS))


def _arrays(rec: Record) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, label, roi) arrays; the image keeps a trailing channel axis."""
    image = sitk.GetArrayFromImage(rec.image)
    if image.ndim == 3:
        image = image[..., None]
    return image, sitk.GetArrayFromImage(rec.mask), sitk.GetArrayFromImage(rec.roi)


# ----------------------------------------------------------------- shared behaviour


def test_registry_names_the_segmentation_generators():
    assert GENERATORS["brain_mri"] is generate_brain_mri
    assert GENERATORS["abdomen_ct"] is generate_abdomen_ct
    # class names are the voxel label names, indexed by label value (BraTS leaves 3 unused)
    assert CLASS_NAMES["brain_mri"][:3] == ["background", "necrotic core", "edema"]
    assert CLASS_NAMES["brain_mri"][4] == "enhancing tumour" and len(CLASS_NAMES["brain_mri"]) == 5
    assert CLASS_NAMES["abdomen_ct"] == ["background", "liver", "kidney", "spleen", "liver lesion", "kidney lesion"]
    assert brain_mri.LABEL_NAMES == {0: "background", 1: "necrotic core", 2: "edema", 4: "enhancing tumour"}
    assert brain_mri.CHANNEL_NAMES == ["T1", "T1c", "T2", "FLAIR"]
    assert abdomen_ct.CHANNEL_NAMES == ["CT"]
    assert set(abdomen_ct.LABEL_NAMES) == {0, 1, 2, 3, 4, 5}


@pytest.mark.parametrize("name, args", [("brain_mri", BRAIN_ARGS), ("abdomen_ct", CT_ARGS)])
def test_same_arguments_give_identical_data(name, args):
    small = {**args, "n_patients": 2}
    first, second = list(GENERATORS[name](**small)), list(GENERATORS[name](**small))
    assert [r.image_id for r in first] == [r.image_id for r in second]
    for a, b in zip(first, second):
        assert a.source_checksum == b.source_checksum
        for x, y in zip(_arrays(a), _arrays(b)):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name, args", [("brain_mri", BRAIN_ARGS), ("abdomen_ct", CT_ARGS)])
def test_different_seed_gives_different_data(name, args):
    small = {**args, "n_patients": 2}
    first = list(GENERATORS[name](**small))
    other = list(GENERATORS[name](**{**small, "seed": small["seed"] + 1}))
    for a, b in zip(first, other):
        assert a.source_checksum != b.source_checksum
        assert not np.array_equal(_arrays(a)[0], _arrays(b)[0])
        assert not np.array_equal(_arrays(a)[1], _arrays(b)[1])


@pytest.mark.parametrize("name, args", [("brain_mri", BRAIN_ARGS), ("abdomen_ct", CT_ARGS)])
def test_a_subject_does_not_depend_on_how_many_there_are(name, args, request):
    records = request.getfixturevalue("brain_records" if name == "brain_mri" else "ct_records")
    alone = list(GENERATORS[name](**{**args, "n_patients": 1}))
    assert len(alone) == 1 and alone[0].image_id == records[0].image_id
    for x, y in zip(_arrays(alone[0]), _arrays(records[0])):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("fixture, prefix", [("brain_records", "brain"), ("ct_records", "abdomen")])
def test_one_record_per_subject_without_class_label(fixture, prefix, request):
    records = request.getfixturevalue(fixture)
    assert len(records) == 4
    for rec in records:
        assert rec.label is None  # segmentation: voxel labels only, as the msd adapter gives
        assert re.fullmatch(prefix + r"_p\d{4}", rec.patient_id) and rec.image_id == rec.patient_id
        assert rec.source_checksum
    assert len({r.image_id for r in records}) == len(records)


@pytest.mark.parametrize("fixture", ["brain_records", "ct_records"])
def test_image_label_and_roi_share_one_grid(fixture, request):
    for rec in request.getfixturevalue(fixture):
        assert isinstance(rec.image, sitk.Image)
        assert geometry_mismatches(rec.image, rec.mask) == []
        assert geometry_mismatches(rec.image, rec.roi) == []
        assert rec.mask.GetPixelID() == sitk.sitkUInt8 and rec.roi.GetPixelID() == sitk.sitkUInt8
        assert rec.image.GetDirection() == pytest.approx(np.eye(3).ravel())
        # the volume centre is the physical origin (0, 0, 0)
        centre = np.array(rec.image.GetOrigin()) + (np.array(rec.image.GetSize()) - 1) / 2 * np.array(rec.image.GetSpacing())
        np.testing.assert_allclose(centre, 0.0, atol=1e-6)
        assert tuple(rec.image.GetSpacing()) == pytest.approx(rec.spacing)


def test_brain_geometry_and_channels(brain_records):
    for rec in brain_records:
        assert rec.image.GetNumberOfComponentsPerPixel() == 4
        assert rec.image.GetPixelID() == sitk.sitkVectorFloat32
        assert rec.image.GetSize() == (64, 64, 48)
        assert rec.image.GetSpacing() == pytest.approx((3.0, 3.0, 3.5))
        image, _, _ = _arrays(rec)
        assert image.shape == (48, 64, 64, 4) and image.min() >= 0.0  # Rician magnitudes


def test_ct_geometry_is_anisotropic_with_thick_slices(ct_records):
    for rec in ct_records:
        assert rec.image.GetNumberOfComponentsPerPixel() == 1
        assert rec.image.GetPixelID() == sitk.sitkInt16
        assert rec.image.GetSize() == (64, 64, 32)
        sx, sy, sz = rec.image.GetSpacing()
        assert sx == sy and sz > 1.2 * sx
        assert 300.0 <= 64 * sx <= 350.0  # the field of view holds an abdomen


@pytest.mark.parametrize("generator", [generate_brain_mri, generate_abdomen_ct])
def test_size_and_spacing_arguments(generator):
    rec = next(generator(n_patients=1, size=(40, 36, 20), spacing=(4.0, 4.5, 6.0), seed=1))
    image, label, roi = _arrays(rec)
    assert rec.image.GetSize() == (40, 36, 20) and rec.image.GetSpacing() == pytest.approx((4.0, 4.5, 6.0))
    assert image.shape[:3] == label.shape == roi.shape == (20, 36, 40)
    assert label.any() and roi.any()


@pytest.mark.parametrize("generator", [generate_brain_mri, generate_abdomen_ct])
def test_invalid_arguments_are_rejected(generator):
    with pytest.raises(ValueError):
        list(generator(n_patients=1, size=(64, 64)))
    with pytest.raises(ValueError):
        list(generator(n_patients=1, spacing=(1.0, 0.0, 1.0)))
    with pytest.raises(ValueError):
        list(generator(n_patients=-1))
    with pytest.raises(TypeError):
        list(generator(n_patients=1, no_such_knob=1.0))


@pytest.mark.parametrize("fixture", ["brain_records", "ct_records"])
def test_roi_holds_every_labelled_voxel(fixture, request):
    for rec in request.getfixturevalue(fixture):
        image, label, roi = _arrays(rec)
        assert set(np.unique(roi)) == {0, 1}
        assert not (label[roi == 0] > 0).any()
        assert 0.05 < roi.mean() < 0.8  # a head / body that fills part of the field of view


# ----------------------------------------------------------------- brain MRI


def test_brain_labels_are_the_brats_values(brain_records):
    for rec in brain_records:
        _, label, _ = _arrays(rec)
        assert set(np.unique(label)) == {0, 1, 2, 4}  # every subject has a tumour by default


def test_brain_healthy_subjects_have_empty_labels():
    for rec in generate_brain_mri(n_patients=2, seed=5, tumour_fraction=0.0):
        _, label, roi = _arrays(rec)
        assert not label.any() and roi.any()


def test_brain_tumour_regions_are_nested(brain_records):
    for rec in brain_records:
        _, label, _ = _arrays(rec)
        whole, core, necrosis, enhancing = label > 0, np.isin(label, (1, 4)), label == 1, label == 4
        # edema surrounds the tumour core: the core's neighbours are all tumour
        assert not (ndimage.binary_dilation(core, CUBE) & ~whole).any()
        # the enhancing rim surrounds the necrotic core: its neighbours are all core
        assert not (ndimage.binary_dilation(necrosis, CUBE) & ~core).any()
        # ... and touches it
        assert (ndimage.binary_dilation(necrosis, CUBE) & enhancing).any()
        # one tumour: its largest connected piece holds nearly all of it
        pieces, n = ndimage.label(whole, CUBE)
        assert np.bincount(pieces.ravel())[1:].max() >= 0.95 * whole.sum()
        # plausible volumes (mm^3): whole tumour 10-400 ml, core smaller than the whole
        voxel = np.prod(rec.image.GetSpacing())
        assert 10_000 < whole.sum() * voxel < 400_000
        assert 0 < core.sum() < whole.sum()


def test_brain_sequence_contrasts(brain_records):
    t1, t1c, t2, flair = range(4)
    for rec in brain_records:
        image, label, roi = _arrays(rec)
        normal = (roi > 0) & (label == 0)
        edema, necrosis, enhancing = label == 2, label == 1, label == 4
        assert image[..., flair][edema].mean() > 1.2 * image[..., flair][normal].mean()
        assert image[..., t2][edema].mean() > image[..., t2][normal].mean()
        assert image[..., t1c][enhancing].mean() > 1.2 * image[..., t1c][necrosis].mean()
        assert image[..., t1c][enhancing].mean() > image[..., t1c][normal].mean()
        assert image[..., t1][necrosis].mean() < image[..., t1][normal].mean()
        # Rician noise: the air around the head is dark but not zero
        air = image[0, :4, :4]
        assert 0.0 < air.mean() < 0.2 * image[..., t1][normal].mean()


def test_brain_tumour_lies_in_one_hemisphere_and_varies(brain_records):
    centres = []
    for rec in brain_records:
        _, label, _ = _arrays(rec)
        z, y, x = np.nonzero(np.isin(label, (1, 4)))
        centres.append(rec.image.TransformContinuousIndexToPhysicalPoint((x.mean(), y.mean(), z.mean())))
    assert all(abs(c[0]) > 5.0 for c in centres)  # off the midline
    assert len({tuple(np.round(c)) for c in centres}) == len(centres)


# ----------------------------------------------------------------- abdominal CT


def test_ct_labels_and_lesions(ct_records):
    for rec in ct_records:
        _, label, _ = _arrays(rec)
        assert set(np.unique(label)) == {0, 1, 2, 3, 4, 5}  # lesions forced on in CT_ARGS
        assert (label == 4).sum() > 0 and (label == 5).sum() > 0
        # liver lesions lie in the liver: every one touches liver voxels
        around = ndimage.binary_dilation(label == 4, CUBE) & (label != 4)
        assert (label[around] == 1).mean() > 0.5


def test_ct_without_lesions():
    for rec in generate_abdomen_ct(n_patients=2, seed=5, liver_lesion_fraction=0.0, kidney_lesion_fraction=0.0):
        _, label, _ = _arrays(rec)
        assert set(np.unique(label)) == {0, 1, 2, 3}


def test_ct_hounsfield_units(ct_records):
    for rec in ct_records:
        image, label, roi = _arrays(rec)
        hu = image[..., 0].astype(float)
        liver = hu[label == 1].mean()
        assert 40.0 < liver < 80.0
        assert hu[roi == 0].mean() < -900.0  # air
        assert np.percentile(hu[roi > 0], 99.5) > 300.0  # the spine
        assert hu[label == 4].mean() < liver  # hypodense liver lesions
        assert -150.0 < hu[label == 3].mean() < 80.0 and -150.0 < hu[label == 2].mean() < 80.0
        assert -1024 <= hu.min() and hu.max() <= 3071


def test_ct_orientation_is_lps(ct_records):
    # identity direction: array x grows towards the patient's left, y towards the back
    for rec in ct_records:
        _, label, _ = _arrays(rec)
        x_liver = np.nonzero(label == 1)[2].mean()
        x_spleen = np.nonzero(label == 3)[2].mean()
        assert x_liver < 32 < x_spleen  # liver on the patient's right (image left), spleen left
        y_kidney = np.nonzero(label == 2)[1].mean()
        y_liver = np.nonzero(label == 1)[1].mean()
        assert y_kidney > y_liver  # kidneys are posterior
        z, _, x = np.nonzero(label == 2)
        assert z[x < 32].mean() < z[x >= 32].mean()  # z grows upwards: the right kidney lies lower


# ----------------------------------------------------------------- writing


@pytest.mark.parametrize("name, module", [("brain_mri", brain_mri), ("abdomen_ct", abdomen_ct)])
def test_records_write_in_the_canonical_layout(name, module, tmp_path):
    records = GENERATORS[name](n_patients=2, seed=0)
    manifest = write_dataset(
        records,
        tmp_path / name,
        class_names=CLASS_NAMES[name],
        modality="MRI" if name == "brain_mri" else "CT",
        channel_names=module.CHANNEL_NAMES,
        labels=module.LABEL_NAMES,
    )
    assert len(manifest) == 2 and (manifest["roi"] != "").all()
    back = read_manifest(tmp_path / name / "manifest.tsv")
    assert back["label"].isna().all()
    image = sitk.ReadImage(str(tmp_path / name / back["image"].iloc[0]))
    mask = sitk.ReadImage(str(tmp_path / name / back["mask"].iloc[0]))
    assert image.GetNumberOfComponentsPerPixel() == len(module.CHANNEL_NAMES)
    assert geometry_mismatches(image, mask) == []
    assert set(np.unique(sitk.GetArrayFromImage(mask))) <= set(module.LABEL_NAMES)
