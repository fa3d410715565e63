"""Tests of the seeded synthetic generators (the pipeline's embedded default data)."""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from casebook.layout import Record
from casebook.synthetic import CLASS_NAMES, GENERATORS, generate_cxr, generate_nodule_ct

# Small datasets: the whole module must run in a few seconds.
CXR_ARGS = {"n_patients": 24, "images_per_patient": (2, 5), "size": 64, "seed": 3}
CT_ARGS = {"n_patients": 14, "images_per_patient": (1, 3), "seed": 3}


@pytest.fixture(scope="module")
def cxr_records() -> list[Record]:
    return list(generate_cxr(**CXR_ARGS))


@pytest.fixture(scope="module")
def ct_records() -> list[Record]:
    return list(generate_nodule_ct(**CT_ARGS))


def _by_patient(records: list[Record]) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        groups[rec.patient_id].append(rec)
    return groups


def _separation_auc(labels, scores) -> float:
    """AUC of a score in its better direction (0.5 = useless, 1 = perfect)."""
    auc = roc_auc_score(labels, scores)
    return max(auc, 1.0 - auc)


# ----------------------------------------------------------------- shared behaviour


def test_registry_names_the_classification_generators():
    assert GENERATORS["cxr"] is generate_cxr and GENERATORS["nodule_ct"] is generate_nodule_ct
    assert {"brain_mri", "abdomen_ct"} <= set(GENERATORS)  # segmentation (tests/test_synthetic_seg.py)
    assert CLASS_NAMES["cxr"] == ["normal", "pneumonia"]
    assert CLASS_NAMES["nodule_ct"] == ["benign", "malignant"]


@pytest.mark.parametrize("name, args", [("cxr", CXR_ARGS), ("nodule_ct", CT_ARGS)])
def test_same_arguments_give_identical_data(name, args):
    small = {**args, "n_patients": 5}
    first = list(GENERATORS[name](**small))
    second = list(GENERATORS[name](**small))
    assert [r.image_id for r in first] == [r.image_id for r in second]
    for a, b in zip(first, second):
        assert a.label == b.label and a.spacing == b.spacing and a.source_checksum == b.source_checksum
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)


@pytest.mark.parametrize("name, args", [("cxr", CXR_ARGS), ("nodule_ct", CT_ARGS)])
def test_different_seed_gives_different_data(name, args):
    small = {**args, "n_patients": 4, "images_per_patient": (1, 1)}
    first = list(GENERATORS[name](**small))
    other = list(GENERATORS[name](**{**small, "seed": small["seed"] + 1}))
    for a, b in zip(first, other):
        assert not np.array_equal(a.image, b.image)


@pytest.mark.parametrize("name, args", [("cxr", CXR_ARGS), ("nodule_ct", CT_ARGS)])
def test_a_patient_does_not_depend_on_how_many_follow(name, args):
    # prevalence 0 fixes every label, so patient 0 must come out the same
    short = list(GENERATORS[name](**{**args, "n_patients": 2, "prevalence": 0.0}))
    long = list(GENERATORS[name](**{**args, "n_patients": 4, "prevalence": 0.0}))
    for a, b in zip(short, long):
        np.testing.assert_array_equal(a.image, b.image)


@pytest.mark.parametrize("generator", [generate_cxr, generate_nodule_ct])
@pytest.mark.parametrize("n_patients, prevalence", [(20, 0.4), (7, 0.5), (10, 0.0), (10, 1.0)])
def test_prevalence_counts_patients(generator, n_patients, prevalence):
    records = generator(n_patients=n_patients, prevalence=prevalence, images_per_patient=(1, 1), seed=1)
    labels = [r.label for r in records]
    assert len(labels) == n_patients
    assert sum(labels) == round(prevalence * n_patients)


@pytest.mark.parametrize("generator", [generate_cxr, generate_nodule_ct])
def test_invalid_arguments_are_rejected(generator):
    with pytest.raises(ValueError):
        list(generator(n_patients=3, prevalence=1.5))
    with pytest.raises(ValueError):
        list(generator(n_patients=3, images_per_patient=(3, 2)))
    with pytest.raises(TypeError):
        list(generator(n_patients=3, no_such_knob=1.0))


def test_positive_patients_are_shuffled():
    labels = [r.label for r in generate_cxr(n_patients=40, images_per_patient=(1, 1), seed=0)]
    assert labels != sorted(labels) and labels != sorted(labels, reverse=True)


@pytest.mark.parametrize("fixture", ["cxr_records", "ct_records"])
def test_patients_group_several_images_with_one_label(fixture, request):
    records = request.getfixturevalue(fixture)
    groups = _by_patient(records)
    lo, hi = (CXR_ARGS if fixture == "cxr_records" else CT_ARGS)["images_per_patient"]
    assert all(lo <= len(recs) <= hi for recs in groups.values())
    assert max(len(recs) for recs in groups.values()) > 1
    assert all(len({r.label for r in recs}) == 1 for recs in groups.values())
    assert len({r.image_id for r in records}) == len(records)


# ----------------------------------------------------------------- chest radiographs


def test_cxr_ids_shapes_dtypes_and_range(cxr_records):
    for rec in cxr_records:
        assert re.fullmatch(r"cxr_p\d{4}", rec.patient_id)
        assert re.fullmatch(re.escape(rec.patient_id) + r"_i\d{2}", rec.image_id)
        assert rec.image.shape == (64, 64) and rec.image.dtype == np.float32
        assert 0.0 <= rec.image.min() and rec.image.max() <= 1.0
        assert rec.spacing == pytest.approx((350 / 64, 350 / 64))
        assert rec.mask.shape == rec.image.shape and rec.mask.dtype == np.uint8
        assert rec.source_checksum


def test_cxr_other_size():
    rec = next(generate_cxr(n_patients=1, size=32, seed=0))
    assert rec.image.shape == (32, 32) and rec.spacing == pytest.approx((350 / 32, 350 / 32))


def test_cxr_masks_empty_for_normal_and_present_for_pneumonia(cxr_records):
    for rec in cxr_records:
        if rec.label == 0:
            assert not rec.mask.any()
        else:
            assert 0 < rec.mask.sum() < rec.mask.size // 4


def test_cxr_opacity_is_brighter_than_its_surroundings(cxr_records):
    # the mask marks where the image changed: the opacity fills in dark lung
    positives = [r for r in cxr_records if r.label == 1]
    inside = [r.image[r.mask > 0].mean() for r in positives]
    ring = []
    for r in positives:
        around = ndimage.binary_dilation(r.mask > 0, iterations=3) & ~(r.mask > 0)
        ring.append(r.image[around].mean())
    assert np.mean(np.array(inside) > np.array(ring)) > 0.7


def test_cxr_images_of_a_patient_look_alike(cxr_records):
    # the reason splits are made by patient: same-patient pairs are closer than others
    # (compared after smoothing and z-scoring, so per-image noise and exposure do not count)
    def anatomy(rec):
        smooth = ndimage.gaussian_filter(rec.image, 2.0)
        return (smooth - smooth.mean()) / smooth.std()

    groups = [recs for recs in _by_patient(cxr_records).values() if len(recs) > 1]
    same = np.mean([np.abs(anatomy(g[0]) - anatomy(g[1])).mean() for g in groups])
    other = np.mean([np.abs(anatomy(a[0]) - anatomy(b[0])).mean() for a, b in zip(groups, groups[1:])])
    assert same < 0.75 * other


def test_cxr_mean_intensity_does_not_give_the_label_away():
    records = list(generate_cxr(n_patients=60, seed=11))
    labels = [r.label for r in records]
    assert _separation_auc(labels, [r.image.mean() for r in records]) < 0.85
    assert _separation_auc(labels, [r.image.std() for r in records]) < 0.85


# ----------------------------------------------------------------- nodule CT


def test_ct_ids_shapes_dtypes_and_hu_range(ct_records):
    for rec in ct_records:
        assert re.fullmatch(r"ct_p\d{4}", rec.patient_id)
        assert re.fullmatch(re.escape(rec.patient_id) + r"_n\d{2}", rec.image_id)
        assert rec.image.shape == (12, 40, 40) and rec.image.dtype == np.int16
        assert rec.spacing == (0.8, 0.8, 2.5)
        assert -1024 <= rec.image.min() and rec.image.max() <= 3071
        assert rec.mask.shape == rec.image.shape and rec.mask.dtype == np.uint8


def test_ct_tissue_densities_are_plausible(ct_records):
    for rec in ct_records:
        lung = rec.image[rec.mask == 0]
        assert -920 < np.median(lung) < -780  # parenchyma
        assert rec.mask.any()  # every patch holds a nodule
        assert np.median(rec.image[rec.mask > 0]) > -300  # a solid nodule


def test_ct_nodule_is_flatter_in_voxels_along_z(ct_records):
    # 2.5 mm slices vs 0.8 mm pixels: a roundish nodule spans far fewer slices than rows
    ratios = []
    for rec in ct_records:
        z, y, _ = np.nonzero(rec.mask)
        ratios.append((np.ptp(z) + 1) / (np.ptp(y) + 1))
    assert np.median(ratios) < 0.6


def test_ct_shape_and_spacing_arguments():
    rec = next(generate_nodule_ct(n_patients=1, shape=(8, 32, 36), spacing=(1.0, 1.0, 2.0), seed=0))
    assert rec.image.shape == (8, 32, 36) and rec.spacing == (1.0, 1.0, 2.0)
    assert rec.mask.any()


def test_ct_simple_statistics_do_not_give_the_label_away():
    records = list(generate_nodule_ct(n_patients=40, seed=11))
    labels = [r.label for r in records]
    assert _separation_auc(labels, [r.image.mean() for r in records]) < 0.85
    assert _separation_auc(labels, [r.mask.sum() for r in records]) < 0.85  # nodule size


def test_cxr_sites_and_sex_are_per_patient_and_site_c_is_noisier():
    records = list(generate_cxr(n_patients=60, images_per_patient=(2, 2), size=32, seed=3, prevalence=0.0))
    by_patient = {}
    for r in records:
        by_patient.setdefault(r.patient_id, set()).add((r.attributes["site"], r.attributes["sex"]))
    assert all(len(v) == 1 for v in by_patient.values())  # one site and sex per patient
    sites = [next(iter(v))[0] for v in by_patient.values()]
    assert set(sites) == {"A", "B", "C"}
    # detector noise: the high-frequency residual after a small blur
    from scipy import ndimage

    def noise(site):
        imgs = [r.image for r in records if r.attributes["site"] == site]
        return np.mean([np.std(i - ndimage.gaussian_filter(i, 1.0)) for i in imgs])

    assert noise("C") > 1.3 * noise("A")  # 1.45 measured at size 32 (edges add to both)
    # the site does not change a patient's anatomy: one site everywhere gives the same
    # images for the site-A patients
    same = list(generate_cxr(n_patients=60, images_per_patient=(2, 2), size=32, seed=3, prevalence=0.0, site_noise_scale=(1.0, 1.0, 1.0)))
    for r, s in zip(records, same):
        if r.attributes["site"] != "C":
            np.testing.assert_array_equal(r.image, s.image)
