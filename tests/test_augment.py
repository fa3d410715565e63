"""Tests for casebook.engine.augment: the TorchIO augmentation policy built from the config."""

from __future__ import annotations

import pytest
import torch

from casebook.engine.augment import POLICY_KEYS, build_augmentation

torch.set_num_threads(1)


@pytest.fixture
def image2d() -> torch.Tensor:
    return torch.rand(1, 12, 10, generator=torch.Generator().manual_seed(0))  # (C, H, W), not square


@pytest.fixture
def image3d() -> torch.Tensor:
    return torch.rand(1, 6, 7, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("policy", [None, {}, {"noise": {"p": 0}}, {"flip": {"axes": []}}, {"flip": {}}])
def test_empty_policy_gives_none(policy) -> None:
    assert build_augmentation(policy, spatial_dims=2) is None


def test_unknown_key_is_refused() -> None:
    with pytest.raises(ValueError, match="elastic"):
        build_augmentation({"elastic": {"p": 1}, "noise": {"p": 1}}, spatial_dims=2)


@pytest.mark.parametrize("key", POLICY_KEYS)
def test_2d_augmentation_keeps_shape_and_changes_the_image(key, image2d) -> None:
    cfg = {"p": 1.0}
    if key == "flip":
        cfg["axes"] = [0, 1]
    if key == "blur":
        cfg["std"] = 3.0
    if key == "affine":
        cfg.update(degrees=20, translation=2)
    transform = build_augmentation({key: cfg}, spatial_dims=2)
    torch.manual_seed(0)
    out = transform(image2d.clone())
    assert out.shape == image2d.shape
    assert torch.is_tensor(out)
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, image2d)


@pytest.mark.parametrize("key", ["affine", "noise", "gamma"])
def test_3d_augmentation_keeps_shape_and_changes_the_image(key, image3d) -> None:
    transform = build_augmentation({key: {"p": 1.0}}, spatial_dims=3)
    torch.manual_seed(0)
    out = transform(image3d.clone())
    assert out.shape == image3d.shape
    assert not torch.allclose(out, image3d)


@pytest.mark.parametrize("axis", [0, 1])
def test_2d_flip_axis_is_the_array_axis(axis, image2d) -> None:
    transform = build_augmentation({"flip": {"axes": [axis], "p": 1.0}}, spatial_dims=2)
    assert torch.equal(transform(image2d), torch.flip(image2d, dims=[axis + 1]))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_3d_flip_axis_is_the_array_axis(axis, image3d) -> None:
    transform = build_augmentation({"flip": {"axes": [axis], "p": 1.0}}, spatial_dims=3)
    assert torch.equal(transform(image3d), torch.flip(image3d, dims=[axis + 1]))


def test_flip_of_two_axes(image2d) -> None:
    transform = build_augmentation({"flip": {"axes": [0, 1], "p": 1.0}}, spatial_dims=2)
    assert torch.equal(transform(image2d), torch.flip(image2d, dims=[1, 2]))


@pytest.mark.parametrize("axes, dims", [([2], 2), ([-1], 2), ([3], 3)])
def test_flip_axis_out_of_range_is_refused(axes, dims) -> None:
    with pytest.raises(ValueError, match="flip axes"):
        build_augmentation({"flip": {"axes": axes, "p": 0.5}}, spatial_dims=dims)


def test_augmentation_is_reproducible_from_the_torch_seed(image2d) -> None:
    policy = {"affine": {"p": 0.5}, "flip": {"axes": [0, 1], "p": 0.5}, "noise": {"p": 0.5, "std": 0.1}}
    transform = build_augmentation(policy, spatial_dims=2)
    torch.manual_seed(11)
    first = [transform(image2d) for _ in range(4)]
    torch.manual_seed(11)
    second = [transform(image2d) for _ in range(4)]
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    assert any(not torch.equal(first[0], x) for x in first[1:])  # random from call to call
