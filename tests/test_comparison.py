"""Unit tests of the comparison family (casebook.tasks.comparison): the sweep's patient
subsets, the metrics and the paired comparison, the networks' costs, the losses and
sampling, pretraining (a contrastive encoder probes better than random weights) and the
checks that refuse leaked or mismatched pretrained weights."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from casebook.split import LeakageError
from casebook.tasks.comparison.data import Images
from casebook.tasks.comparison.evaluate import average_precision, labels_saved, roc_auc, summarize
from casebook.tasks.comparison.fit import Arm, batches, build, fit_level, loss_function
from casebook.tasks.comparison.networks import build_classifier, build_encoder, features, macs_per_image, parameter_count
from casebook.tasks.comparison.pretrain import InitError, check_compatible, check_held_out, pretrain
from casebook.tasks.comparison.subsets import SubsetError, draw_subsets, patient_labels

CLASSES = ["normal", "pneumonia"]


def labels_of(n_neg: int, n_pos: int) -> pd.Series:
    return pd.Series([0] * n_neg + [1] * n_pos, index=[f"p{i:03d}" for i in range(n_neg + n_pos)])


def test_label_fraction_subsets_are_stratified_nested_and_seeded() -> None:
    labels = labels_of(60, 40)
    subsets = draw_subsets(labels, "label_fraction", [0.05, 0.25, 1.0], [0, 1], CLASSES)
    for seed in ("0", "1"):
        small, mid, full = (set(subsets[seed][k]) for k in ("0.05", "0.25", "1"))
        assert small < mid < full == set(labels.index)
        assert sorted(labels[sorted(small)].value_counts().to_dict().items()) == [(0, 3), (1, 2)]
        assert labels[sorted(mid)].value_counts().to_dict() == {0: 15, 1: 10}
    assert subsets["0"]["0.25"] != subsets["1"]["0.25"]
    assert draw_subsets(labels, "label_fraction", [0.25], [0], CLASSES)["0"]["0.25"] == subsets["0"]["0.25"]


def test_a_fraction_that_empties_a_class_is_refused_naming_the_fraction_and_the_class() -> None:
    with pytest.raises(SubsetError, match=r"label_fraction 0.01 leaves class 'pneumonia' empty \(0.40 of its 40"):
        draw_subsets(labels_of(60, 40), "label_fraction", [0.01, 1.0], [0], CLASSES)
    with pytest.raises(SubsetError, match=r"no patient of class \['pneumonia'\]"):
        draw_subsets(labels_of(10, 0), "label_fraction", [1.0], [0], CLASSES)


def test_prevalence_subsets_thin_one_class_to_the_level_and_are_nested() -> None:
    labels = labels_of(60, 40)
    subsets = draw_subsets(labels, "prevalence", [0.05, 0.2, 0.5], [3], CLASSES)["3"]
    shares = {k: labels[v].mean() for k, v in subsets.items()}
    assert shares["0.05"] == pytest.approx(3 / 63) and shares["0.2"] == pytest.approx(15 / 75) and shares["0.5"] == 0.5
    assert len(subsets["0.5"]) == 80  # above the natural 40%: the negatives are thinned
    positives = [set(p for p in v if labels[p] == 1) for v in subsets.values()]
    assert positives[0] < positives[1] < positives[2]
    with pytest.raises(SubsetError, match=r"prevalence 0.001 leaves class 'pneumonia' empty"):
        draw_subsets(labels, "prevalence", [0.001], [0], CLASSES)


def test_a_patient_is_positive_when_any_of_its_images_is() -> None:
    labels = patient_labels(np.array(["a", "a", "b", "b"]), np.array([0, 1, 0, 0]))
    assert labels.to_dict() == {"a": 1, "b": 0}


def test_auc_and_average_precision_match_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        y = np.r_[0, 1, rng.integers(0, 2, 40)]
        s = np.round(rng.random(42), 1)  # many ties
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def predictions_of(rng, arms: dict[str, float], seeds=(0, 1), levels=("0.5", "1"), n_patients=60) -> pd.DataFrame:
    """Test predictions: each arm separates the classes with a given signal strength."""
    label = np.arange(n_patients) % 2
    rows = []
    for model, signal in arms.items():
        for seed in seeds:
            for level in levels:
                prob = 1 / (1 + np.exp(-(signal * float(level) * (2 * label - 1) + rng.normal(0, 1, n_patients))))
                rows.append(
                    pd.DataFrame(
                        {
                            "model": model,
                            "seed": seed,
                            "level": level,
                            "image_id": [f"i{i}" for i in range(n_patients)],
                            "patient_id": [f"p{i}" for i in range(n_patients)],
                            "label": label,
                            "prob": prob,
                        }
                    )
                )
    return pd.concat(rows, ignore_index=True)


def test_a_clearly_better_arm_is_called_and_a_copy_is_not() -> None:
    rng = np.random.default_rng(1)
    preds = predictions_of(rng, {"weak": 0.3, "strong": 4.0})
    preds = pd.concat([preds, preds[preds["model"] == "weak"].assign(model="copy")], ignore_index=True)
    costs = pd.DataFrame(
        [
            {
                "model": m,
                "level": "1",
                "parameters": 10,
                "trainable_parameters": 10,
                "macs_per_image": 5,
                "train_images_per_s": 1,
                "inference_images_per_s": 2,
            }
            for m in ("weak", "strong", "copy")
        ]
    )
    settings = {"seeds": [0, 1], "reference": "weak", "n_bootstrap": 200, "ci_level": 0.95, "specificity": 0.9}
    summary = summarize(preds, costs, settings, "label_fraction")
    diffs = {(d["model"], d["level"]): d for d in summary["differences"]}
    assert diffs[("strong", 1.0)]["excludes_zero"] and diffs[("strong", 1.0)]["ci_low"] > 0.1
    assert diffs[("copy", 1.0)]["difference"] == 0 and not diffs[("copy", 1.0)]["excludes_zero"]
    for row in summary["scores"]:
        assert row["auc_low"] <= row["auc"] <= row["auc_high"] and row["auc_sd"] >= 0
    assert summary["labels_saved"]["fraction"]["strong"] == 0.5 and summary["labels_saved"]["fraction"]["weak"] == 1.0
    assert [c["model"] for c in summary["costs"]] == ["weak", "strong", "copy"]


def test_labels_saved_is_none_for_an_arm_that_never_reaches_the_reference() -> None:
    table = pd.DataFrame({"model": ["ref", "ref", "bad", "bad"], "level": [0.1, 1.0, 0.1, 1.0], "auc": [0.7, 0.9, 0.6, 0.8]})
    assert labels_saved(table, "ref") == {"target_auc": 0.9, "fraction": {"ref": 1.0, "bad": None}}


@pytest.mark.parametrize("name", ["resnet", "vit", "swin"])
@pytest.mark.parametrize("dims", [2, 3])
def test_every_architecture_classifies_2d_and_3d_and_is_costed(name, dims) -> None:
    size = 16
    net = build_classifier({"name": name}, spatial_dims=dims, in_channels=1, size=size, num_classes=2)
    assert net(torch.zeros((2, 1) + (size,) * dims)).shape == (2, 2)
    assert parameter_count(net) > parameter_count(net.head) > 0
    assert macs_per_image(net, (1,) + (size,) * dims) > 0


def test_macs_count_one_multiply_accumulate_per_weight_use() -> None:
    assert macs_per_image(torch.nn.Linear(10, 3), (10,)) == 30
    assert macs_per_image(torch.nn.Conv2d(1, 4, 3, bias=False), (1, 8, 8)) == 6 * 6 * 4 * 9


def test_balanced_sampling_draws_the_classes_evenly_and_a_permutation_does_not() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    drawn = torch.cat(batches(labels, 32, torch.Generator().manual_seed(0), balanced=True)).numpy()
    assert len(drawn) == 100 and 0.35 < labels[drawn].mean() < 0.65
    plain = torch.cat(batches(labels, 32, torch.Generator().manual_seed(0), balanced=False)).numpy()
    assert sorted(plain) == list(range(100))


def test_the_loss_follows_the_train_settings() -> None:
    logits, y = torch.tensor([[2.0, -1.0], [0.5, 0.2]]), torch.tensor([0, 1])
    labels = np.array([0, 0, 0, 1])
    plain = loss_function({}, labels, 2, torch.device("cpu"))(logits, y)
    weighted = loss_function({"class_weights": "balanced"}, labels, 2, torch.device("cpu"))(logits, y)
    focal = loss_function({"focal": {"gamma": 2.0}}, labels, 2, torch.device("cpu"))(logits, y)
    assert weighted > plain  # the misclassified positive is the rare class: weighted up
    assert 0 < focal < plain  # the well-classified image is discounted


def separable(n: int, seed: int, size: int = 16) -> Images:
    """Class 1: a bright square somewhere; class 0: noise only."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 1, size, size)).astype(np.float32)
    y = np.arange(n) % 2
    for i in np.flatnonzero(y):
        r, c = rng.integers(2, size - 6, 2)
        x[i, 0, r : r + 4, c : c + 4] += 3
    return Images(x, y, np.array([f"p{i}" for i in range(n)]), np.array([f"i{i}" for i in range(n)]))


def test_a_model_trained_on_separable_data_separates_it_and_a_probe_leaves_the_encoder_alone(tmp_path) -> None:
    train, val, test = separable(96, 0), separable(32, 1), separable(64, 2)
    spec = {"name": "resnet", "kwargs": {"block_inplanes": [8, 16, 32, 64]}}
    arm = Arm(network=spec, train={"epochs": 6, "batch_size": 16, "lr": 0.003, "optimizer": "adam"}, device="cpu")
    fitted = fit_level(arm, train, val, test, seed=0, out_dir=tmp_path / "full", resume_key="k", desc="test")
    assert roc_auc_score(test.label, fitted.probs) > 0.95
    assert fitted.cost["trainable_parameters"] == fitted.cost["parameters"] and fitted.cost["train_images"] == 96

    init = build(arm, train, 2).encoder.state_dict()
    probe = Arm(network=spec, train={**arm.train, "epochs": 2}, init=init, probe=True, device="cpu")
    fitted = fit_level(probe, train, val, test, seed=0, out_dir=tmp_path / "probe", resume_key="k", desc="test")
    assert fitted.cost["trainable_parameters"] == 64 * 2 + 2
    saved = torch.load(tmp_path / "probe/model.pt", weights_only=True)["state_dict"]
    for key, value in init.items():
        assert torch.equal(saved[f"encoder.{key}"], value), key


def shapes(n: int, seed: int, size: int = 16) -> Images:
    """Rings against filled squares of random size, place, brightness and contrast."""
    rng = np.random.default_rng(seed)
    x, y = np.zeros((n, 1, size, size), np.float32), rng.integers(0, 2, n)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.uniform(5, size - 5, 2)
        r = rng.uniform(3, 5)
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        shape = ((d < r) & (d > r - 1.5)) if y[i] else ((abs(yy - cy) < 0.6 * r) & (abs(xx - cx) < 0.6 * r))
        x[i, 0] = shape * rng.uniform(0.5, 3) + rng.uniform(-1, 1) + rng.normal(0, 0.3, (size, size))
    return Images(x, y, np.array([f"p{i}" for i in range(n)]), np.array([f"i{i}" for i in range(n)]))


def probe_auc(encoder, train: Images, test: Images) -> float:
    scaler = StandardScaler().fit(features(encoder, train.x))
    clf = LogisticRegression(max_iter=2000, C=0.1).fit(scaler.transform(features(encoder, train.x)), train.label)
    return roc_auc_score(test.label, clf.decision_function(scaler.transform(features(encoder, test.x))))


def test_contrastive_pretraining_gives_a_better_linear_probe_than_random_weights() -> None:
    train, test = shapes(256, 0), shapes(200, 1)
    network = {"name": "resnet", "kwargs": {"block_inplanes": [8, 16, 32, 64]}}
    spec = {"network": network, "epochs": 40, "batch_size": 128, "lr": 1e-3, "temperature": 0.2, "min_crop": 0.6}
    torch.manual_seed(0)
    random = build_encoder(network, spatial_dims=2, in_channels=1, size=16)
    with tempfile.TemporaryDirectory() as tmp:
        pretrained = pretrain(train, spec, seed=0, out_dir=Path(tmp), key="k", desc="test")
    assert probe_auc(pretrained, train, test) > probe_auc(random, train, test) + 0.05


def card(**kwargs):
    return {"name": "simclr", "network": {"name": "resnet", "kwargs": {}}, "image_shape": [1, 16, 16], "patients": ["p1", "p2"], **kwargs}


def test_a_pretraining_that_saw_a_test_patient_is_refused_naming_it() -> None:
    with pytest.raises(
        LeakageError, match=r"enc.pt: pretraining 'simclr' saw 1 validation or test patient\(s\) of this study \(e.g. \['p2'\]\)"
    ):
        check_held_out(card(), "enc.pt", {"p2", "p9"}, "validation or test")
    check_held_out(card(), "enc.pt", {"p9"}, "validation or test")


def test_weights_of_another_shape_or_network_are_refused_naming_both() -> None:
    images = separable(4, 0, size=16)
    check_compatible(card(), "enc.pt", {"name": "resnet", "init": "simclr"}, images, "m")
    with pytest.raises(
        InitError, match=r"model 'm': network.init 'simclr' \(enc.pt\) was pretrained as .*\[1, 16, 16\].*but this model is .*\[1, 32, 32\]"
    ):
        check_compatible(card(), "enc.pt", {"name": "resnet"}, separable(4, 0, size=32), "m")
    with pytest.raises(InitError, match=r"'name': 'vit'"):
        check_compatible(card(), "enc.pt", {"name": "vit"}, images, "m")


def test_a_weights_file_loads_when_its_checksum_matches_and_is_refused_otherwise(tmp_path) -> None:
    from casebook.fileio import file_digest
    from casebook.tasks.comparison.pretrain import load_weights_file

    network = {"name": "resnet", "kwargs": {"block_inplanes": [8, 16, 32, 64]}}
    source = build_encoder(network, spatial_dims=2, in_channels=1, size=16)
    path = tmp_path / "imagenet_like.pt"
    torch.save({"state_dict": {f"encoder.{k}": v for k, v in source.state_dict().items()}}, path)
    target = build_encoder(network, spatial_dims=2, in_channels=1, size=16)
    state = load_weights_file({"path": str(path), "sha256": file_digest(path)}, "m", target)
    target.load_state_dict(state)
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())
    with pytest.raises(InitError, match=rf"model 'm': weights file {path} has sha256 {file_digest(path)}, but the case study pins 0{{64}}"):
        load_weights_file({"path": str(path), "sha256": "0" * 64}, "m", target)
    wider = build_encoder({"name": "resnet"}, spatial_dims=2, in_channels=1, size=16)
    with pytest.raises(InitError, match=r"does not fit its encoder: 0 tensor\(s\) missing .* of another shape"):
        load_weights_file({"path": str(path), "sha256": file_digest(path)}, "m", wider)


def test_restoration_pretraining_gives_a_better_linear_probe_than_random_weights() -> None:
    from casebook.tasks.comparison.genesis import corrupt

    batch = shapes(8, 3).x
    corrupted = corrupt(torch.from_numpy(batch), torch.Generator().manual_seed(0))
    assert corrupted.shape == batch.shape and not torch.equal(corrupted, torch.from_numpy(batch))
    train, test = shapes(256, 0), shapes(200, 1)
    network = {"name": "resnet", "kwargs": {"block_inplanes": [8, 16, 32, 64]}}
    spec = {"method": "restoration", "network": network, "epochs": 30, "batch_size": 64, "lr": 1e-3}
    torch.manual_seed(0)
    random = build_encoder(network, spatial_dims=2, in_channels=1, size=16)
    with tempfile.TemporaryDirectory() as tmp:
        pretrained = pretrain(train, spec, seed=0, out_dir=Path(tmp), key="k", desc="test")
    assert probe_auc(pretrained, train, test) > probe_auc(random, train, test) + 0.02


def test_sensitivity_is_read_at_the_specificity_asked_for() -> None:
    from casebook.tasks.comparison.evaluate import sensitivity_at

    labels = np.array([0] * 10 + [1] * 3)
    scores = np.array([0.1 * i for i in range(1, 11)] + [0.85, 0.95, 1.05])
    # the ninth negative (0.9) keeps 9 of 10 at or below it: two positives lie above
    assert sensitivity_at(labels, scores, 0.9) == pytest.approx(2 / 3)
    assert sensitivity_at(labels, scores, 0.8) == pytest.approx(1.0)


def test_probes_pair_with_the_fine_tuned_model_of_the_same_start_only() -> None:
    from casebook.tasks.comparison.plan import probe_pairs

    weights = {"path": "w.pt", "sha256": "0" * 64}
    models = {
        "scratch": {"network": {"name": "resnet"}},
        "tuned": {"network": {"name": "resnet", "init": "simclr"}},
        "probe": {"network": {"name": "resnet", "init": "simclr", "probe": True}},
        "imagenet": {"network": {"name": "resnet", "weights": weights}},
        "imagenet_probe": {"network": {"name": "resnet", "weights": weights, "probe": True}},
        "genesis_probe": {"network": {"name": "resnet", "init": "genesis", "probe": True}},
    }
    assert probe_pairs(models) == [("probe", "tuned"), ("imagenet_probe", "imagenet")]
