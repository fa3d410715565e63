"""Tests for casebook.explain: Grad-CAM maps and the CAM energy inside lesion masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from monai.networks.nets import DenseNet

from casebook.explain import cam_mask_summary, energy_in_mask, grad_cam, pick_examples
from casebook.models import build_network, cam_layer

torch.set_num_threads(1)


def test_energy_in_mask_on_a_constructed_map() -> None:
    cam = np.ones((4, 4))
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[:2, :2] = 1  # a quarter of the image
    cam[:2, :2] = 3.0  # inside: 4 * 3 = 12, outside: 12 * 1 = 12
    share, area = energy_in_mask(cam, mask)
    assert share == pytest.approx(0.5)
    assert area == pytest.approx(0.25)


def test_energy_in_mask_ignores_negative_values() -> None:
    cam = np.full((4, 4), -5.0)
    cam[0, 0] = 2.0
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, :2] = True
    share, area = energy_in_mask(cam, mask)
    assert share == 1.0  # all positive energy is inside
    assert area == pytest.approx(2 / 16)


def test_energy_in_mask_of_an_empty_map_is_nan() -> None:
    share, area = energy_in_mask(np.zeros((3, 3, 3)), np.ones((3, 3, 3)))
    assert np.isnan(share)
    assert area == 1.0


def test_cam_mask_summary_skips_images_without_a_lesion() -> None:
    cams = np.ones((3, 1, 4, 4))
    masks = np.zeros((3, 1, 4, 4), dtype=np.uint8)
    masks[0, 0, :2, :2] = 1  # share 0.25, area 0.25
    cams[2, 0, :, :2] = 0.0
    masks[2, 0, :, 2:] = 1  # all energy inside: share 1, area 0.5
    summary = cam_mask_summary(cams, masks, ["a", "b", "c"])
    assert summary["n_images"] == 2
    assert [r["image_id"] for r in summary["per_image"]] == ["a", "c"]
    assert summary["cam_energy_in_mask_mean"] == pytest.approx(0.625)
    assert summary["mask_area_fraction_mean"] == pytest.approx(0.375)
    assert summary["enrichment"] == pytest.approx(0.625 / 0.375)
    assert cam_mask_summary(cams, np.zeros_like(masks), ["a", "b", "c"]) == {"n_images": 0, "per_image": []}


def test_pick_examples_per_class_and_seeded() -> None:
    predictions = pd.DataFrame({"image_id": [f"i{k:02d}" for k in range(20)], "label": [0] * 12 + [1] * 6 + [2] * 2})
    picked = pick_examples(predictions, per_class=3, seed=0)
    assert picked["label"].value_counts().sort_index().tolist() == [3, 3, 2]
    assert picked.equals(pick_examples(predictions, per_class=3, seed=0))
    assert set(picked["image_id"]) <= set(predictions["image_id"])


def _tiny_densenet(spatial_dims: int) -> torch.nn.Module:
    torch.manual_seed(0)
    net = DenseNet(spatial_dims=spatial_dims, in_channels=1, out_channels=2, init_features=8, growth_rate=8, block_config=(1, 1))
    return net.eval()


@pytest.mark.parametrize("shape", [(3, 1, 16, 20), (2, 1, 16, 16, 12)], ids=["2d", "3d"])
def test_grad_cam_maps_have_the_input_shape_and_are_in_unit_range(shape) -> None:
    net = _tiny_densenet(len(shape) - 2)
    images = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    maps = grad_cam(net, cam_layer({"name": "densenet"}), images, 1)
    assert maps.shape == (shape[0], 1, *shape[2:])
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert not net.training  # Grad-CAM leaves the model in eval mode


def test_grad_cam_per_image_classes() -> None:
    net = _tiny_densenet(3)
    images = torch.rand(2, 1, 16, 16, 12, generator=torch.Generator().manual_seed(1))
    both = grad_cam(net, "class_layers.relu", images, [0, 1])
    first = grad_cam(net, "class_layers.relu", images[:1], 0)
    second = grad_cam(net, "class_layers.relu", images[1:], 1)
    np.testing.assert_allclose(both, np.concatenate([first, second]), atol=1e-6)
    # the class matters: the other class gives another map
    assert not np.allclose(grad_cam(net, "class_layers.relu", images[:1], 1), first)


def test_grad_cam_on_a_resnet_layer() -> None:
    torch.manual_seed(0)
    net = build_network({"name": "resnet10"}, spatial_dims=2, in_channels=1, num_classes=2).eval()
    maps = grad_cam(net, cam_layer({"name": "resnet10"}), torch.rand(2, 1, 32, 32), 0)
    assert maps.shape == (2, 1, 32, 32)
    assert maps.min() >= 0.0 and maps.max() <= 1.0


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


def test_grad_cam_is_high_where_the_evidence_is_not_flipped():
    image = torch.zeros(1, 1, 16, 16)
    image[0, 0, 4:8, 10:14] = 1.0
    cam = grad_cam(_SquareDetector(), "features.1", image, 1)[0, 0]
    assert cam[4:8, 10:14].min() > 0.99 and cam.max() == pytest.approx(1.0)
    outside = np.ones_like(cam, dtype=bool)
    outside[4:8, 10:14] = False
    assert cam[outside].max() < 0.01
