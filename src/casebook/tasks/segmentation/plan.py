"""The patch size of a model, derived from the data as nnU-Net derives it.

nnU-Net starts from the median shape of the preprocessed cases (a patch that holds a
whole typical case gives the most context) and shrinks the axis with the largest
physical extent until the patch fits its memory budget, keeping every axis a multiple
of what the network's downsampling needs. We do the same with a voxel budget
(``max_patch_voxels``), which a laptop's CPU and an H100 set very differently.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from casebook.tasks.segmentation.networks import check_patch_size, patch_divisor


def _round_up(value: float, multiple: int) -> int:
    return int(max(multiple, int(np.ceil(value / multiple)) * multiple))


def patch_size(median_shape: Sequence[float], spacing: Sequence[float], *, max_voxels: int, divisor: Sequence[int]) -> list[int]:
    """A patch (array order) no larger than the median shape rounded up to ``divisor``
    multiples, reduced one ``divisor`` step at a time along the axis of largest
    physical extent (size x spacing) until it has at most ``max_voxels`` voxels (or
    every axis is at its minimum, one ``divisor``)."""
    patch = [_round_up(s, d) for s, d in zip(median_shape, divisor)]
    while int(np.prod(patch)) > max_voxels:
        shrinkable = [a for a in range(len(patch)) if patch[a] > divisor[a]]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda a: (patch[a] * spacing[a], patch[a]))
        patch[axis] -= int(divisor[axis])
    return patch


def model_patch_size(network: dict[str, Any], seg_plan: dict[str, Any], cfg: dict[str, Any]) -> list[int]:
    """The patch size one model trains and infers on: the configured one (checked
    against the network), or ``auto`` from the preprocessed data's median shape."""
    spacing = seg_plan["spacing_array_order"]
    dims = len(spacing)
    given = cfg.get("patch_size", "auto")
    if given != "auto":
        check_patch_size(network, list(given), spatial_dims=dims, spacing=spacing)
        return [int(p) for p in given]
    budget = int(cfg.get("max_patch_voxels", 32768))
    # a DynUNet's strides depend on the patch it is planned for: plan, then re-plan once
    divisor = patch_divisor(network, spatial_dims=dims, patch_size=seg_plan["median_shape"], spacing=spacing)
    patch = patch_size(seg_plan["median_shape"], spacing, max_voxels=budget, divisor=divisor)
    divisor = patch_divisor(network, spatial_dims=dims, patch_size=patch, spacing=spacing)
    patch = [max(d, p // d * d) for p, d in zip(patch, divisor)]
    check_patch_size(network, patch, spatial_dims=dims, spacing=spacing)
    return patch
