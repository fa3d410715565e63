"""Tests for casebook.tasks.classification.networks: MONAI networks by name, and their Grad-CAM layers."""

from __future__ import annotations

import pytest
import torch

from casebook.tasks.classification.networks import NETWORKS, build_network, cam_layer

torch.set_num_threads(1)


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
@pytest.mark.parametrize("spatial_dims, in_channels, size", [(2, 3, 32), (3, 1, 32)], ids=["2d-rgb", "3d"])
def test_logits_have_shape_batch_by_classes(name, spatial_dims, in_channels, size) -> None:
    torch.manual_seed(0)
    net = build_network({"name": name}, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=3).eval()
    x = torch.randn(2, in_channels, *([size] * spatial_dims))
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3)
    assert torch.isfinite(y).all()
    # the network really is of the requested dimensionality
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert all(isinstance(c, torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d) for c in convs)
    assert convs[0].in_channels == in_channels


def test_kwargs_pass_through_to_monai() -> None:
    spec = {"name": "densenet", "kwargs": {"init_features": 8, "growth_rate": 4, "block_config": [1, 1]}}
    net = build_network(spec, spatial_dims=2, in_channels=1, num_classes=2)
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.out_channels == 8
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 1, 16, 16)).shape == (1, 2)
    # the spec itself is not modified by filling in dims/channels/classes
    assert spec["kwargs"] == {"init_features": 8, "growth_rate": 4, "block_config": [1, 1]}


def test_dims_channels_and_classes_override_kwargs() -> None:
    spec = {"name": "resnet10", "kwargs": {"num_classes": 7, "n_input_channels": 5}}
    net = build_network(spec, spatial_dims=2, in_channels=1, num_classes=2)
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 1, 16, 16)).shape == (1, 2)


def test_unknown_network_is_refused() -> None:
    with pytest.raises(ValueError, match="vit_huge"):
        build_network({"name": "vit_huge"}, spatial_dims=2, in_channels=1, num_classes=2)


@pytest.mark.parametrize(
    "name, layer", [("resnet18", "layer4"), ("resnet50", "layer4"), ("densenet", "class_layers.relu"), ("densenet121", "class_layers.relu")]
)
def test_cam_layer_default(name, layer) -> None:
    assert cam_layer({"name": name}) == layer


def test_cam_layer_override() -> None:
    assert cam_layer({"name": "resnet18", "cam_layer": "layer3"}) == "layer3"


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_cam_layer_exists_in_every_network(name) -> None:
    kwargs = {"init_features": 4, "growth_rate": 4, "block_config": [1, 1]} if name == "densenet" else {}
    net = build_network({"name": name, "kwargs": kwargs}, spatial_dims=2, in_channels=1, num_classes=2)
    assert cam_layer({"name": name}) in dict(net.named_modules())
