"""Model-randomization sanity check (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018).

An explanation of *the model* must change when the model's learned weights are
replaced by random ones. The check re-initialises the weights of a copy of the model,
recomputes the maps, and measures their Spearman rank correlation with the trained
model's maps: a high correlation means the map shows the image (edges, intensity) more
than what the model learned. A method passes when the mean correlation is below a set
value. Neither MONAI nor Captum has this check, hence this module.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats

from casebook.analysis.explainability.methods import explain


def _parameterised(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The (name, module) pairs that own weights PyTorch can re-initialise."""
    return [(name, m) for name, m in model.named_modules() if callable(getattr(m, "reset_parameters", None))]


def _block_of(name: str) -> str:
    # a block is a module path cut to two components: MONAI DenseNet's
    # `features.denseblock1`, `features.transition1`, `class_layers.out`; ResNet's
    # `layer1.0` (a residual block), `conv1`, `fc`
    return ".".join(name.split(".")[:2])


def cascade_blocks(model: torch.nn.Module) -> list[str]:
    """The model's blocks, output first: the order of the cascading randomization.

    Registration order is taken as forward order, which holds for MONAI's DenseNet and
    ResNet (their constructors add layers input to output).
    """
    blocks = dict.fromkeys(_block_of(name) for name, _ in _parameterised(model))
    return list(reversed(blocks))


def _block_seed(seed: int, block: int) -> int:
    # one seed per block, so that block k gets the same weights at every cascade step
    return int(np.random.SeedSequence([int(seed), block]).generate_state(1)[0])


def randomized_copy(model: torch.nn.Module, seed: int, mode: str = "full", upto: int | None = None) -> torch.nn.Module:
    """A copy of ``model`` with re-initialised weights (``reset_parameters`` of every
    module that has it: convolutions, linear layers, batch norms with their running
    statistics); the original is untouched and module names are kept, so Grad-CAM's
    layer exists in the copy.

    ``mode="full"`` re-initialises every block; ``"cascading"`` the first ``upto``
    blocks of :func:`cascade_blocks` (from the output backwards; None = all). The new
    weights are drawn on the CPU from ``seed``, the same on any device.
    """
    if mode not in ("full", "cascading"):
        raise ValueError(f"randomization must be 'full' or 'cascading', not {mode!r}")
    device = next(model.parameters()).device
    randomized = copy.deepcopy(model).cpu()
    blocks = cascade_blocks(randomized)
    chosen = blocks if mode == "full" or upto is None else blocks[: int(upto)]
    with torch.random.fork_rng(devices=[]):
        for k, block in enumerate(chosen):
            torch.manual_seed(_block_seed(seed, k))
            for name, module in _parameterised(randomized):
                if _block_of(name) == block:
                    module.reset_parameters()
    return randomized.to(device)


def rank_correlation(map_a: np.ndarray, map_b: np.ndarray) -> float:
    """Spearman rank correlation of two maps, flattened (scipy.stats.spearmanr).

    A constant map has no ranking: against a non-constant map it shares none (0.0);
    two constant maps give nan (nothing to compare).
    """
    a, b = np.asarray(map_a, dtype=np.float64).ravel(), np.asarray(map_b, dtype=np.float64).ravel()
    constant_a, constant_b = np.ptp(a) == 0, np.ptp(b) == 0
    if constant_a and constant_b:
        return float("nan")
    if constant_a or constant_b:
        return 0.0
    return float(stats.spearmanr(a, b).statistic)


def correlations(maps_a: np.ndarray, maps_b: np.ndarray) -> list[float]:
    """Per-image :func:`rank_correlation` of two (N, 1, *spatial) stacks of maps."""
    return [rank_correlation(a, b) for a, b in zip(maps_a, maps_b)]


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(values).all():
        return float("nan"), float("nan")
    return float(np.nanmean(values)), float(np.nanstd(values))


def sanity_check(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: Sequence[int],
    method: str,
    settings: dict[str, Any] | None = None,
    layer: str | None = None,
    *,
    randomization: str = "full",
    pass_below: float = 0.5,
    seed: int = 0,
    trained_maps: np.ndarray | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Spearman correlation, per image, of ``method``'s maps from the trained model and
    from a randomized copy; ``pass`` when their mean is below ``pass_below``.

    ``trained_maps`` saves recomputing maps the caller has. With ``"cascading"``, the
    copy is randomized one block more at each step (output first) and ``cascade`` gives
    the mean correlation after each step; the headline numbers are those of the last
    step, every block randomized.
    """

    def randomized_maps(upto: int | None) -> np.ndarray:
        random_model = randomized_copy(model, seed, randomization, upto)
        return explain(method, random_model, images, targets, settings, layer, batch_size)

    if trained_maps is None:
        trained_maps = explain(method, model, images, targets, settings, layer, batch_size)
    result: dict[str, Any] = {"method": method, "randomization": randomization}
    if randomization == "cascading":
        result["cascade"] = []
        for k, block in enumerate(cascade_blocks(model), start=1):
            maps = randomized_maps(k)
            mean, sd = _mean_sd(correlations(trained_maps, maps))
            result["cascade"].append({"blocks_randomized": k, "block": block, "spearman_mean": mean, "spearman_sd": sd})
    else:
        maps = randomized_maps(None)
    spearman = correlations(trained_maps, maps)
    mean, sd = _mean_sd(spearman)
    result.update(
        spearman=spearman,
        spearman_mean=mean,
        spearman_sd=sd,
        passed=bool(mean < pass_below),  # nan (no comparable map) does not pass
        trained_maps=trained_maps,
        randomized_maps=maps,
    )
    return result
