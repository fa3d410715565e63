"""Classical denoisers, the baselines a learned one must beat: Gaussian smoothing and
non-local means (scikit-image), both on the HU slice."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import convolve, gaussian_filter
from skimage.restoration import denoise_nl_means

#: Immerkaer's mask: the difference of two Laplacians, blind to linear ramps
_IMMERKAER = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def gaussian(hu: np.ndarray, sigma_px: float = 1.0) -> np.ndarray:
    """Gaussian smoothing with a standard deviation of ``sigma_px`` pixels."""
    return gaussian_filter(np.asarray(hu, dtype=np.float64), sigma=float(sigma_px))


def noise_sd(image: np.ndarray) -> float:
    """The sd of additive white noise in a 2D image (Immerkaer 1996, "Fast noise variance
    estimation"): scikit-image's wavelet estimate needs PyWavelets, which the project
    does not install."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < 3:
        raise ValueError(f"noise estimation needs a 2D image of at least 3 x 3 pixels, got shape {image.shape}")
    response = np.abs(convolve(image, _IMMERKAER, mode="nearest"))[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2.0) * response.mean() / 6.0)


def non_local_means(hu: np.ndarray, *, strength: float = 0.8, patch_size: int = 5, patch_distance: int = 6) -> np.ndarray:
    """Non-local means with its filtering parameter ``h`` at ``strength`` times the noise
    sd estimated from the slice itself (:func:`noise_sd`), so no dose needs to be known."""
    image = np.asarray(hu, dtype=np.float64)
    sigma = noise_sd(image)
    return denoise_nl_means(image, h=strength * sigma, sigma=sigma, patch_size=patch_size, patch_distance=patch_distance, fast_mode=True)


BASELINES = {"gaussian": gaussian, "nlm": non_local_means}


#: the parameter each baseline is tuned over, and its grid
GRIDS = {"gaussian": ("sigma_px", (0.5, 0.75, 1.0, 1.5, 2.0)), "nlm": ("strength", (0.8, 1.2, 1.6, 2.4, 3.2))}


def tune(name: str, noisy: np.ndarray, reference: np.ndarray, score) -> tuple[dict[str, float], float]:
    """The baseline's parameter from its grid with the highest mean ``score(restored,
    reference)`` on validation slices (not test ones), and that mean: a classical method
    gets the same chance to fit the noise level as a trained network."""
    key, grid = GRIDS[name]
    means = {value: float(np.mean(score(np.stack([BASELINES[name](x, **{key: value}) for x in noisy]), reference))) for value in grid}
    best = max(means, key=means.get)
    return {key: best}, means[best]
