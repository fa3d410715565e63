"""How well an attribution map agrees with the model (deletion / insertion) and with
the lesion (pointing game, energy inside the mask).

Deletion and insertion (Petsiuk et al., RISE, 2018): rank the pixels/voxels by the map,
most attributed first. Deletion replaces them, in that order and in all channels, with
a baseline value and follows the probability of the explained class: a faithful map
makes it fall early (low area under the curve). Insertion starts from the all-baseline
image and puts the pixels back in the same order: a faithful map makes the probability
rise early (high area). The same curves for a random ranking are the reference a map
must beat. Neither MONAI nor Captum computes these, hence this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage

from casebook.analysis.explainability.methods import probabilities


def ranking(attribution: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each pixel's rank (0 = most attributed) in the flattened map.

    Ties are broken at random (seeded): Grad-CAM and occlusion maps have flat regions,
    and breaking ties by position would delete the top of the image first.
    """
    values = np.asarray(attribution, dtype=np.float64).ravel()
    tie_break = np.random.default_rng(seed).random(values.size)
    order = np.lexsort((tie_break, -values))  # last key sorts first
    ranks = np.empty(values.size, dtype=np.int64)
    ranks[order] = np.arange(values.size)
    return ranks


def random_attribution(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A map that ranks pixels in a random (seeded) order: the reference ranking."""
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def step_counts(n_pixels: int, steps: int) -> np.ndarray:
    """Pixels removed (or inserted) at each of the ``steps + 1`` points, 0 to all."""
    return np.round(np.linspace(0, n_pixels, int(steps) + 1)).astype(np.int64)


def perturbed_images(image: torch.Tensor, ranks: torch.Tensor, counts: torch.Tensor, baseline: float, insert: bool) -> torch.Tensor:
    """The batch of images along one curve: (len(counts), C, *spatial).

    Step k touches the pixels ranked below ``counts[k]``, in every channel: deletion sets
    them to the baseline, insertion keeps only them over an all-baseline image.
    """
    touched = (ranks[None, :] < counts[:, None]).reshape(len(counts), 1, *image.shape[1:])
    base = torch.full_like(image, float(baseline))
    if insert:
        return torch.where(touched, image[None], base[None])
    return torch.where(touched, base[None], image[None])


def target_probability(model: torch.nn.Module, batch: torch.Tensor, target: int, batch_size: int) -> np.ndarray:
    """The model's probability of ``target`` for each image, ``batch_size`` at a time."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probs = [probabilities(model(batch[i : i + batch_size]))[:, int(target)] for i in range(0, len(batch), batch_size)]
    finally:
        model.train(training)
    return torch.cat(probs).float().cpu().numpy()


def curve_auc(values: np.ndarray, fractions: np.ndarray) -> float:
    """Area under a curve over the fraction of pixels touched (trapezoid rule on [0, 1])."""
    return float(np.trapezoid(values, fractions))


def deletion_insertion(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: int,
    attribution: np.ndarray,
    steps: int,
    baseline: float = 0.0,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Deletion and insertion curves of one image (C, *spatial) under one map (1 or no
    channel axis, same spatial shape), with their areas.

    Returns ``fraction`` (share of pixels touched at each step), ``deletion`` and
    ``insertion`` (probability of ``target`` at each step), ``deletion_auc`` (lower =
    more faithful) and ``insertion_auc`` (higher = more faithful).
    """
    spatial = tuple(image.shape[1:])
    attribution = np.asarray(attribution).reshape(spatial)
    n_pixels = int(np.prod(spatial))
    counts = step_counts(n_pixels, steps)
    fractions = counts / n_pixels
    ranks = torch.as_tensor(ranking(attribution, seed), device=image.device)
    counts_t = torch.as_tensor(counts, device=image.device)
    out: dict[str, Any] = {"fraction": fractions.tolist()}
    for name, insert in (("deletion", False), ("insertion", True)):
        curve = target_probability(model, perturbed_images(image, ranks, counts_t, baseline, insert), target, batch_size)
        out[name] = curve.tolist()
        out[f"{name}_auc"] = curve_auc(curve, fractions)
    return out


def random_reference(model, image: torch.Tensor, target: int, steps: int, baseline: float = 0.0, batch_size: int = 32, seed: int = 0):
    """:func:`deletion_insertion` under a random ranking: what a map must beat."""
    return deletion_insertion(model, image, target, random_attribution(tuple(image.shape[1:]), seed), steps, baseline, batch_size, seed)


def spatial_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean mask of ``shape``: a (C, *spatial) mask against a (1, *spatial) map is
    collapsed over its channels (a lesion in any channel counts)."""
    mask = np.asarray(mask).astype(bool)
    if mask.shape != tuple(shape) and mask.ndim == len(shape):
        mask = mask.any(axis=0, keepdims=True)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} does not match the map's {tuple(shape)}")
    return mask


def pointing_game(attribution: np.ndarray, mask: np.ndarray, tolerance: float = 0) -> bool:
    """A hit when the map's maximum lies within ``tolerance`` pixels/voxels (Euclidean)
    of the mask (Zhang et al., 2018). Ties for the maximum: the first in array order; a
    constant map (e.g. a Grad-CAM of a 1x1 feature map) points nowhere: a miss."""
    attribution = np.asarray(attribution)
    inside = spatial_mask(mask, attribution.shape)
    if not inside.any():
        raise ValueError("pointing game needs a non-empty mask")
    if np.ptp(attribution) == 0:
        return False
    peak = np.unravel_index(int(np.argmax(attribution)), attribution.shape)
    # distance of every pixel to the nearest mask pixel (0 inside)
    distance = ndimage.distance_transform_edt(~inside)
    return bool(distance[peak] <= tolerance)


def pointing_chance(mask: np.ndarray, tolerance: float = 0) -> float:
    """The pointing game's chance rate for one (C, *spatial) mask: the share of pixels
    within ``tolerance`` of the lesion, where a map's maximum placed at random would hit."""
    inside = np.asarray(mask).astype(bool).any(axis=0)
    return float((ndimage.distance_transform_edt(~inside) <= tolerance).mean())


def energy_in_mask(cam: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Share of the map's (positive) energy inside the mask, and the mask's share of the image.

    The second number is what a map spread evenly over the image would score, so the
    first is only informative relative to it.
    """
    cam = np.clip(np.asarray(cam, dtype=np.float64), 0, None)
    inside = spatial_mask(mask, cam.shape)
    total = cam.sum()
    share = float(cam[inside].sum() / total) if total > 0 else float("nan")
    return share, float(inside.mean())
