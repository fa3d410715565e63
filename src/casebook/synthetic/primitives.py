"""Random shapes and textures the synthetic generators share: smooth steps, uniform
draws from a range, random directions and rotations, spatially correlated noise."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

Range = tuple[float, float]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def uniform(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def random_unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    vec = rng.standard_normal((n, 3))
    return vec / np.linalg.norm(vec, axis=1, keepdims=True)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def correlated_noise(shape: tuple[int, ...], std: float, rng: np.random.Generator) -> np.ndarray:
    """CT noise: white noise smoothed in-plane (reconstruction kernel), rescaled to ``std``."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(0.0, 0.7, 0.7))
    return noise * (std / (noise.std() + 1e-12))
