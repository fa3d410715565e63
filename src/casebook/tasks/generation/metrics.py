"""How samples are measured, honestly named: the Fréchet distance of the judge's features
("FD (casebook judge features)", MONAI's FIDMetric on features the pipeline trained, not
Inception's, so not FID), k-nearest-neighbour precision and recall on the same features
(Kynkäänniemi et al. 2019), and memorization: each sample's distance to its nearest
training image against the same distance for held-out real images."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.metrics import FIDMetric
from sklearn.metrics.pairwise import euclidean_distances

#: the label every table and figure gives the Fréchet distance
FD_LABEL = "FD (casebook judge features)"


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows)."""
    a = torch.from_numpy(np.asarray(features_a, dtype=np.float64))
    b = torch.from_numpy(np.asarray(features_b, dtype=np.float64))
    return float(FIDMetric()(a, b))


def _radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point to its k-th nearest other point of the same set."""
    distances = euclidean_distances(features)
    return np.sort(distances, axis=1)[:, min(k, len(features) - 1)]  # column 0 is the point itself


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """Precision: share of samples inside the real manifold (the union of balls reaching
    each real point's k-th neighbour); recall: share of real points inside the samples'."""
    if len(real) <= k or len(fake) <= k:
        raise ValueError(
            f"precision/recall with k={k} needs more than {k} points in each set, got {len(real)} real and {len(fake)} generated"
        )
    real_radii, fake_radii = _radii(real, k), _radii(fake, k)
    cross = euclidean_distances(fake, real)  # samples x real
    precision = float(np.mean((cross <= real_radii[None, :]).any(axis=1)))
    recall = float(np.mean((cross.T <= fake_radii[None, :]).any(axis=1)))
    return {"precision": precision, "recall": recall, "k": k}


def nearest(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index and root-mean-square pixel distance of each query's nearest reference."""
    q = np.asarray(queries, dtype=np.float64).reshape(len(queries), -1)
    r = np.asarray(references, dtype=np.float64).reshape(len(references), -1)
    distances = euclidean_distances(q, r) / np.sqrt(q.shape[1])
    index = distances.argmin(axis=1)
    return index, distances[np.arange(len(q)), index]


def memorization_threshold(train: np.ndarray, held_out: np.ndarray, quantile: float = 0.01) -> dict[str, float]:
    """The distance to the nearest training image below which a sample counts as a copy:
    the ``quantile`` of the held-out real images' own nearest-training distances (the
    test images: other patients, never trained on). Computed once per study."""
    _, reference = nearest(held_out, train)
    return {"threshold": float(np.quantile(reference, quantile)), "quantile": quantile, "held_out_median": float(np.median(reference))}


def memorization(samples: np.ndarray, train: np.ndarray, threshold: dict[str, float]) -> dict[str, Any]:
    """Flag samples closer to a training image than ``threshold`` (of
    :func:`memorization_threshold`). A copy of a training image has distance 0 and is
    flagged; a fresh image of the population is flagged at about the rate of the
    threshold's quantile."""
    index, distance = nearest(samples, train)
    flagged = distance <= threshold["threshold"]
    return {
        **threshold,
        "nearest_index": index,
        "distance": distance,
        "flagged": flagged,
        "n_flagged": int(flagged.sum()),
        "share_flagged": float(flagged.mean()) if len(flagged) else float("nan"),
    }
