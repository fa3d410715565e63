"""The generation family's parts: the sample metrics against hand computations, the
memorization check (a planted copy is flagged, a fresh image is not), patient-level
fractions, the leakage guard, and a class-conditional diffusion model whose samples the
judge recognises as their class."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from casebook.tasks.generation.data import ImageError, ImageSet, as_2d, to_network, to_unit
from casebook.tasks.generation.diffusion import sample
from casebook.tasks.generation.judge import fit_classifier, predict_proba
from casebook.tasks.generation.metrics import frechet_distance, memorization, memorization_threshold, precision_recall
from casebook.tasks.generation.train import fit, load_generator
from casebook.tasks.generation.utility import LeakageError, check_generator_data, patient_fraction

pytestmark = pytest.mark.usefixtures("torch_two_threads")


def test_frechet_distance_matches_the_closed_form_computed_by_hand():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 5))
    b = rng.normal(size=(300, 5)) * np.array([1, 2, 1, 0.5, 1]) + np.array([1, 0, 0, 0, 3])
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # a shift of the mean by d adds d^2
    assert frechet_distance(a, a + np.array([2.0, 0, 0, 0, 0])) == pytest.approx(4.0, rel=1e-6)


def test_precision_and_recall_tell_fidelity_from_coverage():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [20.0, 0.0]])
    real = np.concatenate([rng.normal(c, 1.0, size=(100, 2)) for c in centres])
    same = precision_recall(real, np.concatenate([rng.normal(c, 1.0, size=(100, 2)) for c in centres]))
    assert same["precision"] > 0.9 and same["recall"] > 0.9
    one_mode = precision_recall(real, rng.normal(centres[0], 1.0, size=(200, 2)))  # faithful, half the data
    assert one_mode["precision"] > 0.9 and 0.35 < one_mode["recall"] < 0.6
    far = precision_recall(real, rng.normal([100.0, 100.0], 1.0, size=(200, 2)))
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    with pytest.raises(ValueError, match="more than 3 points"):
        precision_recall(real, real[:3])


def _smooth_images(n: int, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """Random blobs: a population of distinct images."""
    yy, xx = np.mgrid[:size, :size]
    images = []
    for _ in range(n):
        cy, cx, r = rng.uniform(3, size - 3), rng.uniform(3, size - 3), rng.uniform(2, 5)
        images.append(np.tanh(3 - ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2) + rng.normal(0, 0.05, (size, size)))
    return np.stack(images)


def test_memorization_flags_a_planted_training_copy_and_passes_fresh_images():
    rng = np.random.default_rng(2)
    train, held_out, fresh = _smooth_images(200, rng), _smooth_images(100, rng), _smooth_images(50, rng)
    samples = np.concatenate([train[7:8], fresh])
    threshold = memorization_threshold(train, held_out, quantile=0.01)
    result = memorization(samples, train, threshold)
    assert result["flagged"][0] and result["nearest_index"][0] == 7 and result["distance"][0] == pytest.approx(0.0, abs=1e-6)
    # fresh images of the population are flagged at about the quantile's rate, not more
    assert result["flagged"][1:].mean() <= 0.06
    # a slightly perturbed copy is still a copy
    noisy_copy = train[3] + rng.normal(0, 0.01, train[3].shape)
    assert memorization(noisy_copy[None], train, threshold)["flagged"][0]


def _images(patients: list[str], labels: list[int], per_patient: int = 3) -> ImageSet:
    n = len(patients) * per_patient
    return ImageSet(
        images=np.zeros((n, 4, 4), dtype=np.float32),
        labels=np.repeat(labels, per_patient),
        patient=np.repeat(patients, per_patient),
        image_id=np.array([f"{p}_i{k}" for p in patients for k in range(per_patient)]),
    )


def test_a_fraction_keeps_whole_patients_of_every_class():
    patients = [f"p{i:02d}" for i in range(40)]
    images = _images(patients, [int(i < 10) for i in range(40)])
    part = patient_fraction(images, 0.25, seed=0)
    kept = set(part.patient)
    assert len(kept) == round(0.25 * 30) + round(0.25 * 10)
    assert len(part) == 3 * len(kept)  # all images of a kept patient
    assert set(part.labels) == {0, 1}
    assert patient_fraction(images, 0.01, seed=0).labels.tolist().count(1) == 3  # at least one patient a class
    assert patient_fraction(images, 1.0, seed=0) is images


def test_samples_of_a_model_that_saw_a_test_image_are_refused():
    card = {"data": {"train_image_ids": ["a", "b", "t1"]}}
    with pytest.raises(LeakageError, match=r"models/ddpm/fold_0/metadata.json.*1 validation or test image"):
        check_generator_data(card, "models/ddpm/fold_0/metadata.json", ["a", "b"], ["t1", "t2"])
    with pytest.raises(LeakageError, match="outside this fold's training split"):
        check_generator_data({"data": {"train_image_ids": ["a", "z"]}}, "card.json", ["a", "b"], ["t1"])
    check_generator_data({"data": {"train_image_ids": ["a"]}}, "card.json", ["a", "b"], ["t1"])


def test_images_are_scaled_to_the_network_range_and_must_be_2d():
    assert to_network(np.array([0, 127.5, 255, 300]), (0, 255)).tolist() == [-1.0, 0.0, 1.0, 1.0]
    assert to_unit(np.array([-1.0, 0.0, 1.0])).tolist() == [0.0, 0.5, 1.0]
    assert as_2d(np.zeros((1, 8, 8)), "img", "x.nii.gz").shape == (8, 8)
    with pytest.raises(ImageError, match=r"img7 \(x.nii.gz\): a generation study needs 2D images"):
        as_2d(np.zeros((3, 8, 8)), "img7", "x.nii.gz")


def _bars(n: int, rng: np.random.Generator, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: a horizontal bar, class 1: a vertical bar, at random positions."""
    images, labels = [], []
    for i in range(n):
        image = -np.ones((size, size), dtype=np.float32)
        at = rng.integers(3, size - 5)
        if i % 2:
            image[:, at : at + 3] = 1.0
        else:
            image[at : at + 3, :] = 1.0
        images.append(image + rng.normal(0, 0.05, image.shape).astype(np.float32))
        labels.append(i % 2)
    return np.clip(np.stack(images), -1, 1), np.array(labels)


def _set(images: np.ndarray, labels: np.ndarray) -> ImageSet:
    ids = np.array([f"bar{i}" for i in range(len(images))])
    return ImageSet(images.astype(np.float32), labels, ids, ids)


def test_a_class_conditional_diffusion_model_draws_images_of_the_asked_class(tmp_path):
    rng = np.random.default_rng(3)
    train, val = _set(*_bars(256, rng)), _set(*_bars(32, rng))
    cfg = {
        "network": {"name": "ddpm", "kwargs": {"channels": [16, 32], "norm_num_groups": 8}},
        "train": {"epochs": 25, "batch_size": 32, "optimizer": "adam", "lr": 0.003, "schedule": {"name": "none"}},
        "diffusion": {"timesteps": 200},
        "seed": 0,
    }
    summary = fit(cfg, train, val, 2, tmp_path)
    assert summary["best_epoch"] >= 5  # the validation noise loss kept falling
    model, process = load_generator(tmp_path / "model.pt", cfg["network"])
    labels = np.array([0, 1] * 16)
    samples, _ = sample(model, labels, sampler="ddim", steps=20, size=16, process=process, seed=0)
    again, _ = sample(model, labels, sampler="ddim", steps=20, size=16, process=process, seed=0)
    np.testing.assert_array_equal(samples, again)  # DDIM with a seed is reproducible
    judge = fit_classifier(train.images, train.labels, val.images, val.labels, 2, {"epochs": 3}, seed=0)
    assert judge.best_val_auc > 0.95
    accuracy = np.mean(predict_proba(judge.model, samples).argmax(1) == labels)
    assert accuracy >= 0.8, accuracy  # chance is 0.5
    torch.testing.assert_close(torch.tensor(samples.min()), torch.tensor(-1.0), atol=0.5, rtol=0)


def test_latent_diffusion_trains_its_autoencoder_first_and_samples_in_its_latent_space(tmp_path):
    from casebook.tasks.generation.autoencoder import kl_divergence
    from casebook.tasks.generation.networks import build_diffusion

    rng = np.random.default_rng(5)
    train, val = _set(*_bars(128, rng)), _set(*_bars(32, rng))
    network = {
        "name": "ldm",
        "kwargs": {"channels": [16, 32]},
        "autoencoder": {"epochs": 20, "lr": 0.005, "kwargs": {"channels": [16, 32]}},
    }
    cfg = {
        "network": network,
        "train": {"epochs": 6, "batch_size": 32, "optimizer": "adam", "lr": 0.003, "schedule": {"name": "none"}},
        "diffusion": {"timesteps": 200},
        "seed": 0,
    }
    summary = fit(cfg, train, val, 2, tmp_path)
    first = summary["latent"]
    history = (tmp_path / "autoencoder/history.tsv").read_text().splitlines()
    assert len(history) == 21 and first["best_val_l1"] < 0.5 * float(history[1].split("\t")[2])  # it learnt to reconstruct
    assert first["shape"] == [3, 8, 8]
    model, process = load_generator(tmp_path / "model.pt", network)
    assert float(model.scale) == pytest.approx(first["scale"]) and float(model.clip) == pytest.approx(first["clip"])
    latents = model.encode(torch.from_numpy(train.images)[:, None])
    assert latents.std().item() == pytest.approx(1.0, rel=1e-3) and latents.abs().max().item() == pytest.approx(first["clip"], rel=1e-5)
    samples, _ = sample(model, np.array([0, 1] * 8), sampler="ddim", steps=10, size=16, process=process, seed=0)
    assert samples.shape == (16, 16, 16) and samples.min() >= -1 and samples.max() <= 1
    # the autoencoder is frozen while the diffusion model trains: its weights are the best epoch's
    best = torch.load(tmp_path / "autoencoder/model.pt", weights_only=True)["state_dict"]
    for key, value in best.items():
        torch.testing.assert_close(model.autoencoder.state_dict()[key], value)
    with pytest.raises(ValueError, match="not a multiple of the autoencoder's downsampling"):
        build_diffusion(network, 2).latent_shape(15)
    assert kl_divergence(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_divergence(torch.ones(2, 3, 4, 4), torch.ones(2, 3, 4, 4)).item() == pytest.approx(24.0)  # 0.5 * 48 per latent
