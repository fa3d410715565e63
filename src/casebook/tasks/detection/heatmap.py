"""Centre-point targets and decoding (CenterNet, Zhou et al. 2019), in 2D or 3D.

A finding is a Gaussian peak on the heatmap, exactly 1 at its centre voxel, with a
standard deviation of a sixth of its size along each axis (at least
:data:`MIN_SIGMA` voxels), and the log of its size (voxels) in the size channels at
that voxel. Excluded findings are not targets: the loss ignores the voxels around them,
so that a detector is neither taught to find nor to miss them. Decoding keeps the local
maxima of the predicted heatmap (a max-pool that leaves them unchanged) above a score,
each with the size predicted at it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: smallest Gaussian standard deviation (voxels): a tiny finding still spans a few voxels
MIN_SIGMA = 0.75


def _gaussian(shape: tuple[int, ...], centre: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    axes = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij", sparse=True)
    return np.exp(-sum(((a - c) / s) ** 2 for a, c, s in zip(axes, centre, sigma)) / 2.0)


def targets(shape: tuple[int, ...], centres: np.ndarray, sizes: np.ndarray, excluded: np.ndarray) -> dict[str, np.ndarray]:
    """The training targets of one volume: ``heatmap`` (1, *shape), ``size`` (ndim,
    *shape; log voxels at each centre), ``size_weight`` (1, *shape; where the sizes are
    taught: the centres), ``centres`` (1, *shape; 1 at each centre) and ``weight`` (1, *shape; 0
    around excluded findings). ``centres``/``sizes``: (n, ndim) voxels in array-axis order."""
    ndim = len(shape)
    heat = np.zeros(shape, np.float32)
    size = np.zeros((ndim, *shape), np.float32)
    weight_size = np.zeros(shape, np.float32)
    at_centre = np.zeros(shape, np.float32)
    weight = np.ones(shape, np.float32)
    for centre, extent, skip in zip(centres, sizes, excluded):
        # a finding centred outside the array (a patch's neighbour) leaves its tail only
        peak = np.rint(centre).astype(int)
        blob = _gaussian(shape, peak, np.maximum(np.asarray(extent) / 6.0, MIN_SIGMA))
        if skip:
            weight[blob > 0.05] = 0.0
            continue
        heat = np.maximum(heat, blob.astype(np.float32))
        if np.all((peak >= 0) & (peak < np.array(shape))):
            # the size is taught at the centre alone, as CenterNet does: taught wherever the
            # peak is above half, the fractures' sizes overshot (mAP50 0.17 -> 0.03)
            at_centre[tuple(peak)] = 1.0
            weight_size[tuple(peak)] = 1.0
            size[(slice(None), *peak)] = np.log(np.maximum(extent, 1.0))
    return {"heatmap": heat[None], "size": size, "size_weight": weight_size[None], "centres": at_centre[None], "weight": weight[None]}


def focal_loss(logits: torch.Tensor, heat: torch.Tensor, weight: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalized by the number of centres."""
    prob = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = heat >= 1.0 - 1e-6
    pos = -torch.log(prob) * (1 - prob) ** alpha * positive
    neg = -torch.log(1 - prob) * prob**alpha * (1 - heat) ** beta * (~positive) * weight
    return (pos.sum() + neg.sum()) / positive.sum().clamp(min=1)


def size_loss(pred: torch.Tensor, size: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """L1 of the log sizes where they are taught (the centres)."""
    return (torch.abs(pred - size) * where).sum() / (where.sum() * pred.shape[1]).clamp(min=1)


#: above this many voxels over the score floor (an untrained map), one max-pool over the
#: whole map is cheaper than comparing each with its neighbours
_POOL_ABOVE = 4096


def _local_maxima(heat: torch.Tensor, floor: float) -> torch.Tensor:
    """Indices (n, ndim) of the voxels at least ``floor`` that no neighbour (3 x 3 x 3)
    exceeds. A trained map has few voxels over the floor: comparing those with their
    neighbours costs a fraction of a max-pool over every voxel."""
    above = torch.nonzero(heat >= floor)
    if len(above) > _POOL_ABOVE:
        pool = (F.max_pool3d if heat.ndim == 3 else F.max_pool2d)(heat[None, None], kernel_size=3, stride=1, padding=1)[0, 0]
        return torch.nonzero((heat == pool) & (heat >= floor))
    padded = F.pad(heat, (1, 1) * heat.ndim, value=-float("inf"))
    offsets = torch.cartesian_prod(*[torch.arange(3)] * heat.ndim).reshape(-1, heat.ndim)
    neighbours = padded[tuple((above[:, None, :] + offsets[None]).permute(2, 0, 1))]
    return above[heat[tuple(above.T)] >= neighbours.max(dim=1).values]


def decode(
    heat_logits: torch.Tensor, size: torch.Tensor, *, min_score: float, max_candidates: int
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Candidates of one volume: (score, centre voxel, size voxels), both in array-axis
    order, best first. ``heat_logits`` (1, *shape), ``size`` (ndim, *shape)."""
    floor = float(np.log(min_score / (1.0 - min_score))) if 0.0 < min_score < 1.0 else (-np.inf if min_score <= 0 else np.inf)
    index = _local_maxima(heat_logits[0], floor)
    scores = torch.sigmoid(heat_logits[0][tuple(index.T)])
    order = torch.argsort(scores, descending=True)[:max_candidates]
    out = []
    for i in order.tolist():
        voxel = index[i]
        extent = torch.exp(size[(slice(None), *voxel)]).clamp(min=1.0)
        out.append((float(scores[i]), voxel.numpy().astype(float), extent.numpy().astype(float)))
    return out


def box_masks(shape: tuple[int, ...], centres: np.ndarray, sizes: np.ndarray, excluded: np.ndarray) -> dict[str, np.ndarray]:
    """Segmentation targets from boxes: ``label`` (1, *shape; 1 inside the ellipsoid each
    box bounds) and ``weight`` (1, *shape; 0 in and around excluded findings), for the
    U-Net whose components are the candidates (boxes are all LUNA16 gives: spheres)."""
    axes = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij", sparse=True)
    label = np.zeros(shape, np.float32)
    weight = np.ones(shape, np.float32)
    for centre, extent, skip in zip(centres, sizes, excluded):
        radius = np.maximum(np.asarray(extent) / 2.0, 0.75)
        rho = sum(((a - c) / r) ** 2 for a, c, r in zip(axes, centre, radius))
        if skip:
            weight[rho <= 4.0] = 0.0  # twice its radius
        else:
            label[rho <= 1.0] = 1.0
    return {"label": label[None], "weight": weight[None]}
