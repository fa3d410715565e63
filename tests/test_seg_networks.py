"""Segmentation networks by name: forward shapes, the DynUNet plan, patch-size checks."""

from __future__ import annotations

import math

import pytest
import torch

from casebook.tasks.segmentation.networks import (
    SEG_NETWORKS,
    build_seg_network,
    check_patch_size,
    patch_divisor,
    plan_dynunet,
)

ISO = (1.0, 1.0, 1.0)
ANISO_SPACING = (3.0, 0.8, 0.8)  # z (slice thickness) coarse, as in many CT and MRI series
ANISO_PATCH = (16, 64, 64)
# The smallest cube-ish patch each accepts; SwinUNETR's 32^3 would leave one voxel at the bottom.
SMALL_PATCH = {
    "unet": (32, 32, 32),
    "segresnet": (32, 32, 32),
    "dynunet": (32, 32, 32),
    "unetr": (32, 32, 32),
    "swinunetr": (32, 32, 64),
}


def _build(spec: dict, patch, spacing=ISO, channels: int = 4) -> torch.nn.Module:
    return build_seg_network(
        spec,
        spatial_dims=len(patch),
        in_channels=channels,
        out_channels=channels,
        patch_size=patch,
        spacing=spacing,
    )


def _forward(net: torch.nn.Module, patch, channels: int = 4) -> torch.Tensor:
    torch.manual_seed(0)
    net.eval()
    with torch.no_grad():
        return net(torch.randn(1, channels, *patch))


def _n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_names():
    assert set(SEG_NETWORKS) == {"unet", "segresnet", "dynunet", "unetr", "swinunetr"}
    assert set(SMALL_PATCH) == set(SEG_NETWORKS)


@pytest.mark.parametrize("name", sorted(SEG_NETWORKS))
def test_forward_3d(name):
    patch = SMALL_PATCH[name]
    net = _build({"name": name}, patch)
    out = _forward(net, patch)
    assert out.shape == (1, 4, *patch)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["unet", "dynunet"])
def test_forward_2d(name):
    patch = (32, 32)
    net = _build({"name": name, "kwargs": None}, patch, spacing=(1.0, 1.0))
    assert _forward(net, patch).shape == (1, 4, *patch)


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match="unknown segmentation network 'vnet-ish'") as info:
        _build({"name": "vnet-ish"}, (32, 32, 32))
    assert all(name in str(info.value) for name in SEG_NETWORKS)
    with pytest.raises(ValueError, match="unknown"):
        patch_divisor({"name": "vnet-ish"}, spatial_dims=3)


# --- the nnU-Net plan ---------------------------------------------------------------


def test_plan_anisotropic_waits_for_in_plane_to_catch_up():
    kernels, strides = plan_dynunet(ANISO_PATCH, ANISO_SPACING)
    assert strides[0] == [1, 1, 1]
    # 3.0 > 2 * 0.8: no z convolution and no z downsampling until in-plane is 1.6 mm.
    assert kernels[0] == [1, 3, 3]
    assert strides[1] == [1, 2, 2]
    assert kernels == [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    assert strides == [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]


def test_plan_follows_the_rule_level_by_level():
    """Replay the plan: z is halved only when within 2x of the finest spacing, and has
    kernel 1 exactly while it is coarser than that."""
    kernels, strides = plan_dynunet(ANISO_PATCH, ANISO_SPACING)
    spacing = list(ANISO_SPACING)
    for level, (kernel, stride) in enumerate(zip(kernels, strides)):
        finest = min(spacing)
        for axis in range(3):
            if stride[axis] == 2:
                assert spacing[axis] <= 2 * finest, (level, axis, spacing)
        spacing = [sp * st for sp, st in zip(spacing, stride)]
        assert [k == 1 for k in kernel] == [sp > 2 * min(spacing) for sp in spacing], (level, spacing)


def test_plan_isotropic_downsamples_all_axes_together():
    kernels, strides = plan_dynunet((32, 32, 32), ISO)
    assert strides == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]  # 32 -> 4 = min_size
    assert kernels == [[3, 3, 3]] * 4


def test_plan_respects_max_levels_and_min_size():
    _, strides = plan_dynunet((128, 128, 128), ISO)
    assert len(strides) == 5
    _, strides = plan_dynunet((128, 128, 128), ISO, max_levels=3)
    assert len(strides) == 3
    _, strides = plan_dynunet((64, 64, 64), ISO, min_size=8)
    assert [math.prod(s[a] for s in strides) for a in range(3)] == [8, 8, 8]


@pytest.mark.parametrize(
    "patch, spacing",
    [(ANISO_PATCH, ANISO_SPACING), ((32, 32, 32), ISO), ((40, 96, 96), (2.5, 0.7, 0.7)), ((64, 48), (1.0, 0.5))],
)
def test_plan_strides_divide_the_patch(patch, spacing):
    kernels, strides = plan_dynunet(patch, spacing)
    assert len(kernels) == len(strides) >= 3
    for axis, size in enumerate(patch):
        total = math.prod(s[axis] for s in strides)
        assert size % total == 0
        assert size // total >= 4  # min_size
    assert patch_divisor({"name": "dynunet"}, spatial_dims=len(patch), patch_size=patch, spacing=spacing) == tuple(
        math.prod(s[a] for s in strides) for a in range(len(patch))
    )


def test_dynunet_from_plan_runs_on_anisotropic_patch():
    net = _build({"name": "dynunet"}, ANISO_PATCH, spacing=ANISO_SPACING)
    kernels, strides = plan_dynunet(ANISO_PATCH, ANISO_SPACING)
    assert [list(k) for k in net.kernel_size] == kernels
    assert [list(s) for s in net.strides] == strides
    # The first block really convolves in-plane only (kernel 1 along z).
    assert net.input_block.conv1.conv.weight.shape[-3:] == (1, 3, 3)
    assert _forward(net, ANISO_PATCH).shape == (1, 4, *ANISO_PATCH)


# --- patch sizes ------------------------------------------------------------------------


def test_patch_divisor_values():
    assert patch_divisor({"name": "unet"}, spatial_dims=3) == (8, 8, 8)
    assert patch_divisor({"name": "unet"}, spatial_dims=2) == (8, 8)
    assert patch_divisor({"name": "segresnet"}, spatial_dims=3) == (8, 8, 8)
    assert patch_divisor({"name": "unetr"}, spatial_dims=3) == (16, 16, 16)
    assert patch_divisor({"name": "swinunetr"}, spatial_dims=3) == (32, 32, 32)
    aniso = patch_divisor({"name": "dynunet"}, spatial_dims=3, patch_size=ANISO_PATCH, spacing=ANISO_SPACING)
    assert aniso == (4, 16, 16)
    iso = patch_divisor({"name": "dynunet"}, spatial_dims=3, patch_size=(32, 32, 32), spacing=ISO)
    assert iso == (8, 8, 8)


def test_patch_divisor_follows_kwargs():
    assert patch_divisor({"name": "segresnet", "kwargs": {"blocks_down": (1, 2, 2)}}, spatial_dims=3) == (4, 4, 4)
    per_axis = {"name": "unet", "kwargs": {"channels": (8, 16, 32), "strides": ((1, 2, 2), (2, 2, 2))}}
    assert patch_divisor(per_axis, spatial_dims=3) == (2, 4, 4)
    explicit = {"name": "dynunet", "kwargs": {"kernel_size": [3, 3, 3], "strides": [1, 2, 2]}}
    assert patch_divisor(explicit, spatial_dims=3) == (4, 4, 4)  # no plan, so no spacing needed


def test_dynunet_divisor_needs_patch_and_spacing():
    with pytest.raises(ValueError, match="dynunet.*spacing"):
        patch_divisor({"name": "dynunet"}, spatial_dims=3)


def test_check_patch_size_refuses_non_multiple():
    with pytest.raises(ValueError) as info:
        check_patch_size({"name": "unet"}, (20, 32, 32), spatial_dims=3, spacing=ISO)
    message = str(info.value)
    assert "unet" in message and "(20, 32, 32)" in message and "multiple of 8" in message
    check_patch_size({"name": "unet"}, (24, 32, 32), spatial_dims=3, spacing=ISO)
    with pytest.raises(ValueError, match="'unetr'.*multiple of 16"):
        check_patch_size({"name": "unetr"}, (32, 32, 40), spatial_dims=3)
    with pytest.raises(ValueError, match="3 dimensions"):
        check_patch_size({"name": "unet"}, (32, 32), spatial_dims=3)


def test_build_checks_patch_size_first():
    with pytest.raises(ValueError, match="'segresnet'.*multiple of 8"):
        _build({"name": "segresnet"}, (32, 30, 32))


def test_patches_too_small_for_the_depth_are_refused():
    # Each would fail only inside the forward pass (instance norm of one voxel) or in DynUNet.
    with pytest.raises(ValueError, match="'swinunetr'.*single voxel"):
        check_patch_size({"name": "swinunetr"}, (32, 32, 32), spatial_dims=3)
    with pytest.raises(ValueError, match="'unet'.*single voxel"):
        check_patch_size({"name": "unet"}, (8, 8, 8), spatial_dims=3)
    with pytest.raises(ValueError, match="'dynunet'.*only 2 levels"):
        check_patch_size({"name": "dynunet"}, (8, 8, 8), spatial_dims=3, spacing=ISO)
    # Group norm (SegResNet) copes with a single voxel; so does a UNet with batch norm.
    check_patch_size({"name": "segresnet"}, (8, 8, 8), spatial_dims=3)
    check_patch_size({"name": "unet", "kwargs": {"norm": "batch"}}, (8, 8, 8), spatial_dims=3)
    check_patch_size({"name": "swinunetr"}, (32, 32, 64), spatial_dims=3)


# --- kwargs and size --------------------------------------------------------------------


def test_kwargs_override_defaults():
    small = {"name": "unet", "kwargs": {"channels": (8, 16), "strides": (2,)}}
    assert patch_divisor(small, spatial_dims=3) == (2, 2, 2)
    small_net = _build(small, (6, 10, 10))  # a multiple of 2, which the default (8) refuses
    assert _forward(small_net, (6, 10, 10)).shape == (1, 4, 6, 10, 10)
    assert _n_params(small_net) < _n_params(_build({"name": "unet"}, (32, 32, 32))) / 10
    assert _build({"name": "segresnet", "kwargs": {"init_filters": 8}}, (32, 32, 32)).init_filters == 8
    dyn = _build({"name": "dynunet", "kwargs": {"filters": [8, 16, 32, 64]}}, (32, 32, 32))
    assert dyn.filters == [8, 16, 32, 64]
    assert _build({"name": "swinunetr", "kwargs": {"feature_size": 24}}, (32, 32, 64)).swinViT.embed_dim == 24


def test_default_unet_is_small():
    # ~1.2M parameters; a net 10x larger would not run comfortably on a CPU.
    assert 1e5 < _n_params(_build({"name": "unet"}, (32, 32, 32))) < 3e6


def test_defaults_are_cpu_sized():
    # MONAI's own UNETR defaults (ViT-B) have ~90M parameters; ours stay far below.
    for name, patch in SMALL_PATCH.items():
        assert _n_params(_build({"name": name}, patch)) < 2e7, name


def test_dynunet_instance_norm_has_a_learnable_scale_and_shift() -> None:
    # nnU-Net's norm (affine=True) and MONAI's DynUNet default; with affine=False the
    # abdomen_ct DynUNet never predicted the spleen
    from casebook.tasks.segmentation.networks import build_seg_network

    kw = dict(spatial_dims=3, in_channels=1, out_channels=6, patch_size=(24, 32, 40), spacing=(7.5, 5.0, 5.0))
    net = build_seg_network({"name": "dynunet", "kwargs": {"filters": [8, 16, 32, 64]}}, **kw)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    assert norms and all(m.affine for m in norms)
