"""Unit tests of the registration family: the Jacobian statistics against hand-computed
fields (identity, a linear map, a fold), one field convention for SimpleITK and MONAI,
known deformations that are smooth and seeded, the recovery of a known deformation by
SimpleITK's baseline and by a VoxelMorph trained here, the networks and losses, the
pairs' bad input, and the generator's anatomical labels."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from casebook.layout import write_dataset
from casebook.synthetic.brain_mri import ANATOMY_NAMES, generate_brain_mri
from casebook.tasks.registration.baselines import register_simpleitk
from casebook.tasks.registration.fields import ddf_from_transform, random_field, warp_array
from casebook.tasks.registration.losses import regularization_loss, similarity_loss
from casebook.tasks.registration.metrics import field_error_mm, jacobian_determinant, jacobian_stats, label_overlap
from casebook.tasks.registration.networks import NETWORKS, build_registration_network
from casebook.tasks.registration.pairs import PairError, load_pairs, save_pairs, simulate_pairs

DEFORMATION = {"max_displacement_mm": 9.0, "smoothness_mm": 18.0, "rotation_degrees": 4.0, "translation_mm": 6.0}
LABELS = [1, 2, 3, 4]
CLASS_NAMES = [ANATOMY_NAMES[v] for v in range(6)]


def _grid(shape=(24, 30)):
    return np.meshgrid(np.arange(shape[0], dtype=np.float64), np.arange(shape[1], dtype=np.float64), indexing="ij")


def test_identity_field_has_unit_jacobian_and_no_folding():
    stats = jacobian_stats(np.zeros((2, 24, 30), np.float32))
    assert stats == {"sdlogj": 0.0, "folding_percent": 0.0}
    assert np.allclose(jacobian_determinant(np.zeros((2, 24, 30), np.float32)), 1.0)


def test_linear_field_has_the_determinant_of_its_matrix():
    rows, cols = _grid()
    a = np.array([[0.2, 0.1], [-0.3, 0.5]])  # d(row shift)/d(row, col), d(col shift)/d(row, col)
    ddf = np.stack([a[0, 0] * rows + a[0, 1] * cols, a[1, 0] * rows + a[1, 1] * cols]).astype(np.float32)
    det = jacobian_determinant(ddf)[1:-1, 1:-1]
    assert np.allclose(det, np.linalg.det(np.eye(2) + a), atol=1e-5)
    assert jacobian_stats(ddf)["sdlogj"] == pytest.approx(0.0, abs=1e-6)


def test_a_fold_is_counted_where_the_field_reverses_the_axis():
    rows, cols = _grid()
    # columns 0-14 untouched, 15-29 mirrored: x + u = 2 * 15 - x there, det = -1
    ddf = np.stack([np.zeros_like(cols), np.where(cols >= 15, 30.0 - 2.0 * cols, 0.0)]).astype(np.float32)
    det = jacobian_determinant(ddf)
    assert (det[:, 17:-1] < 0).all() and np.allclose(det[:, 1:13], 1.0)
    folding = jacobian_stats(ddf)["folding_percent"]
    interior = det[2:-2, 2:-2]
    assert folding == pytest.approx(100 * np.mean(interior <= 0)) and 40 < folding < 60


def test_simpleitk_transform_and_monai_warp_agree():
    image = np.random.default_rng(0).random((30, 40)).astype(np.float32)
    spacing = (2.0, 3.0)
    transform = sitk.Euler2DTransform((40 * 3.0 / 2, 30 * 2.0 / 2), 0.1, (3.0, -2.0))
    warped = warp_array(image, ddf_from_transform(transform, image.shape, spacing))
    itk_image = sitk.GetImageFromArray(image)
    itk_image.SetSpacing((spacing[1], spacing[0]))
    expected = sitk.GetArrayFromImage(sitk.Resample(itk_image, itk_image, transform, sitk.sitkLinear, 0.0))
    assert np.abs(warped - expected)[4:-4, 4:-4].max() < 1e-4


def test_random_fields_are_seeded_smooth_and_bounded():
    draw = lambda seed: random_field((64, 64), (3.0, 3.0), np.random.default_rng(seed), **DEFORMATION)  # noqa: E731
    first, again, other = draw(1), draw(1), draw(2)
    assert np.array_equal(first, again) and not np.allclose(first, other)
    assert jacobian_stats(first)["folding_percent"] == 0.0
    assert np.hypot(*first).max() * 3.0 < DEFORMATION["max_displacement_mm"] + 2 * DEFORMATION["translation_mm"] + 64 * 3.0 * 0.1


@pytest.fixture(scope="module")
def brain_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("registration") / "data"
    records = generate_brain_mri(n_patients=4, size=(48, 48, 8), spacing=(4.0, 4.0, 20.0), seed=5, labels="anatomy", tumour_fraction=0.0)
    write_dataset(records, out, class_names=CLASS_NAMES, modality="MRI")
    return out


@pytest.fixture(scope="module")
def pairs(brain_data):
    return simulate_pairs(brain_data, {"slices": 3, "deformation": DEFORMATION}, seed=3)


def test_pairs_hold_the_true_field(pairs, tmp_path):
    assert len(pairs) == 12 and pairs.moving.shape == (12, 48, 48) and pairs.true_ddf.shape == (12, 2, 48, 48)
    for i in range(len(pairs)):  # the fixed labels are the moving labels warped by the true field
        assert np.array_equal(warp_array(pairs.moving_label[i], pairs.true_ddf[i], labels=True), pairs.fixed_label[i])
    save_pairs(pairs, tmp_path / "pairs.npz")
    again = load_pairs(tmp_path / "pairs.npz", [pairs.image_id[0]])
    assert len(again) == 3 and set(again.image_id) == {pairs.image_id[0]}


def _scores(pairs, fields):
    dice = [
        label_overlap(warp_array(ml, f, labels=True), fl, LABELS, tuple(s))["dice"]
        for ml, fl, f, s in zip(pairs.moving_label, pairs.fixed_label, fields, pairs.spacing)
    ]
    error = [field_error_mm(f, t, r, tuple(s)) for f, t, r, s in zip(fields, pairs.true_ddf, pairs.fixed_roi, pairs.spacing)]
    return float(np.mean(dice)), float(np.mean(error))


def test_simpleitk_recovers_a_known_deformation(pairs):
    some = pairs.subset(np.arange(len(pairs)) < 4)
    before = _scores(some, np.zeros_like(some.true_ddf))
    after = _scores(some, np.stack([register_simpleitk(m, f, tuple(s)) for m, f, s in zip(some.moving, some.fixed, some.spacing)]))
    assert after[0] > before[0] + 0.05 and after[1] < 0.6 * before[1], (before, after)


def test_voxelmorph_trained_here_recovers_known_deformations_of_unseen_patients(pairs, tmp_path):
    from casebook.tasks.registration.train import fit, load_registrar, predict_fields

    train, val = pairs.subset(pairs.patient != pairs.patient[-1]), pairs.subset(pairs.patient == pairs.patient[-1])
    cfg = {
        "network": {"name": "voxelmorph", "kwargs": {"channels": [8, 16, 16, 16], "final_conv_channels": [8]}},
        "seed": 0,
        "device": "cpu",
        "train": {"epochs": 25, "batch_size": 3, "optimizer": "adam", "lr": 0.003, "schedule": {"name": "none"}},
    }
    summary = fit(cfg, train, val, tmp_path, labels=LABELS)
    model = load_registrar(tmp_path / "best_checkpoint.pt", cfg["network"])
    before, after = _scores(val, np.zeros_like(val.true_ddf)), _scores(val, predict_fields(model, val.moving, val.fixed))
    assert summary["best_val_dice"] == pytest.approx(after[0], abs=1e-6)
    assert after[0] > before[0] + 0.03 and after[1] < before[1], (before, after)


@pytest.mark.parametrize("name", NETWORKS)
def test_every_network_maps_a_pair_to_a_field(name):
    import torch

    model = build_registration_network({"name": name}, (32, 32))
    out = model(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 2, 32, 32) and torch.isfinite(out).all()


def test_a_size_the_network_cannot_halve_is_refused():
    with pytest.raises(ValueError, match=r"\(30, 30\) is not divisible by 2\*\*3.*registration.size"):
        build_registration_network({"name": "voxelmorph"}, (30, 30))


def test_losses_from_config_and_unknown_ones_refused():
    import torch

    x = torch.rand(2, 1, 16, 16)
    assert float(similarity_loss({"name": "lncc", "kernel_size": 5})(x, x)) == pytest.approx(-1.0, abs=1e-3)
    assert float(similarity_loss({"name": "mi"})(x, x)) < float(similarity_loss({"name": "mi"})(x, torch.rand(2, 1, 16, 16)))
    regularize, weight = regularization_loss({"name": "diffusion", "weight": 0.5})
    assert weight == 0.5 and float(regularize(torch.zeros(1, 2, 16, 16))) == 0.0
    with pytest.raises(ValueError, match="unknown similarity 'ssd'"):
        similarity_loss({"name": "ssd"})
    with pytest.raises(ValueError, match="unknown regularization 'tv'"):
        regularization_loss({"name": "tv"})


def test_bad_input_is_refused_naming_the_image(brain_data, tmp_path):
    with pytest.raises(PairError, match=r"brain_p0000: 8 axial slices, fewer than the 9 asked for \(registration.slices\)"):
        simulate_pairs(brain_data, {"slices": 9}, seed=0)
    with pytest.raises(PairError, match=r"brain_p0000 .*no channel 7 \(registration.fixed_channel\)"):
        simulate_pairs(brain_data, {"slices": 1, "fixed_channel": 7}, seed=0)
    unlabelled = tmp_path / "unlabelled"
    records = generate_brain_mri(n_patients=1, size=(32, 32, 8), spacing=(6.0, 6.0, 20.0), seed=1)
    stripped = [r.__class__(**{**vars(r), "mask": None}) for r in records]
    write_dataset(stripped, unlabelled, class_names=["background", "tumour"], modality="MRI")
    with pytest.raises(PairError, match="brain_p0000: no mask in the manifest"):
        simulate_pairs(unlabelled, {"slices": 1}, seed=0)


def test_anatomical_labels_leave_the_images_unchanged():
    tumour = next(generate_brain_mri(n_patients=1, size=(32, 32, 16), seed=4))
    anatomy = next(generate_brain_mri(n_patients=1, size=(32, 32, 16), seed=4, labels="anatomy"))
    assert np.array_equal(sitk.GetArrayFromImage(tumour.image), sitk.GetArrayFromImage(anatomy.image))
    values = set(np.unique(sitk.GetArrayFromImage(anatomy.mask)))
    assert {0, 1, 2, 4, 5} <= values <= set(ANATOMY_NAMES)
    with pytest.raises(ValueError, match="labels='tissue'"):
        next(generate_brain_mri(n_patients=1, labels="tissue"))


def test_pairwise_pairs_stay_inside_their_part_of_the_split(brain_data, pairs):
    ids = sorted(set(pairs.image_id))
    splits = {"folds": [{"train": ids[1:3], "val": ids[:1]}, {"train": ids[:1], "val": ids[1:3]}], "test": ids[3:]}
    inter = simulate_pairs(brain_data, {"slices": 2, "pairing": "pairwise"}, seed=0, splits=splits)
    # one group of one (fold 0's val) pairs with nobody; fold 1's val pair each other; one test image alone
    assert sorted(set(inter.image_id)) == ids[1:3] and len(inter) == 4
    assert np.isnan(inter.true_ddf).all()
    first = inter.subset(inter.image_id == ids[1])
    assert not np.array_equal(first.moving, first.fixed)


def test_atlas_pairs_register_every_other_image_to_a_training_image(brain_data):
    ids = [f"brain_p000{i}" for i in range(4)]
    splits = {"folds": [{"train": ids[1:3], "val": ids[:1]}], "test": ids[3:]}
    atlas = simulate_pairs(brain_data, {"slices": 2, "pairing": "atlas"}, seed=0, splits=splits)
    assert sorted(set(atlas.image_id)) == [ids[0], ids[2], ids[3]]  # ids[1], fold 0's first training image, is the atlas
    assert np.array_equal(atlas.fixed[0], atlas.fixed[2])  # the same atlas slice for every image
    with pytest.raises(PairError, match="registration.atlas 'brain_p0003' is a test image"):
        simulate_pairs(brain_data, {"slices": 1, "pairing": "atlas", "atlas": ids[3]}, seed=0, splits=splits)


def test_patients_whose_extents_do_not_overlap_are_refused_naming_both(tmp_path):
    records = list(generate_brain_mri(n_patients=2, size=(32, 32, 8), spacing=(6.0, 6.0, 20.0), seed=2, labels="anatomy"))
    far = records[1]
    for image in (far.image, far.mask, far.roi):
        image.SetOrigin((500.0, 0.0, 0.0))
    write_dataset(records, tmp_path / "data", class_names=CLASS_NAMES, modality="MRI")
    splits = {"folds": [{"train": [], "val": []}], "test": ["brain_p0000", "brain_p0001"]}
    with pytest.raises(PairError, match=r"brain_p0000 \(.*\) and brain_p0001 \(.*\): their physical extents .* do not overlap"):
        simulate_pairs(tmp_path / "data", {"slices": 1, "pairing": "pairwise"}, seed=0, splits=splits)


def test_the_cine_generator_draws_the_ejection_fraction_it_reports():
    from casebook.synthetic.cardiac_cine import generate_cardiac_cine

    records = list(generate_cardiac_cine(n_patients=2, frames=8, seed=3))
    assert [r.image_id for r in records[:2]] == ["cine_p0000_f00", "cine_p0000_f01"] and len(records) == 16
    for patient in (records[:8], records[8:]):
        labels = [sitk.GetArrayFromImage(r.mask) for r in patient]
        blood, wall = [(m == 1).sum() for m in labels], [(m == 2).sum() for m in labels]
        assert int(np.argmin(blood)) == 4  # end systole mid-cycle
        ef = 100 * (blood[0] - min(blood)) / blood[0]
        assert ef == pytest.approx(float(patient[0].attributes["ef_percent"]), abs=2.5)
        assert max(wall) / min(wall) < 1.03  # the myocardium keeps its area while it thickens


def _write_cines(folder, drop=()):
    """Three 4-frame cines in the canonical layout, without the images in ``drop``."""
    from casebook.synthetic.cardiac_cine import CLASS_NAMES as CINE_CLASSES
    from casebook.synthetic.cardiac_cine import generate_cardiac_cine

    records = [r for r in generate_cardiac_cine(n_patients=3, frames=4, seed=1) if r.image_id not in drop]
    write_dataset(records, folder, class_names=CINE_CLASSES, modality="MRI")
    return folder


def test_cine_pairs_join_end_diastole_to_every_frame_and_refuse_gaps(tmp_path):
    pairs = simulate_pairs(_write_cines(tmp_path / "cine"), {"slices": 2, "pairing": "cine"}, seed=0)
    assert len(pairs) == 3 * 3 * 2 and sorted(set(pairs.frame)) == [1, 2, 3]
    assert set(pairs.image_id) == {"cine_p0000_f00", "cine_p0001_f00", "cine_p0002_f00"}
    assert (pairs.thickness == 8.0).all() and np.isnan(pairs.true_ddf).all()
    data = _write_cines(tmp_path / "gap", drop={"cine_p0001_f02"})
    with pytest.raises(PairError, match=r"patient cine_p0001: cine frames \[0, 1, 3\]; need 0 \(end diastole\) to n - 1"):
        simulate_pairs(data, {"slices": 1, "pairing": "cine"}, seed=0)


def test_ejection_fraction_from_hand_made_volumes():
    from casebook.tasks.registration.cine import agreement, ejection_fractions, frame_volumes
    from casebook.tasks.registration.pairs import Pairs

    # one patient, two slices, frames 1 and 2: the blood pool 100 pixels at ED on each
    # slice, 60 and 50 (frame 1), 40 and 30 (frame 2); 2 x 2 mm pixels, 5 mm slices
    def label(n):
        out = np.zeros((20, 20), np.uint8)
        out.ravel()[:n] = 1
        return out

    moving = np.stack([label(100)] * 4)
    tracked = np.stack([label(60), label(50), label(40), label(30)])
    n = 4
    pairs = Pairs(
        moving=np.zeros((n, 20, 20)), fixed=np.zeros((n, 20, 20)), moving_label=moving, fixed_label=tracked,
        fixed_roi=np.ones((n, 20, 20)), true_ddf=np.zeros((n, 2, 20, 20)), spacing=np.full((n, 2), 2.0),
        patient=np.array(["p"] * n), image_id=np.array(["p_f00"] * n), slice=np.array([0, 1, 0, 1]),
        thickness=np.full(n, 5.0), frame=np.array([1, 1, 2, 2]),
    )  # fmt: skip
    volumes = frame_volumes(pairs, tracked)
    assert volumes.set_index("frame")["ml"].to_dict() == pytest.approx({0: 4.0, 1: 2.2, 2: 1.4})  # 20 ul a pixel
    ef = ejection_fractions(volumes).iloc[0]
    assert ef["es_frame"] == 2 and ef["ef_percent"] == pytest.approx(65.0)
    stats = agreement(np.array([50.0, 60.0]), np.array([52.0, 58.0]), np.array(["a", "b"]), n_boot=50, level=0.95, seed=0)
    assert stats["bias"] == 0.0 and stats["mae"]["mean"] == 2.0
