"""The restoration family's library (issue 15, in progress): low-dose CT simulation,
metrics, classical baselines, RED-CNN, and a denoiser trained here on the engine."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from casebook.analysis.stats import paired_difference
from casebook.engine.checkpoint import BEST, CHECKPOINT
from casebook.synthetic.abdomen_ct import generate_abdomen_ct
from casebook.tasks.restoration.baselines import BASELINES, noise_sd, tune
from casebook.tasks.restoration.data import SlicePairs, simulate_pairs
from casebook.tasks.restoration.dose import Scanner, hu_to_mu, line_integrals, low_dose_slice, mu_to_hu, reference_slice
from casebook.tasks.restoration.metrics import SOFT_TISSUE, image_quality, to_window
from casebook.tasks.restoration.networks import REDCNN, build_restoration_network
from casebook.tasks.restoration.train import fit, load_denoiser, restore

SCANNER = Scanner()


pytestmark = pytest.mark.usefixtures("torch_two_threads")


@pytest.fixture(scope="module")
def slices() -> list[tuple[str, np.ndarray, float]]:
    """Four axial slices (HU, 64 x 64 at 5 mm) of each of 8 synthetic abdomens."""
    out = []
    for record in generate_abdomen_ct(n_patients=8, size=(64, 64, 8), seed=3):
        volume = sitk.GetArrayFromImage(record.image).astype(np.float64)  # z, y, x
        out += [(record.patient_id, volume[z], record.image.GetSpacing()[0]) for z in (2, 3, 4, 5)]
    return out


@pytest.fixture(scope="module")
def pairs(slices) -> SlicePairs:
    return simulate_pairs(slices, [1.0, 0.25, 0.1], SCANNER, seed=0)


def _subset(pairs: SlicePairs, patients) -> SlicePairs:
    keep = np.isin(pairs.patient, list(patients))
    return SlicePairs(pairs.noisy[keep], pairs.reference[keep], pairs.level[keep], pairs.patient[keep])


# ---------------------------------------------------------------- dose simulation


def test_hu_and_attenuation_convert_both_ways():
    hu = np.array([-1000.0, 0.0, 40.0, 1000.0])
    assert hu_to_mu(hu)[0] == 0.0 and hu_to_mu(hu)[1] == pytest.approx(0.0192)
    np.testing.assert_allclose(mu_to_hu(hu_to_mu(hu)), hu)


def test_the_noiseless_projection_reconstructs_the_slice(slices):
    _, hu, spacing = slices[1]
    body = hu > -500
    error = np.abs(reference_slice(hu, spacing, SCANNER) - hu)[body]
    assert np.median(error) < 20.0  # FBP blurs edges a little; the tissue values come back


def test_line_integrals_are_in_physical_units():
    # a 40-pixel square of water at 2 mm in air: 80 mm of water along the beam at 0 degrees
    hu = np.full((64, 64), -1000.0)
    hu[12:52, 12:52] = 0.0
    sinogram = line_integrals(hu, 2.0, Scanner(n_angles=4))
    assert sinogram[:, 0].max() == pytest.approx(0.0192 * 80.0, rel=0.02)


def test_noise_grows_as_dose_falls_as_quantum_noise_does(pairs):
    sd = {}
    for dose in (1.0, 0.25, 0.1):
        at = pairs.at_level(dose)
        difference = (at.noisy - at.reference)[:, 16:48, 16:48]  # inside the body
        sd[dose] = difference.std()
        assert abs(difference.mean()) < 0.1 * sd[dose]  # noise, not a shift
    # Poisson counts: the noise sd scales as 1 / sqrt(dose)
    assert sd[0.25] / sd[1.0] == pytest.approx(2.0, rel=0.15)
    assert sd[0.1] / sd[1.0] == pytest.approx(np.sqrt(10.0), rel=0.15)


def test_the_simulation_is_seeded_per_slice(slices):
    _, hu, spacing = slices[0]
    one = low_dose_slice(hu, 0.1, spacing, SCANNER, np.random.default_rng(7))
    assert np.array_equal(one, low_dose_slice(hu, 0.1, spacing, SCANNER, np.random.default_rng(7)))
    assert not np.array_equal(one, low_dose_slice(hu, 0.1, spacing, SCANNER, np.random.default_rng(8)))
    first = simulate_pairs(slices[:3], [0.1], SCANNER, seed=0)
    more = simulate_pairs(slices[:5], [0.1], SCANNER, seed=0)
    assert np.array_equal(first.noisy, more.noisy[:3])  # adding slices leaves the earlier ones


def test_bad_dose_and_bad_slices_are_refused(slices):
    _, hu, spacing = slices[0]
    with pytest.raises(ValueError, match="dose must be a fraction"):
        low_dose_slice(hu, 1.5, spacing, SCANNER, np.random.default_rng(0))
    with pytest.raises(ValueError, match="square and 2D"):
        reference_slice(hu[:, :40], spacing, SCANNER)
    broken = hu.copy()
    broken[3, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        reference_slice(broken, spacing, SCANNER)


# ------------------------------------------------------------------------ metrics


def test_psnr_and_ssim_match_hand_computed_values():
    rng = np.random.default_rng(0)
    reference = rng.uniform(-100.0, 200.0, size=(2, 32, 32))
    shifted = reference + 40.0  # 0.1 of the 400 HU window everywhere (all inside it)
    np.testing.assert_allclose(image_quality(shifted, reference)["psnr"], 20.0, rtol=1e-4)  # 10 log10(1 / 0.1^2)
    same = image_quality(reference, reference)
    assert np.all(same["psnr"] == np.inf) or np.all(same["psnr"] > 90)
    np.testing.assert_allclose(same["ssim"], 1.0, atol=1e-6)
    np.testing.assert_allclose(same["ms_ssim"], 1.0, atol=1e-6)
    assert np.all(image_quality(shifted, reference)["ssim"] < 1.0)
    # MS-SSIM falls as noise grows
    rng = np.random.default_rng(0)
    noisy = [image_quality(reference + rng.normal(0, sd, reference.shape), reference)["ms_ssim"].mean() for sd in (5, 20, 80)]
    assert noisy[0] > noisy[1] > noisy[2] and np.isfinite(noisy).all()
    assert to_window(np.array([-1000.0, 40.0, 1000.0])).tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="low < high"):
        to_window(reference, (100, 100))


def test_paired_difference_over_patients():
    a = np.array([30.0, 31.0, 29.0, 33.0, 30.5, 32.0])
    patients = ["p1", "p1", "p2", "p2", "p3", "p3"]
    better = paired_difference(a + 1.0, a, patients, n_boot=200)
    assert better["difference"] == pytest.approx(1.0)
    assert better["ci_low"] == pytest.approx(1.0) and better["ci_high"] == pytest.approx(1.0) and better["p_value"] == 0.0
    assert paired_difference(a, a, patients, n_boot=200)["p_value"] == 1.0
    assert better["n_skipped"] == 0  # constant labels are not a reason to skip a resample here


# ---------------------------------------------------------------------- baselines


def test_noise_estimate_of_white_noise():
    rng = np.random.default_rng(0)
    ramp = np.outer(np.linspace(0.0, 100.0, 64), np.ones(64))  # the estimator ignores ramps
    assert noise_sd(ramp + rng.normal(0.0, 10.0, (64, 64))) == pytest.approx(10.0, rel=0.1)


def test_tuned_baselines_raise_psnr_over_the_low_dose_input(pairs):
    low = pairs.at_level(0.1)
    score = lambda restored, reference: image_quality(restored, reference)["psnr"]  # noqa: E731
    val, test = slice(0, 8), slice(8, None)
    noisy_psnr = score(low.noisy[test], low.reference[test]).mean()
    for name, baseline in BASELINES.items():
        params, validation_psnr = tune(name, low.noisy[val], low.reference[val], score)
        assert validation_psnr > score(low.noisy[val], low.reference[val]).mean()
        restored = np.stack([baseline(x, **params) for x in low.noisy[test]])
        assert score(restored, low.reference[test]).mean() > noisy_psnr + 2.0, name


# ----------------------------------------------------------------------- networks


@pytest.mark.parametrize("spatial_dims, shape", [(2, (2, 1, 23, 30)), (3, (1, 1, 21, 22, 25))])
def test_redcnn_keeps_the_shape_in_2d_and_3d(spatial_dims, shape):
    net = REDCNN(spatial_dims=spatial_dims, channels=8)
    assert net(torch.rand(shape)).shape == shape
    with pytest.raises(ValueError, match="at least 21 pixels"):
        net(torch.rand(shape[:-1] + (12,)))


def test_the_residual_unet_keeps_the_shape_and_unknown_networks_are_refused():
    net = build_restoration_network({"name": "unet", "kwargs": {"features": [8, 8, 16, 32, 64, 8]}})
    x = torch.rand(2, 1, 32, 32)
    assert net(x).shape == x.shape
    # MONAI's UNet would instance-normalise its one output channel (a fixed contrast)
    single = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm2d) and m.num_features == 1]
    assert single == []
    with pytest.raises(ValueError, match="unknown restoration network 'gan'"):
        build_restoration_network({"name": "gan"})


# ----------------------------------------------------------------------- training


def test_a_denoiser_trained_here_raises_held_out_psnr_over_the_low_dose_input(pairs, tmp_path):
    patients = sorted(set(pairs.patient))
    train, val, test = (_subset(pairs, ids) for ids in (patients[:5], patients[5:6], patients[6:]))
    train, val = (SlicePairs(*(getattr(p, f)[p.level < 1] for f in ("noisy", "reference", "level", "patient"))) for p in (train, val))
    cfg = {
        "network": {"name": "redcnn", "kwargs": {"channels": 16}},
        "train": {"epochs": 20, "batch_size": 4, "optimizer": "adam", "lr": 0.001},
        "seed": 0,
        "device": "cpu",
    }
    summary = fit(cfg, train, val, tmp_path)
    assert {CHECKPOINT, BEST, "model.pt", "history.tsv"} <= {p.name for p in tmp_path.iterdir()}
    assert summary["n_train"] == len(train) and 1 <= summary["best_epoch"] <= 20
    low = test.at_level(0.1)
    model = load_denoiser(tmp_path / "model.pt", cfg["network"])
    restored = image_quality(restore(model, low.noisy, SOFT_TISSUE), low.reference)["psnr"]
    noisy = image_quality(low.noisy, low.reference)["psnr"]
    gain = paired_difference(restored, noisy, low.patient, n_boot=200)
    # the same RED-CNN untrained (random weights) loses about 6 dB here
    assert gain["difference"] > 1.0 and gain["ci_low"] > 0.0


# ---------------------------------------------------------------- thick slices


def test_thick_slices_of_a_volume_constant_along_z_interpolate_back_exactly():
    from casebook.tasks.restoration.thick_slices import thicken

    rng = np.random.default_rng(0)
    image = np.repeat(rng.normal(size=(1, 20)), 24, axis=0)  # (z, x): every slice alike
    np.testing.assert_allclose(thicken(image, 4, (1.0, 2.0)), image, atol=1e-9)


def test_thick_slices_lose_detail_along_z_only_and_more_for_thicker_slices():
    from casebook.tasks.restoration.thick_slices import thicken

    z = np.arange(48)[:, None]
    image = np.sin(2 * np.pi * z / 12.0) * np.ones((1, 16))  # detail along z only
    errors = {f: np.abs(thicken(image, f, (1.0, 1.0)) - image)[8:-8].mean() for f in (2, 4)}
    assert 0 < errors[2] < errors[4]
    # columns stay identical: nothing happens along x
    assert np.allclose(thicken(image, 4, (1.0, 1.0)), thicken(image, 4, (1.0, 1.0))[:, :1])
    # a slab's centre lies where its thin slices' centre does: a linear ramp is kept away
    # from the ends (ITK's B-spline mirrors at the boundary); half a slice off would shift it
    ramp = np.arange(48, dtype=float)[:, None] * np.ones((1, 4))
    np.testing.assert_allclose(thicken(ramp, 2, (1.0, 1.0))[12:-12], ramp[12:-12], atol=0.01)


def test_a_slice_factor_that_does_not_divide_the_slices_and_a_missing_channel_are_refused(tmp_path):
    import SimpleITK as sitk

    from casebook.tasks.restoration.simulate import SliceError
    from casebook.tasks.restoration.thick_slices import coronal_slices, thicken

    with pytest.raises(SliceError, match=r"brain_p0003: a slice factor of 5 does not divide its 24 slices"):
        thicken(np.zeros((24, 8)), 5, (1.0, 1.0), "brain_p0003")
    path = tmp_path / "two_channels.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 8, 8, 2), np.float32), isVector=True), str(path))
    slices, spacing = coronal_slices(path, "img", 2, 1)
    assert len(slices) == 2 and slices[0].shape == (6, 8) and spacing == (1.0, 1.0)
    with pytest.raises(SliceError, match=r"img \(.*two_channels.nii.gz\): no channel 2"):
        coronal_slices(path, "img", 2, 2)


# ---------------------------------------------------------------- contrast translation


def test_histogram_matching_gives_the_source_the_reference_intensities():
    from casebook.tasks.restoration.translation import histogram_match

    rng = np.random.default_rng(0)
    source = np.zeros((40, 40))
    source[10:30, 10:30] = rng.normal(200, 20, (20, 20))  # foreground above the mean
    reference = np.zeros((40, 40))
    reference[5:35, 5:35] = rng.normal(700, 50, (30, 30))
    matched = histogram_match(source, reference)
    foreground = matched[10:30, 10:30]
    assert abs(np.median(foreground) - 700) < 40 and abs(foreground.std() - 50) < 20
    assert np.corrcoef(foreground.ravel(), source[10:30, 10:30].ravel())[0, 1] > 0.95  # order kept


def test_translation_needs_two_different_channels_of_a_multichannel_image(tmp_path):
    import SimpleITK as sitk

    from casebook.tasks.restoration.simulate import SliceError
    from casebook.tasks.restoration.translation import channel_slices

    path = tmp_path / "four.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(6 * 8 * 8 * 4, dtype=np.float32).reshape(6, 8, 8, 4), isVector=True), str(path))
    pairs = channel_slices(path, "case", 2, 0, 3)
    assert len(pairs) == 2 and pairs[0][0].shape == (8, 8) and np.all(pairs[0][1] - pairs[0][0] == 3)
    with pytest.raises(SliceError, match="case: the source and target channel are both 1"):
        channel_slices(path, "case", 2, 1, 1)
    with pytest.raises(SliceError, match=r"case \(.*four.nii.gz\): no channel 4"):
        channel_slices(path, "case", 2, 0, 4)
    single = tmp_path / "one.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 8, 8), np.float32)), str(single))
    with pytest.raises(SliceError, match="needs a multi-channel 3D image"):
        channel_slices(single, "mono", 2, 0, 1)


def test_the_patch_discriminator_learns_to_tell_outputs_from_references():
    from casebook.tasks.restoration.adversarial import Adversary

    torch.manual_seed(0)
    adversary = Adversary({"channels": 8, "layers": 2, "lr": 0.002}, "cpu")
    inputs = torch.rand(8, 1, 32, 32)
    references = inputs.clone()  # the truth: the input itself
    outputs = inputs + 0.5 * torch.randn_like(inputs)  # a bad generator: noise added
    losses = [adversary.step(inputs, outputs, references) for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0]
    # the generator is told its noisy outputs look fake, and a faithful output less so
    assert adversary.generator_loss(inputs, outputs) > adversary.generator_loss(inputs, references)


# ---------------------------------------------------------------- missing regions (inpainting)


def test_holes_are_centred_on_the_object_inside_the_slice_and_a_hole_too_large_is_refused():
    from casebook.tasks.restoration.inpainting import place_hole
    from casebook.tasks.restoration.simulate import SliceError

    image = np.zeros((40, 40))
    image[20:36, 4:14] = 1.0  # the object: a bright block off-centre
    for seed in range(30):
        r, c, h, w = place_hole(image, 8, np.random.default_rng(seed))
        assert (h, w) == (8, 8) and 0 <= r and r + h <= 40 and 0 <= c and c + w <= 40
        assert image[r + h // 2, c + w // 2] == 1.0  # its centre on the object
    with pytest.raises(SliceError, match="brain_p0001: a hole of 40 pixels does not fit in its 40 x 40 slices"):
        place_hole(image, 40, np.random.default_rng(0), "brain_p0001")


def test_biharmonic_filling_keeps_the_known_pixels_and_recovers_a_smooth_ramp():
    from casebook.tasks.restoration.inpainting import cut_and_fill

    rows, cols = np.mgrid[0:32, 0:32].astype(float)
    ramp = 3.0 * rows - 2.0 * cols + 100.0  # biharmonic: the fill is exact
    filled = cut_and_fill(ramp, (10, 12, 8, 8))
    np.testing.assert_allclose(filled, ramp, atol=1e-6)
    textured = ramp + np.random.default_rng(0).normal(0, 5, ramp.shape)
    filled = cut_and_fill(textured, (10, 12, 8, 8))
    outside = np.ones(ramp.shape, bool)
    outside[10:18, 12:20] = False
    np.testing.assert_array_equal(filled[outside], textured[outside])
    # smooth where it guessed: the noise it cannot know is not made up
    roughness = lambda image: np.abs(np.diff(image - ramp, axis=1))[11:17, 13:19].mean()  # noqa: E731
    assert roughness(filled) < 0.5 * roughness(textured)


def test_missing_region_pairs_are_seeded_per_slice_and_keep_their_holes(tmp_path):
    from casebook import provenance
    from casebook.tasks.restoration.inpainting import missing_region_pairs
    from casebook.tasks.restoration.simulate import load_pairs, publish_pairs

    rng = np.random.default_rng(0)
    slices = [(f"p{i}", f"img{i}", rng.uniform(0, 100, (32, 32))) for i in range(3)]
    pairs = missing_region_pairs(slices, [4, 8], seed=5)
    assert pairs.region.shape == (6, 4) and sorted(set(pairs.level.tolist())) == [4.0, 8.0]
    np.testing.assert_array_equal(missing_region_pairs(slices[:2], [4, 8], seed=5).region, pairs.region[:4])
    outputs = {"pairs": str(tmp_path / "pairs.npz"), "provenance": str(tmp_path / "provenance.json")}
    publish_pairs(pairs, outputs, rule="simulate_missing_region", inputs=[], settings={}, seed=5, started=provenance.now(), code={})
    loaded = load_pairs(outputs["pairs"], ["img1"])
    np.testing.assert_array_equal(loaded.region, pairs.region[2:4])
    np.testing.assert_array_equal(loaded.at_level(8.0).region, pairs.region[3:4])


def test_region_metrics_score_the_hole_only_and_match_hand_computed_values():
    from casebook.tasks.restoration.evaluate import paste_outside
    from casebook.tasks.restoration.metrics import region_quality

    rng = np.random.default_rng(0)
    reference = rng.uniform(0.0, 0.8, size=(2, 32, 32))
    boxes = np.array([[4, 6, 8, 8], [20, 20, 10, 6]])
    worse = reference + rng.normal(0, 0.3, reference.shape)  # wrong everywhere
    pasted = paste_outside(worse, reference, boxes)
    for i, (r, c, h, w) in enumerate(boxes):
        outside = np.ones((32, 32), bool)
        outside[r : r + h, c : c + w] = False
        np.testing.assert_array_equal(pasted[i][outside], reference[i][outside])
    shifted = reference.copy()
    shifted[0, 4:12, 6:14] += 0.1  # 0.1 of the window inside the first hole only
    quality = region_quality(shifted, reference, boxes, (0.0, 1.0))
    assert quality["psnr"][0] == pytest.approx(20.0, rel=1e-4) and quality["psnr"][1] == np.inf
    assert quality["ssim"][0] < 1.0 and quality["ssim"][1] == pytest.approx(1.0)
    # the same error outside the hole does not count
    elsewhere = reference.copy()
    elsewhere[0, 20:28, 20:28] += 0.1
    assert region_quality(elsewhere, reference, boxes[:1].repeat(2, 0), (0.0, 1.0))["psnr"][0] == np.inf
    with pytest.raises(ValueError, match="not inside"):
        region_quality(reference[:1], reference[:1], np.array([[28, 28, 8, 8]]), (0.0, 1.0))


# ---------------------------------------------------------------- conditional diffusion


def test_a_conditional_diffusion_restorer_samples_the_correction_its_input_asks_for(tmp_path):
    """The target is a contrast inversion of the input (y = 400 - x on a [0, 400] window):
    the residual depends on the input everywhere, so only a model that reads its
    condition channel can restore it."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:16, 0:16]

    def pairs_of(n: int, first: int) -> SlicePairs:
        images = []
        for _ in range(n):
            r0, c0, radius = rng.uniform(4, 12), rng.uniform(4, 12), rng.uniform(2, 5)
            images.append(np.where((rows - r0) ** 2 + (cols - c0) ** 2 < radius**2, 320.0, 80.0) + rng.normal(0, 5, rows.shape))
        x = np.stack(images)
        patients = np.array([f"p{first + i}" for i in range(n)])
        return SlicePairs(x, 400.0 - x, np.ones(n), patients, patients)

    train, val, test = pairs_of(128, 0), pairs_of(16, 200), pairs_of(16, 300)
    network = {"name": "diffusion", "kwargs": {"channels": [16, 32], "steps": 10}}
    cfg = {
        "network": network,
        "train": {"epochs": 30, "batch_size": 16, "optimizer": "adam", "lr": 0.003},
        "restoration": {"window": [0, 400]},
        "seed": 0,
        "device": "cpu",
    }
    fit(cfg, train, val, tmp_path)
    model = load_denoiser(tmp_path / "model.pt", network)
    restored = restore(model, test.noisy, (0, 400))
    np.testing.assert_array_equal(restored, restore(model, test.noisy, (0, 400)))  # a fixed seed: the same output
    gain = image_quality(restored, test.reference, (0, 400))["psnr"] - image_quality(test.noisy, test.reference, (0, 400))["psnr"]
    assert gain.mean() > 6.0, gain  # over the inverted input; the same model untrained gains 0.5 dB
    with pytest.raises(ValueError, match="not to the diffusion restorer"):
        fit({**cfg, "train": {**cfg["train"], "adversarial": {}}}, train, val, tmp_path / "gan")


# ---------------------------------------------------------------- downstream segmentation


def test_slice_dice_matches_hand_computed_values_and_scores_empty_in_both_as_one():
    from casebook.tasks.restoration.downstream import region, slice_dice

    truth = np.zeros((4, 8, 8), bool)
    truth[0, :4] = truth[1, :4] = truth[2, :4] = True
    prediction = np.zeros_like(truth)
    prediction[0, :4] = True  # identical
    prediction[1, 4:] = True  # disjoint
    prediction[2, :2] = True  # half of it: 2 * 16 / (32 + 16)
    np.testing.assert_allclose(slice_dice(prediction, truth), [1.0, 0.0, 2 / 3, 1.0])  # the last: empty in both
    labels = np.array([[0, 1, 2], [3, 4, 0]])
    np.testing.assert_array_equal(region(labels, [1, 2, 4]), [[False, True, True], [False, True, False]])


def test_a_downstream_segmenter_trained_here_finds_the_region_and_loses_it_on_blurred_slices(tmp_path):
    from scipy.ndimage import gaussian_filter

    from casebook.tasks.restoration.downstream import fit_segmenter, segment, slice_dice

    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:32, 0:32]

    def discs(n: int) -> tuple[np.ndarray, np.ndarray]:
        masks = np.stack([(rows - rng.uniform(8, 24)) ** 2 + (cols - rng.uniform(8, 24)) ** 2 < rng.uniform(9, 36) for _ in range(n)])
        return np.where(masks, 700.0, 300.0) + rng.normal(0, 40, masks.shape), masks

    train, val, test = discs(48), discs(12), discs(16)
    settings = {"epochs": 8, "batch_size": 8, "lr": 0.003, "features": [8, 8, 16, 32, 64, 8]}
    model, summary = fit_segmenter(train, val, (0, 1000), settings, tmp_path, seed=0, device="cpu")
    assert (tmp_path / "model.pt").exists() and summary["best_val_dice"] > 0.8
    sharp = slice_dice(segment(model, test[0], (0, 1000)), test[1]).mean()
    assert sharp > 0.8, sharp
    # the same discs blurred and contrast-flattened (a bad restoration): the segmenter finds less
    blurred = np.stack([gaussian_filter(0.3 * (x - 500) + 500, 3) for x in test[0]])
    assert slice_dice(segment(model, blurred, (0, 1000)), test[1]).mean() < sharp - 0.1
