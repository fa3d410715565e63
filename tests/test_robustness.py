"""Tests for casebook.analysis.robustness: TorchIO perturbations, severity sweeps, breakdown
severities and the robustness rule's stage, on tiny images and a model trained here."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
from monai.networks.nets import DenseNet
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from casebook.analysis.robustness.breakdown import breakdown
from casebook.analysis.robustness.perturbations import DEFAULT_SEVERITIES, IDENTITY, PERTURBATIONS, merged_severities, perturb
from casebook.tasks.classification.robustness import robustness_stage, sweep

# one random draw per perturbation: these vary with the seed (ghosting's axis may not)
RANDOM = ("noise", "bias_field", "motion", "spike")
NETWORK = {"name": "densenet", "kwargs": {"init_features": 4, "growth_rate": 4, "block_config": [2, 2]}}


def _anatomy(shape: tuple[int, ...], n: int, seed: int = 0) -> np.ndarray:
    """(n, 1, *shape) z-scored images: a bright centred ellipse on a smooth texture,
    closer to a body than pure noise (a rotation of pure noise is as far from it at
    20 as at 40 degrees)."""
    rng = np.random.default_rng(seed)
    centre = (np.array(shape) - 1) / 2
    grid = np.indices(shape) - centre.reshape(-1, *[1] * len(shape))
    body = (sum((g / (0.35 * s)) ** 2 for g, s in zip(grid, shape)) < 1).astype(float)
    x = np.stack([2 * body + gaussian_filter(rng.normal(size=shape), 1.0) for _ in range(n)])
    return ((x - x.mean()) / x.std())[:, None].astype(np.float32)


def _blobs(n: int, seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Faint Gaussian blobs (peak 1, sd 1 pixel) at random places on noise of sd 0.3 in
    every other image: visible when clean, lost under noise a few times the image's sd."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    x = rng.normal(0, 0.3, (n, 1, size, size))
    yy, xx = np.mgrid[:size, :size]
    for i in np.flatnonzero(labels):
        cy, cx = rng.uniform(3, size - 4, 2)
        x[i, 0] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2)
    return x.astype(np.float32), labels


def _levels(name: str) -> list[float]:
    return [IDENTITY[name], *DEFAULT_SEVERITIES[name]]


# ---- perturbations -----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(32, 32), (16, 16, 16)], ids=["2d", "3d"])
def test_every_perturbation_keeps_shape_and_dtype_and_grows_with_severity(shape) -> None:
    images = _anatomy(shape, 6)
    for name in PERTURBATIONS:
        assert len(DEFAULT_SEVERITIES[name]) >= 4 and DEFAULT_SEVERITIES[name] == sorted(DEFAULT_SEVERITIES[name])
        differences = []
        for severity in _levels(name):
            out = perturb(images, name, severity, seed=1)
            assert out.shape == images.shape and out.dtype == images.dtype, (name, severity)
            assert np.isfinite(out).all(), (name, severity)
            differences.append(float(np.abs(out - images).mean()))
        assert differences[0] == 0.0, f"{name}: the identity severity changed the images"
        assert np.all(np.diff(differences) > 0), f"{name}: {np.round(differences, 4)} does not grow with severity"


@pytest.mark.parametrize("shape", [(32, 32), (12, 12, 12)], ids=["2d", "3d"])
def test_perturbations_are_deterministic_per_seed_and_per_image(shape) -> None:
    images = _anatomy(shape, 4)
    before = torch.get_rng_state()
    for name in PERTURBATIONS:
        severity = DEFAULT_SEVERITIES[name][-1]
        out = perturb(images, name, severity, seed=7)
        np.testing.assert_array_equal(out, perturb(images, name, severity, seed=7), err_msg=name)
        # each image has its own seed: a batch's first images come out as in the whole set
        np.testing.assert_array_equal(out[:2], perturb(images[:2], name, severity, seed=7), err_msg=name)
        if name in RANDOM:
            assert not np.array_equal(out, perturb(images, name, severity, seed=8)), f"{name} ignores the seed"
            twins = perturb(np.repeat(images[:1], 2, axis=0), name, severity, seed=7)
            assert not np.array_equal(twins[0], twins[1]), f"{name}: one draw for every image"
    assert torch.equal(torch.get_rng_state(), before), "the global torch RNG was moved"


def test_identity_severity_returns_a_copy_of_the_input() -> None:
    images = _anatomy((16, 16), 2).astype(np.float64)
    for name in PERTURBATIONS:
        out = perturb(images, name, IDENTITY[name], seed=0)
        assert out is not images and out.dtype == np.float64
        np.testing.assert_array_equal(out, images)
    with pytest.raises(ValueError, match="below the identity"):
        perturb(images, "downsampling", 0.5, seed=0)
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb(images, "rain", 1.0, seed=0)


def test_2d_motion_is_a_k_space_artefact_not_just_a_rigid_move() -> None:
    """TorchIO's own 2D path splits k-space along the singleton axis and returns one
    rigidly moved image: interpolating a non-negative image never goes below 0. Mixed
    k-space lines of moved images ring, and do."""
    bar = np.zeros((1, 1, 48, 48), np.float32)
    bar[0, 0, 14:34, 20:28] = 1.0
    out = perturb(bar, "motion", 20.0, seed=0)
    assert out.min() < -0.02


def test_gamma_keeps_the_intensity_range_and_darkens_mid_tones() -> None:
    images = _anatomy((16, 16), 2)
    out = perturb(images, "gamma", 0.5, seed=0)
    for before, after in zip(images, out):
        assert after.min() == pytest.approx(before.min(), abs=1e-5) and after.max() == pytest.approx(before.max(), abs=1e-5)
        assert after.mean() < before.mean()  # exp(0.5) > 1 on [0, 1]


def test_config_severities_merge_over_the_defaults() -> None:
    merged = merged_severities({"spike": [], "noise": [2.0, 0.5, 0.5]})
    assert "spike" not in merged and merged["noise"] == [0.5, 2.0]
    assert merged["blur"] == DEFAULT_SEVERITIES["blur"]
    with pytest.raises(ValueError, match="unknown perturbation"):
        merged_severities({"rain": [1.0]})
    with pytest.raises(ValueError, match=">= 1"):
        merged_severities({"downsampling": [0.5]})


# ---- sweep and breakdown -----------------------------------------------------------


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    """A tiny DenseNet trained (about 2 s) to find the blob, and its test images."""
    x_train, y_train = _blobs(256, seed=0)
    x_test, y_test = _blobs(128, seed=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = DenseNet(spatial_dims=2, in_channels=1, out_channels=2, init_features=4, growth_rate=4, block_config=(2, 2))
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        images, labels = torch.from_numpy(x_train), torch.from_numpy(y_train)
        net.train()
        for _ in range(15):
            order = torch.randperm(len(images))
            for start in range(0, len(images), 32):
                batch = order[start : start + 32]
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(net(images[batch]), labels[batch]).backward()
                optimizer.step()
    return net.eval(), x_test, y_test


def test_auc_falls_to_chance_under_growing_noise(trained) -> None:
    net, images, labels = trained
    table = sweep(net, images, labels, {"noise": DEFAULT_SEVERITIES["noise"]}, metric="auc", threshold=0.5, seed=0)
    assert list(table.columns) == ["perturbation", "severity", "auc", "balanced_accuracy", "accuracy", "n_images"]
    assert table["severity"].tolist() == _levels("noise") and (table["n_images"] == len(images)).all()
    auc = table["auc"].to_numpy()
    assert auc[0] > 0.9, f"clean AUC {auc[0]:.3f}: the model did not learn the blob"
    assert auc[-1] < 0.7, f"AUC {auc[-1]:.3f} at noise sd {DEFAULT_SEVERITIES['noise'][-1]} x the image's"
    assert np.all(np.diff(auc) <= 0.02), f"AUC rises with noise: {np.round(auc, 3)}"
    # the clean row is the model on the unperturbed images; a perturbed row, on the images
    # perturb() gives for the sweep's seed (each image keeps its seed at every severity)
    for severity, x in ((0.0, images), (1.0, perturb(images, "noise", 1.0, seed=0))):
        with torch.no_grad():
            p1 = torch.softmax(net(torch.from_numpy(x)), 1)[:, 1].numpy()
        assert table.loc[table["severity"] == severity, "auc"].item() == pytest.approx(roc_auc_score(labels, p1))
    # on this model noise breaks the AUC somewhere inside the sweep, at the first level that crosses
    first = next(s for s, a in zip(table["severity"], auc) if a <= auc[0] - 0.05)
    assert breakdown(table, "auc", 0.05) == {"noise": first}


def test_clean_point_is_shared_and_each_perturbation_starts_with_it(trained) -> None:
    net, images, labels = trained
    table = sweep(net, images[:32], labels[:32], {"downsampling": [4.0, 2.0], "blur": [1.0]}, seed=0)
    assert table["perturbation"].tolist() == ["downsampling"] * 3 + ["blur"] * 2
    assert table["severity"].tolist() == [1.0, 2.0, 4.0, 0.0, 1.0]
    first = table.groupby("perturbation").head(1)
    assert first["auc"].nunique() == 1 and first["accuracy"].nunique() == 1


def _table(curves: dict[str, list[tuple[float, float]]]) -> pd.DataFrame:
    rows = [{"perturbation": name, "severity": s, "auc": v} for name, points in curves.items() for s, v in points]
    return pd.DataFrame(rows)


def test_breakdown_is_the_first_severity_at_or_below_the_margin() -> None:
    table = _table(
        {
            "noise": [(0, 0.90), (0.1, 0.88), (0.5, 0.84), (1, 0.80), (2, 0.60)],  # 0.84 <= 0.85: first
            "blur": [(0, 0.90), (1, 0.89), (2, 0.86)],  # never below 0.85
            "gamma": [(0, 0.90), (0.5, 0.85), (1.0, 0.70)],  # exactly the margin counts
            "spike": [(0, 0.90), (1, 0.70), (2, 0.88)],  # recovers: still the first crossing
            "downsampling": [(1, 0.90), (2, np.nan)],  # undefined AUC: no breakdown
        }
    )
    assert breakdown(table, "auc", 0.05) == {"noise": 0.5, "blur": None, "gamma": 0.5, "spike": 1.0, "downsampling": None}
    assert breakdown(table, "auc", 0.5) == {name: None for name in ("noise", "blur", "gamma", "spike", "downsampling")}
    # rows need not be sorted: the clean value is the lowest severity's
    shuffled = table.sample(frac=1.0, random_state=0)
    assert breakdown(shuffled, "auc", 0.05)["noise"] == 0.5


# ---- the rule's stage ----------------------------------------------------------------


def _write_stage_inputs(root, images: np.ndarray, labels: np.ndarray, net: torch.nn.Module) -> dict[str, str]:
    """A preprocessed cache as the preprocess and split rules lay it out, the model
    checkpoint as fit() saves it, and the evaluate rule's metrics.json."""
    n = len(images)
    np.save(root / "images.npy", images)
    ids = [f"img{i:03d}" for i in range(n)]
    index = pd.DataFrame(
        {"row": np.arange(n), "image_id": ids, "patient_id": [f"p{i // 2:03d}" for i in range(n)], "label": labels, "has_mask": False}
    )
    index.to_csv(root / "index.tsv", sep="\t", index=False)
    # the test set is the second half, listed in an order other than the cache's
    test = ids[n // 2 :][::-1]
    splits = {"method": "test", "seed": 0, "test": test, "folds": [{"train": ids[: n // 4], "val": ids[n // 4 : n // 2]}]}
    (root / "splits.json").write_text(json.dumps(splits))
    (root / "metrics.json").write_text(json.dumps({"threshold": 0.4, "auc": 0.9}))
    torch.save({"state_dict": net.state_dict(), "epoch": 1}, root / "model.pt")
    return {
        key: str(root / f"{key}.{ext}")
        for key, ext in (("model", "pt"), ("images", "npy"), ("index", "tsv"), ("splits", "json"), ("metrics", "json"))
    }


def _outputs(root) -> dict[str, str]:
    names = {"table": "robustness.tsv", "summary": "robustness.json", "curves": "robustness.png", "examples": "robustness_examples.png"}
    return {key: str(root / "out" / name) for key, name in names.items()}


def _assert_png(path: str) -> None:
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    assert min(pixels.shape[:2]) > 100 and pixels[..., :3].std() > 0.05, f"{path} is blank"


def test_robustness_stage_2d_end_to_end(tmp_path, trained) -> None:
    net, x_test, y_test = trained
    images, labels = x_test[:48], y_test[:48]
    inputs = _write_stage_inputs(tmp_path, images, labels, net)
    outputs = _outputs(tmp_path)
    model_cfg = {"network": NETWORK, "train": {"batch_size": 8}, "seed": 3, "device": "cpu"}
    cfg = {"metric": "balanced_accuracy", "margin": 0.1, "max_images": None, "perturbations": {"spike": [], "noise": [1.0, 0.25]}}
    summary = robustness_stage(
        model_cfg,
        cfg,
        inputs=inputs,
        outputs=outputs,
        class_names=["no", "yes"],
        title="tiny",
        wildcards={"model": "densenet", "fold": "0"},
    )

    table = pd.read_csv(outputs["table"], sep="\t")
    expected = [n for n in PERTURBATIONS if n != "spike"]
    assert table["perturbation"].unique().tolist() == expected
    assert table.groupby("perturbation", sort=False)["severity"].first().to_dict() == {n: IDENTITY[n] for n in expected}
    assert table.loc[table["perturbation"] == "noise", "severity"].tolist() == [0.0, 0.25, 1.0]
    assert (table["n_images"] == 24).all()

    with open(outputs["summary"]) as fh:
        written = json.load(fh)
    assert written == json.loads(json.dumps(summary))
    assert set(written) == {"metric", "margin", "clean", "breakdown", "severities", "units", "threshold", "n_images", "n_positive", "seed"}
    assert written["metric"] == "balanced_accuracy" and written["margin"] == 0.1 and written["seed"] == 3
    assert written["threshold"] == 0.4 and written["n_images"] == 24 and written["n_positive"] == int(labels[24:].sum())
    assert set(written["breakdown"]) == set(expected) and written["severities"]["noise"] == [0.25, 1.0]
    assert written["severities"]["blur"] == DEFAULT_SEVERITIES["blur"]
    # the clean point is the model at the evaluate rule's threshold on the test images
    with torch.no_grad():
        p1 = torch.softmax(net(torch.from_numpy(images[24:])), 1)[:, 1].numpy()
    truth, pred = labels[24:], (p1 >= 0.4).astype(int)
    assert written["clean"] == pytest.approx(((pred[truth == 1] == 1).mean() + (pred[truth == 0] == 0).mean()) / 2)
    for key in ("curves", "examples"):
        _assert_png(outputs[key])


def test_robustness_stage_3d_caps_the_test_set(tmp_path) -> None:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(20, 1, 12, 12, 12)).astype(np.float32)
    labels = np.arange(20) % 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = DenseNet(spatial_dims=3, in_channels=1, out_channels=2, init_features=4, growth_rate=4, block_config=(2, 2)).eval()
    inputs = _write_stage_inputs(tmp_path, images, labels, net)
    outputs = _outputs(tmp_path)
    model_cfg = {"network": NETWORK, "train": {}, "seed": 5, "device": "cpu"}
    summary = robustness_stage(model_cfg, {"max_images": 6}, inputs=inputs, outputs=outputs, class_names=["a", "b"], title="tiny 3D")
    table = pd.read_csv(outputs["table"], sep="\t")
    assert table["perturbation"].unique().tolist() == list(PERTURBATIONS)
    assert len(table) == sum(len(levels) + 1 for levels in DEFAULT_SEVERITIES.values())
    assert (table["n_images"] == 6).all() and summary["n_images"] == 6
    assert summary["metric"] == "auc" and summary["margin"] == 0.05
    for key in ("curves", "examples"):
        _assert_png(outputs[key])
