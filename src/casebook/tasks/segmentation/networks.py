"""MONAI segmentation networks chosen by name in the case-study config.

``network: {name: unet, kwargs: {...}}`` builds the MONAI network named there with the
data's spatial dims and channels filled in. The defaults below are small enough to train
on a CPU; ``kwargs`` pass through to the MONAI constructor and override them.

Every network here downsamples by a fixed factor per axis, so a patch dimension that is
not a multiple of that factor either fails inside the forward pass or misaligns the skip
connections. ``patch_divisor`` reports the factor so that the caller can choose a patch
size the network accepts, and ``check_patch_size`` refuses one it does not, before any
training starts.

``patch_size`` and ``spacing`` are always in array order, the same as the tensors
(z, y, x for 3D), never in the (x, y, z) order of an image header.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.networks import nets

SEG_NETWORKS: dict[str, Callable[..., torch.nn.Module]] = {
    "unet": nets.UNet,
    "segresnet": nets.SegResNet,
    "dynunet": nets.DynUNet,
    "unetr": nets.UNETR,
    "swinunetr": nets.SwinUNETR,
}

# Defaults that do not depend on the data; those that do are filled in by _shape_kwargs.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "unet": {"channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": 2, "norm": "instance"},
    "segresnet": {"init_filters": 16, "blocks_down": (1, 2, 2, 4), "blocks_up": (1, 1, 1)},
    # nnU-Net's instance norm has a learnable scale and shift, as MONAI's DynUNet default:
    # without them every map ahead of the 1x1 head is pinned to zero mean and unit variance
    # per patch, and a small organ may get no feature (abdomen_ct's spleen: Dice 0.000)
    "dynunet": {"norm_name": ("instance", {"affine": True}), "deep_supervision": False, "res_block": True},
    # MONAI's own defaults are ViT-B (768 wide, 12 heads, ~90M parameters); this ViT is
    # small enough for a CPU.
    "unetr": {"feature_size": 16, "hidden_size": 192, "mlp_dim": 768, "num_heads": 4},
    # MONAI >= 1.5 takes no img_size: the window attention adapts to the input shape.
    # feature_size must be a multiple of 12 (MONAI checks).
    "swinunetr": {"feature_size": 12, "use_checkpoint": False},
}

# nnU-Net's filter schedule: doubling from 16, capped at 320 so deep levels stay affordable.
_BASE_FILTERS, _MAX_FILTERS = 16, 320
# UNETR cuts the image into 16^d tokens; MONAI's UNETR hard-codes the 16.
_UNETR_PATCH = 16
# SwinUNETR embeds patches of `patch_size` (default 2), then merges 2x2x2 four times,
# so the input must be a multiple of patch_size ** 5.
_SWIN_STAGES = 5
# MONAI's DynUNet refuses fewer levels than this.
_DYNUNET_MIN_LEVELS = 3
# Where each network's deepest feature map goes through a norm layer configured by kwargs.
_NORM_KEY = {"unet": "norm", "dynunet": "norm_name", "swinunetr": "norm_name"}


def _known(spec: dict[str, Any]) -> str:
    """The network's name, or a ValueError listing the known names."""
    name = spec["name"]
    if name not in SEG_NETWORKS:
        raise ValueError(f"unknown segmentation network {name!r}; known: {sorted(SEG_NETWORKS)}")
    return name


def plan_dynunet(
    patch_size: Sequence[int], spacing: Sequence[float], *, max_levels: int = 5, min_size: int = 4
) -> tuple[list[list[int]], list[list[int]]]:
    """Per-level ``(kernels, strides)`` for DynUNet by the nnU-Net rule.

    At each level an axis is halved (stride 2) only when its current spacing is at most
    twice the finest current spacing and its current size is at least ``2 * min_size``:
    a coarse axis (thick slices) is left alone until the fine axes have caught up, so the
    deep levels see roughly isotropic voxels. Its kernel is 1 while it is more than twice
    as coarse, since a 3-wide kernel across thick slices mixes tissue that lies far apart.
    The first level has stride 1 (full resolution); planning stops when no axis can be
    halved or after ``max_levels`` levels (the first one included).

    ``kernels[i]`` and ``strides[i]`` are DynUNet's level ``i``; the kernel follows the
    spacing *after* that level's stride, the resolution at which it convolves.
    """
    if len(patch_size) != len(spacing):
        raise ValueError(f"patch_size {tuple(patch_size)} and spacing {tuple(spacing)} differ in length")
    if any(s <= 0 for s in spacing):
        raise ValueError(f"spacing must be positive, got {tuple(spacing)}")
    sizes = [float(s) for s in patch_size]
    spacings = [float(s) for s in spacing]
    kernels, strides = [_kernel(spacings)], [[1] * len(sizes)]
    while len(strides) < max_levels:
        finest = min(spacings)
        stride = [2 if sp <= 2 * finest and sz >= 2 * min_size else 1 for sp, sz in zip(spacings, sizes)]
        if all(s == 1 for s in stride):
            break
        sizes = [sz / s for sz, s in zip(sizes, stride)]
        spacings = [sp * s for sp, s in zip(spacings, stride)]
        strides.append(stride)
        kernels.append(_kernel(spacings))
    return kernels, strides


def _kernel(spacings: Sequence[float]) -> list[int]:
    """3 on axes within a factor 2 of the finest spacing, 1 (no mixing) on coarser ones."""
    finest = min(spacings)
    return [3 if sp <= 2 * finest else 1 for sp in spacings]


def _stride_product(strides: Sequence[int | Sequence[int]], spatial_dims: int) -> tuple[int, ...]:
    """Total downsampling per axis of MONAI strides (each one int, or one per axis)."""
    per_level = [[s] * spatial_dims if isinstance(s, int) else list(s) for s in strides]
    return tuple(math.prod(int(level[axis]) for level in per_level) for axis in range(spatial_dims))


def _dynunet_strides(kwargs: dict[str, Any], patch_size, spacing) -> tuple[list, list]:
    """DynUNet's (kernel_size, strides): the config's if given, else the nnU-Net plan."""
    if "strides" in kwargs and "kernel_size" in kwargs:
        return kwargs["kernel_size"], kwargs["strides"]
    if patch_size is None or spacing is None:
        raise ValueError("dynunet: planning its strides needs patch_size and spacing")
    kernels, strides = plan_dynunet(patch_size, spacing)
    return kwargs.get("kernel_size", kernels), kwargs.get("strides", strides)


def _shape_kwargs(name: str, kwargs: dict[str, Any], patch_size, spacing) -> dict[str, Any]:
    """Defaults that follow from the patch and spacing (or from the other kwargs)."""
    if name == "unetr":
        return {"img_size": tuple(patch_size)}
    if name == "dynunet":
        kernels, strides = _dynunet_strides(kwargs, patch_size, spacing)
        return {
            "kernel_size": kernels,
            "strides": strides,
            # The decoder undoes each encoder stride (the first level has none to undo).
            "upsample_kernel_size": strides[1:],
            "filters": [min(_BASE_FILTERS * 2**i, _MAX_FILTERS) for i in range(len(strides))],
        }
    return {}


def _kwargs(spec: dict[str, Any], patch_size, spacing) -> dict[str, Any]:
    """The constructor's kwargs: our defaults, overridden by the config's ``kwargs``."""
    name = _known(spec)
    overrides = dict(spec.get("kwargs") or {})
    kwargs = {**_DEFAULTS[name], **_shape_kwargs(name, overrides, patch_size, spacing)}
    kwargs.update(overrides)
    return kwargs


def patch_divisor(
    spec: dict[str, Any],
    *,
    spatial_dims: int,
    patch_size: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
) -> tuple[int, ...]:
    """Per axis, what each patch dimension must be a multiple of for the network in ``spec``.

    DynUNet plans its strides from the patch and the spacing, so it needs both (unless
    the config gives ``strides`` and ``kernel_size``); the other networks need neither.
    """
    name = _known(spec)
    kwargs = dict(spec.get("kwargs") or {})
    if name == "unet":
        return _stride_product(kwargs.get("strides", _DEFAULTS["unet"]["strides"]), spatial_dims)
    if name == "segresnet":
        blocks_down = kwargs.get("blocks_down", _DEFAULTS["segresnet"]["blocks_down"])
        return (2 ** (len(blocks_down) - 1),) * spatial_dims
    if name == "dynunet":
        return _stride_product(_dynunet_strides(kwargs, patch_size, spacing)[1], spatial_dims)
    if name == "unetr":
        return (_UNETR_PATCH,) * spatial_dims
    # swinunetr; its kwarg ``patch_size`` is the token size, not the training patch.
    return (int(kwargs.get("patch_size", 2)) ** _SWIN_STAGES,) * spatial_dims


def check_patch_size(
    spec: dict[str, Any],
    patch_size: Sequence[int],
    *,
    spatial_dims: int,
    spacing: Sequence[float] | None = None,
) -> None:
    """Raise ``ValueError`` unless every patch dimension is a multiple of the network's divisor.

    Also refuses a patch too small for the network's depth: fewer than three DynUNet
    levels, or a single voxel left at an instance-normalised bottleneck.
    """
    name = _known(spec)
    if len(patch_size) != spatial_dims:
        raise ValueError(f"{name}: patch size {tuple(patch_size)} does not have {spatial_dims} dimensions")
    divisor = patch_divisor(spec, spatial_dims=spatial_dims, patch_size=patch_size, spacing=spacing)
    bad = [axis for axis, (p, d) in enumerate(zip(patch_size, divisor)) if p % d]
    if bad:
        needed = ", ".join(f"axis {axis} must be a multiple of {divisor[axis]}" for axis in bad)
        raise ValueError(f"network {name!r} cannot take patch size {tuple(patch_size)}: {needed} (its downsampling per axis is {divisor})")
    _check_depth(spec, patch_size, divisor, spacing)


def _check_depth(spec: dict[str, Any], patch_size: Sequence[int], divisor: Sequence[int], spacing) -> None:
    """Refuse patches too small for the network's depth, which MONAI only reports mid-forward."""
    name, kwargs = spec["name"], dict(spec.get("kwargs") or {})
    if name == "dynunet":
        levels = len(_dynunet_strides(kwargs, patch_size, spacing)[1])
        if levels < _DYNUNET_MIN_LEVELS:
            raise ValueError(
                f"network 'dynunet' cannot take patch size {tuple(patch_size)} at spacing {tuple(spacing or ())}: "
                f"it allows only {levels} levels and DynUNet needs {_DYNUNET_MIN_LEVELS} (use a larger patch)"
            )
    # Instance norm of a single voxel is undefined (torch raises, in eval mode too), so the
    # deepest map must keep more than one voxel: e.g. SwinUNETR cannot take 32^3.
    instance_norm = name in _NORM_KEY and _is_instance_norm(kwargs.get(_NORM_KEY[name], "instance"))
    if instance_norm and math.prod(p // d for p, d in zip(patch_size, divisor)) == 1:
        raise ValueError(
            f"network {name!r} cannot take patch size {tuple(patch_size)}: downsampling by {tuple(divisor)} "
            f"leaves a single voxel, which instance norm cannot normalise; make one axis at least twice "
            f"its multiple"
        )


def _is_instance_norm(norm: str | Sequence[Any]) -> bool:
    """Whether a MONAI norm spec (a name, or a (name, args) pair) is instance norm."""
    norm_name = norm if isinstance(norm, str) else norm[0]
    return str(norm_name).lower().startswith("instance")


def build_seg_network(
    spec: dict[str, Any],
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    patch_size: Sequence[int],
    spacing: Sequence[float],
) -> torch.nn.Module:
    """Instantiate the MONAI segmentation network named in ``spec`` (see SEG_NETWORKS).

    The patch size is checked first, so that a bad one fails here, naming the network,
    rather than deep inside the first forward pass.
    """
    name = _known(spec)
    check_patch_size(spec, patch_size, spatial_dims=spatial_dims, spacing=spacing)
    kwargs = _kwargs(spec, patch_size, spacing)
    kwargs.update({"spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": out_channels})
    return SEG_NETWORKS[name](**kwargs)
