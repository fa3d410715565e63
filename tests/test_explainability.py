"""Tests for casebook.analysis.explainability: the attribution methods, deletion / insertion,
pointing game, the model-randomization sanity check and the figures.

Tiny MONAI DenseNets on 16x16 and 12^3 inputs for the shape tests; one trained in the
module (about a second, 1 thread) on 32x32 images whose class 1 carries a bright 6x6
blob at a random place. 32x32 rather than 16x16 so that Grad-CAM's last feature map is
4x4: at 2x2 it cannot point at anything smaller than a quadrant.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from monai.networks.nets import DenseNet

from casebook.analysis.explainability import (
    METHODS,
    cascade_blocks,
    deletion_insertion,
    energy_in_mask,
    explain,
    pointing_chance,
    pointing_game,
    random_reference,
    randomized_copy,
    rank_correlation,
    sanity_check,
)
from casebook.analysis.explainability.faithfulness import perturbed_images, ranking, spatial_mask
from casebook.analysis.explainability.figures import plot_attribution_grid, plot_faithfulness, plot_sanity
from casebook.analysis.explainability.sanity import correlations

torch.set_num_threads(1)

LAYER = "class_layers.relu"  # casebook.tasks.classification.networks.cam_layer of a MONAI DenseNet
FAST = {"occlusion": {"mask_size": 4}, "smoothgrad": {"samples": 4}, "integrated_gradients": {"steps": 8}}


def _tiny_densenet(spatial_dims: int, seed: int = 0, features: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return DenseNet(spatial_dims, 1, 2, init_features=features, growth_rate=features, block_config=(2, 2))


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


# --- every method: shape, range, model left as it was ---------------------------------


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("shape", [(3, 1, 16, 16), (2, 1, 12, 12, 12)], ids=["2d", "3d"])
def test_method_maps_have_the_input_shape_unit_range_and_leave_the_model_alone(method, shape) -> None:
    net = _tiny_densenet(len(shape) - 2)
    net.train()  # the method must switch to eval itself, and switch back
    frozen = [p for p in net.parameters()][:2]
    for p in frozen:
        p.requires_grad_(False)
    before = _state(net)
    images = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    maps = explain(method, net, images, [1, 0, 1][: shape[0]], FAST.get(method, {}), LAYER)
    assert maps.shape == (shape[0], 1, *shape[2:]) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert all(m.max() in (0.0, 1.0) for m in maps)  # min-max scaled per image (0 if constant)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    assert all(p.grad is None for p in net.parameters())
    assert [p.requires_grad for p in net.parameters()] == [False, False] + [True] * (len(list(net.parameters())) - 2)
    assert net.training and _hooks(net) == 0


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_map_does_not_depend_on_the_batch_it_came_in(method) -> None:
    # 3 images with a 2x2 last feature map: MONAI's batched Grad-CAM++ would broadcast
    # the class scores across a spatial axis (see methods._cam)
    net = _tiny_densenet(2).eval()
    images = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    targets = [1, 1, 0, 1]
    together = explain(method, net, images, targets, FAST.get(method, {}), LAYER, batch_size=4)
    one_by_one = explain(method, net, images, targets, FAST.get(method, {}), LAYER, batch_size=1)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_explain_names_unknown_methods_and_a_missing_layer() -> None:
    net, images = _tiny_densenet(2), torch.zeros(1, 1, 16, 16)
    with pytest.raises(ValueError, match="unknown attribution method"):
        explain("lime", net, images, [0])
    with pytest.raises(ValueError, match="target layer"):
        explain("gradcam", net, images, [0])


class _SquareDetector(torch.nn.Module):
    """Class-1 evidence is the mean of a 1x1 conv feature map: high where the input is."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1, bias=False), torch.nn.ReLU())
        self.head = torch.nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.features[0].weight.fill_(1.0)
            self.head.weight.copy_(torch.tensor([[-1.0], [1.0]]))

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def _square_image() -> torch.Tensor:
    image = torch.zeros(1, 1, 16, 16)
    image[0, 0, 4:8, 8:12] = 1.0
    return image


def _outside_square() -> np.ndarray:
    outside = np.ones((16, 16), dtype=bool)
    outside[4:8, 8:12] = False
    return outside


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_cam_is_high_where_the_evidence_is_not_flipped(method) -> None:
    cam = explain(method, _SquareDetector(), _square_image(), [1], layer="features.1")[0, 0]
    assert cam[4:8, 8:12].min() > 0.99
    assert cam[_outside_square()].max() < 0.01


def test_occlusion_reads_the_target_class_channel() -> None:
    model, image = _SquareDetector(), _square_image()
    positive = explain("occlusion", model, image, [1], {"mask_size": 4, "overlap": 0.5})[0, 0]
    # hiding the square lowers class 1: the map peaks on it and is zero far from it
    assert positive[5:7, 9:11].min() == pytest.approx(1.0)
    assert positive[12:, :4].max() == 0.0
    # for class 0 hiding the square only raises the probability: no positive drop anywhere
    assert explain("occlusion", model, image, [0], {"mask_size": 4, "overlap": 0.5}).max() == 0.0


def test_saliency_is_the_channel_summed_absolute_gradient() -> None:
    # logit_1 = 2 * x[0, 0, 0] - 3 * x[1, 0, 1]: gradient magnitudes 2 and 3, zero elsewhere
    class Linear(torch.nn.Module):
        def forward(self, x):
            z = 2 * x[:, 0, 0, 0] - 3 * x[:, 1, 0, 1]
            return torch.stack([-z, z], dim=1)

    maps = explain("saliency", Linear(), torch.rand(1, 2, 2, 2), [1])[0, 0]
    np.testing.assert_allclose(maps, [[2 / 3, 1.0], [0.0, 0.0]], atol=1e-6)


# --- a model trained on bright blobs ------------------------------------------------


def _blobs(n: int, seed: int, size: int = 32, blob: int = 6) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Noise images; odd ones (class 1) carry a bright square blob, also given as a mask."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.normal(0, 0.3, (n, 1, size, size)).astype(np.float32)
    masks = np.zeros(images.shape, dtype=bool)
    for i in np.flatnonzero(labels == 1):
        y, x = rng.integers(1, size - blob - 1, 2)
        images[i, 0, y : y + blob, x : x + blob] += 2.0
        masks[i, 0, y : y + blob, x : x + blob] = True
    return torch.from_numpy(images), torch.from_numpy(labels), masks


@pytest.fixture(scope="module")
def trained():
    """A DenseNet trained for 100 Adam steps on blob images, and 32 blob test images."""
    images, labels, _ = _blobs(128, seed=0)
    net = _tiny_densenet(2, seed=0, features=8)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    batches = torch.Generator().manual_seed(0)
    for _ in range(100):
        idx = torch.randint(0, len(images), (32,), generator=batches)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(images[idx]), labels[idx]).backward()
        optimizer.step()
    net.eval()
    test, test_labels, masks = _blobs(64, seed=1)
    with torch.no_grad():
        assert (net(test).argmax(1) == test_labels).float().mean() > 0.9  # it learned the task
    positive = np.flatnonzero(test_labels.numpy() == 1)
    return net, test[positive], masks[positive]


@pytest.mark.parametrize("method", ["gradcam", "saliency", "occlusion", "integrated_gradients"])
def test_maps_of_the_trained_model_point_at_the_blob(trained, method) -> None:
    net, images, masks = trained
    maps = explain(method, net, images, [1] * len(images), FAST.get(method, {}), LAYER)
    hit_rate = np.mean([pointing_game(m, k, 0) for m, k in zip(maps, masks)])
    chance = np.mean([pointing_chance(k, 0) for k in masks])  # the blob's share of the image, 3.5%
    assert hit_rate > 5 * chance
    shares = [energy_in_mask(m, k)[0] / k.mean() for m, k in zip(maps, masks)]
    assert np.mean(shares) > 1.5  # the blob holds more of the map than its area


@pytest.mark.parametrize("method", ["gradcam", "occlusion", "saliency", "smoothgrad", "integrated_gradients"])
def test_sanity_check_tells_the_trained_model_from_a_randomized_one(trained, method) -> None:
    net, images, _ = trained
    images, targets = images[:8], [1] * 8
    settings = FAST.get(method, {})
    again = correlations(explain(method, net, images, targets, settings, LAYER), explain(method, net, images, targets, settings, LAYER))
    assert np.mean(again) == pytest.approx(1.0)  # deterministic: the same maps again
    result = sanity_check(net, images, targets, method, settings, LAYER, pass_below=0.5, seed=0)
    assert result["spearman_mean"] < 0.5 and result["passed"]
    assert len(result["spearman"]) == 8 and result["randomized_maps"].shape == (8, 1, 32, 32)


def test_a_model_independent_map_fails_the_sanity_check(trained) -> None:
    # Grad-CAM++'s weights are non-negative by construction: on this model its map follows
    # the activations, which a random network also has where the blob is bright; it is
    # the example of a method the check flags (correlation ~0.85 here)
    net, images, _ = trained
    result = sanity_check(net, images[:8], [1] * 8, "gradcampp", {}, LAYER, pass_below=0.5)
    assert result["spearman_mean"] > 0.5 and not result["passed"]


@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_deletion_and_insertion_beat_a_random_order_on_the_trained_model(trained, method) -> None:
    net, images, _ = trained
    images = images[:12]
    maps = explain(method, net, images, [1] * len(images), {}, LAYER)
    scores = [deletion_insertion(net, x, 1, m, steps=10) for x, m in zip(images, maps)]
    random = [random_reference(net, x, 1, steps=10) for x in images]
    assert np.mean([s["deletion_auc"] for s in scores]) < np.mean([r["deletion_auc"] for r in random]) - 0.2
    assert np.mean([s["insertion_auc"] for s in scores]) > np.mean([r["insertion_auc"] for r in random]) + 0.2


# --- deletion / insertion, pointing game, energy on constructed cases --------------------


class _RegionFraction(torch.nn.Module):
    """P(class 1) = the mean of channel 0 over a fixed region (as log-probabilities, so
    that the softmax gives it back exactly)."""

    def __init__(self, region: torch.Tensor):
        super().__init__()
        self.register_buffer("region", region.float())

    def forward(self, x):
        f = (x[:, 0] * self.region).flatten(1).sum(1) / self.region.sum()
        f = f.clamp(1e-7, 1 - 1e-7)
        return torch.stack([torch.log1p(-f), torch.log(f)], dim=1)


def test_deletion_insertion_areas_on_a_model_with_a_known_answer() -> None:
    region = torch.zeros(10, 10)
    region[:2] = 1  # 20% of the image
    model = _RegionFraction(region)
    image = torch.ones(1, 10, 10)
    # the map ranks the region first (ties inside and outside it broken at random)
    result = deletion_insertion(model, image, 1, region.numpy()[None], steps=10)
    np.testing.assert_allclose(result["fraction"], np.linspace(0, 1, 11))
    # deletion: 1 -> 0 linearly over the first 20%, then 0: area 0.2 / 2
    np.testing.assert_allclose(result["deletion"], [1, 0.5] + [0] * 9, atol=1e-6)
    assert result["deletion_auc"] == pytest.approx(0.1, abs=1e-6)
    # insertion: 0 -> 1 over the first 20%, then 1: area 0.1 + 0.8
    assert result["insertion_auc"] == pytest.approx(0.9, abs=1e-6)
    # the reverse ranking deletes the region last: area 0.8 + 0.1
    assert deletion_insertion(model, image, 1, 1 - region.numpy(), steps=10)["deletion_auc"] == pytest.approx(0.9, abs=1e-6)
    # a random order removes the region at the average rate: about 1/2 for both
    random = random_reference(model, image, 1, steps=10, seed=3)
    assert random["deletion_auc"] == pytest.approx(0.5, abs=0.1)
    assert random["insertion_auc"] == pytest.approx(0.5, abs=0.1)


def test_deletion_blanks_all_channels_with_the_baseline() -> None:
    image = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4) + 1
    ranks = torch.as_tensor(ranking(-np.arange(16.0)))  # pixel 0 first, then 1, ...
    batch = perturbed_images(image, ranks, torch.tensor([0, 4, 16]), baseline=-1.0, insert=False)
    assert batch.shape == (3, 2, 4, 4)
    assert torch.equal(batch[0], image)
    assert (batch[1][:, 0] == -1).all() and torch.equal(batch[1][:, 1:], image[:, 1:])
    assert (batch[2] == -1).all()
    inserted = perturbed_images(image, ranks, torch.tensor([0, 4, 16]), baseline=-1.0, insert=True)
    assert (inserted[0] == -1).all() and torch.equal(inserted[1][:, 0], image[:, 0]) and torch.equal(inserted[2], image)


def test_ranking_breaks_ties_at_random_but_keeps_the_order_of_values() -> None:
    values = np.zeros(100)
    values[:10] = 1.0
    ranks = ranking(values, seed=0)
    assert sorted(ranks[:10]) == list(range(10))  # the high values come first
    assert not np.array_equal(ranks[10:], np.arange(10, 100))  # the flat rest not by position
    np.testing.assert_array_equal(ranks, ranking(values, seed=0))


def test_pointing_game_on_constructed_maps() -> None:
    mask = np.zeros((1, 10, 10), dtype=bool)
    mask[0, 2:4, 2:4] = True
    attribution = np.zeros((1, 10, 10))
    attribution[0, 3, 3] = 1.0
    assert pointing_game(attribution, mask, 0)
    attribution = np.zeros((1, 10, 10))
    attribution[0, 3, 6] = 1.0  # 3 pixels right of the mask
    assert not pointing_game(attribution, mask, 0)
    assert not pointing_game(attribution, mask, 2.9)
    assert pointing_game(attribution, mask, 3)
    # a 2-channel mask counts a lesion in either channel
    two = np.zeros((2, 10, 10), dtype=bool)
    two[1, 3, 6] = True
    assert pointing_game(attribution, two, 0)
    with pytest.raises(ValueError, match="non-empty"):
        pointing_game(attribution, np.zeros_like(mask), 0)
    everywhere = np.ones((1, 10, 10), dtype=bool)
    assert not pointing_game(np.zeros((1, 10, 10)), everywhere, 0)  # a constant map points nowhere


def test_pointing_chance_is_the_share_within_tolerance() -> None:
    mask = np.zeros((1, 10, 10), dtype=bool)
    mask[0, 4:6, 4:6] = True
    assert pointing_chance(mask, 0) == pytest.approx(4 / 100)
    assert pointing_chance(mask, 1) == pytest.approx(12 / 100)  # the square plus its 4 sides


def test_energy_in_mask_on_a_constructed_map() -> None:
    cam = np.ones((4, 4))
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[:2, :2] = 1  # a quarter of the image
    cam[:2, :2] = 3.0  # inside: 4 * 3 = 12, outside: 12 * 1 = 12
    assert energy_in_mask(cam, mask) == pytest.approx((0.5, 0.25))
    negative = np.full((4, 4), -5.0)
    negative[0, 0] = 2.0
    assert energy_in_mask(negative, mask)[0] == 1.0  # negative values carry no energy
    share, area = energy_in_mask(np.zeros((1, 3, 3)), np.ones((2, 3, 3)))  # channels collapsed
    assert np.isnan(share) and area == 1.0
    with pytest.raises(ValueError, match="does not match"):
        spatial_mask(np.ones((3, 3)), (4, 4))


def test_rank_correlation_on_constructed_maps() -> None:
    a = np.arange(16.0).reshape(1, 4, 4)
    assert rank_correlation(a, a) == pytest.approx(1.0)
    assert rank_correlation(a, np.exp(a)) == pytest.approx(1.0)  # ranks, not values
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, np.zeros_like(a)) == 0.0  # a constant map ranks nothing
    assert np.isnan(rank_correlation(np.ones(4), np.ones(4)))


# --- randomization ------------------------------------------------------------------


def test_cascade_blocks_go_from_the_output_back() -> None:
    blocks = cascade_blocks(_tiny_densenet(2))
    assert blocks == [
        "class_layers.out",
        "features.norm5",
        "features.denseblock2",
        "features.transition1",
        "features.denseblock1",
        "features.norm0",
        "features.conv0",
    ]


def _changed(model: torch.nn.Module, other: torch.nn.Module) -> set[str]:
    theirs = other.state_dict()
    return {k for k, v in model.state_dict().items() if not torch.equal(v, theirs[k])}


def test_cascading_randomization_changes_more_layers_at_each_step(trained) -> None:
    net = trained[0]
    before = _state(net)
    copies = [randomized_copy(net, seed=0, mode="cascading", upto=k) for k in range(1, len(cascade_blocks(net)) + 1)]
    steps = [_changed(c, net) for c in copies]
    for fewer, more in zip(steps, steps[1:]):
        assert fewer < more  # a strict superset: the earlier blocks stay randomized
    for previous, following in zip(copies, copies[1:]):
        # nested: each step keeps the random weights of the step before, adding a block
        assert _changed(following, net) - _changed(following, previous) == _changed(previous, net)
    assert steps[0] == {"class_layers.out.weight", "class_layers.out.bias"}
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the original is untouched
    full = randomized_copy(net, seed=0, mode="full")
    assert _changed(full, net) == steps[-1] and not _changed(full, randomized_copy(net, seed=0, mode="cascading"))
    assert LAYER in dict(full.named_modules())  # Grad-CAM's layer keeps its name
    assert _changed(randomized_copy(net, seed=1), full)  # another seed, other weights
    with pytest.raises(ValueError, match="full"):
        randomized_copy(net, seed=0, mode="some")


def test_cascading_sanity_check_reports_each_block(trained) -> None:
    net, images, _ = trained
    result = sanity_check(net, images[:2], [1, 1], "saliency", {}, LAYER, randomization="cascading")
    assert [step["blocks_randomized"] for step in result["cascade"]] == list(range(1, len(cascade_blocks(net)) + 1))
    assert result["cascade"][-1]["spearman_mean"] == pytest.approx(result["spearman_mean"])
    full = sanity_check(net, images[:2], [1, 1], "saliency", {}, LAYER, randomization="full")
    assert full["spearman_mean"] == pytest.approx(result["spearman_mean"])  # the last step is full randomization


# --- figures ---------------------------------------------------------------------------


def _assert_non_blank_png(path) -> None:
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05


@pytest.mark.parametrize("shape", [(2, 1, 16, 16), (2, 1, 12, 12, 12)], ids=["2d", "3d"])
def test_figures_are_written(tmp_path, shape) -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    images = rng.normal(size=shape).astype(np.float32)
    masks = np.zeros(shape, dtype=np.uint8)
    masks[1, 0, 4:8, 4:8] = 1
    maps = {m: rng.random((shape[0], 1, *shape[2:])).astype(np.float32) for m in ("gradcam", "saliency")}
    table = pd.DataFrame({"image_id": ["a", "b"], "label": [0, 1], "target": [0, 1], "prob": [0.8, 0.9]})
    plot_attribution_grid(images, maps, masks, table, ["normal", "lesion"], "grid", tmp_path / "grid.png")
    curve = {
        "fraction": np.linspace(0, 1, 6),
        "deletion": np.linspace(1, 0, 6),
        "insertion": np.linspace(0, 1, 6),
        "deletion_auc": 0.5,
        "insertion_auc": 0.5,
    }
    plot_faithfulness({"gradcam": curve, "saliency": curve, "random": curve}, "curves", tmp_path / "faith.png")
    plot_sanity(
        images[1],
        masks[1],
        {m: v[1] for m, v in maps.items()},
        {m: v[0] for m, v in maps.items()},
        {"gradcam": (0.2, 0.1), "saliency": (float("nan"), float("nan"))},
        0.5,
        "sanity",
        tmp_path / "sanity.png",
    )
    for name in ("grid.png", "faith.png", "sanity.png"):
        _assert_non_blank_png(tmp_path / name)


def test_randomized_copy_works_on_a_copy_made_by_deepcopy() -> None:
    # the sanity check randomizes copies of a model that Grad-CAM has run on
    net = _tiny_densenet(2).eval()
    explain("gradcam", net, torch.randn(1, 1, 16, 16), [1], layer=LAYER)
    assert _hooks(copy.deepcopy(randomized_copy(net, seed=0))) == 0
