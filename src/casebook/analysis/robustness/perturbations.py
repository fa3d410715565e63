"""Acquisition-like perturbations of cached images at a given severity (TorchIO).

Each perturbation is one TorchIO transform whose random range is fixed by the
severity, so that a severity means the same thing for every image:

==============  ===========================================================  ========
name            severity s                                                   identity
==============  ===========================================================  ========
noise           Gaussian noise sd, as a share of the image's intensity sd    0
blur            Gaussian blur sd in pixels/voxels (in-plane only in 2D)      0
bias_field      largest polynomial coefficient: each drawn from U(-s, s)     0
motion          largest rotation in degrees about each axis, U(-s, s), and   0
                shifts U(-s/4, s/4) pixels/voxels; 4 movements (in-plane 2D)
ghosting        ghost intensity (4 ghosts along a random axis)               0
spike           k-space spike intensity, a share of the spectrum's maximum   0
gamma           log of the gamma exponent, on the image rescaled to [0, 1]   0
downsampling    factor along one axis, then resampled back (thick slices)    1
==============  ===========================================================  ========

Where TorchIO's own single-number form of a parameter is a range symmetric about zero
(bias field coefficients, motion angles and shifts), the severity is that bound and
the image's seed picks the direction: with ``coefficients=(s, s)`` every one of the
bias field's coefficients would be +s and every image would get the same field. As
TorchIO draws ``a + (b - a) * u``, one seed gives the same direction at every
severity, scaled by it: a higher severity perturbs the same image further.

Every image gets its own seed (``image_seeds``), so a perturbed set does not depend
on how it is batched, and the same image is perturbed the same way whatever the
severity. The global torch RNG is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torchio as tio

# the names, default severities, identities and axis labels live in a torch-free module
# (the summary figure reads them without torch); imported by this module's users from here
from casebook.analysis.robustness.severities import DEFAULT_SEVERITIES, IDENTITY, PERTURBATIONS, UNITS

__all__ = ["DEFAULT_SEVERITIES", "IDENTITY", "MOTION_MOVEMENTS", "PERTURBATIONS", "UNITS", "image_seeds", "merged_severities", "perturb"]

# TorchIO's default of 2 movements keeps the unmoved image in the central third of
# k-space, where most of a smooth image's energy is: 90 degree turns then cost the CXR
# and CT models only 0.03 and 0.04 AUC (0.06 and 0.20 with 4, whose centre is a fifth).
MOTION_MOVEMENTS = 4


def image_seeds(seed: int, n: int) -> np.ndarray:
    """One seed per image; the first k are the same whatever ``n`` (a prefix stream)."""
    return np.random.SeedSequence(int(seed)).generate_state(n)


def merged_severities(overrides: dict[str, Sequence[float]] | None) -> dict[str, list[float]]:
    """DEFAULT_SEVERITIES with the config's lists on top, sorted; an empty list drops one."""
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(PERTURBATIONS)
    if unknown:
        raise ValueError(f"unknown perturbation(s) {sorted(unknown)}; known: {list(PERTURBATIONS)}")
    merged = {name: sorted({float(s) for s in overrides.get(name, DEFAULT_SEVERITIES[name])}) for name in PERTURBATIONS}
    for name, levels in merged.items():
        if levels and levels[0] < IDENTITY[name]:
            raise ValueError(f"{name}: severities must be >= {IDENTITY[name]}, got {levels}")
    return {name: levels for name, levels in merged.items() if levels}


def perturb(images: np.ndarray, name: str, severity: float, seed: int | Sequence[int]) -> np.ndarray:
    """``images`` (N, C, *spatial), 2D or 3D, perturbed; same shape and dtype.

    ``seed`` is one int (each image's seed drawn from it by ``image_seeds``) or one
    seed per image. The identity severity (0; 1 for downsampling) returns a copy.
    """
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; known: {list(PERTURBATIONS)}")
    images = np.asarray(images)
    if images.ndim not in (4, 5):
        raise ValueError(f"expected (N, C, H, W) or (N, C, D, H, W) images, got shape {images.shape}")
    severity = float(severity)
    if severity < IDENTITY[name]:
        raise ValueError(f"{name}: severity {severity} is below the identity {IDENTITY[name]}")
    if severity == IDENTITY[name]:
        return np.array(images)  # a copy: never the caller's (possibly memory-mapped) array
    seeds = image_seeds(seed, len(images)) if np.isscalar(seed) else np.asarray(seed)
    if len(seeds) != len(images):
        raise ValueError(f"{len(seeds)} seeds for {len(images)} images")
    apply = _APPLY[name]
    out = np.empty_like(images)
    for i, (image, image_seed) in enumerate(zip(images, seeds)):
        x = torch.from_numpy(np.array(image, dtype=np.float32))
        # fork: TorchIO samples from torch's global RNG, which the caller may rely on
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(image_seed))
            out[i] = apply(x, severity).numpy()
    return out


# ---- one image: (C, *spatial) float32 tensor -> same -----------------------------


def _centred_image(tensor: torch.Tensor) -> tio.ScalarImage:
    """A TorchIO image of a (C, X, Y, Z) tensor, 1-pixel spacing, world origin at its
    centre. TorchIO's Motion rotates about the world origin (it drops the transform's
    centre), so with the usual corner origin a 10 degree turn would also shift a 64 px
    image by several pixels."""
    affine = np.eye(4)
    affine[:3, 3] = -(np.array(tensor.shape[1:]) - 1) / 2
    return tio.ScalarImage(tensor=tensor, affine=affine)


def _run(transform: tio.Transform, x: torch.Tensor) -> torch.Tensor:
    """Apply to a (C, H, W) or (C, D, H, W) tensor; 2D gets TorchIO's trailing singleton axis."""
    if x.ndim == 3:
        return transform(_centred_image(x[..., None])).data[..., 0].float()
    return transform(_centred_image(x)).data.float()


def _noise(x: torch.Tensor, s: float) -> torch.Tensor:
    sd = s * float(x.std())
    return _run(tio.RandomNoise(mean=(0, 0), std=(sd, sd)), x)


def _blur(x: torch.Tensor, s: float) -> torch.Tensor:
    # ranges per axis (a1, b1, a2, b2, a3, b3); 2D: none across the singleton axis
    std = (s, s, s, s, 0.0, 0.0) if x.ndim == 3 else (s, s)
    return _run(tio.RandomBlur(std=std), x)


def _bias_field(x: torch.Tensor, s: float) -> torch.Tensor:
    # a bias field multiplies a non-negative signal: a z-scored image is shifted to a
    # minimum of 0 first (else the field would darken its negative parts) and back after
    low = float(x.min())
    return _run(tio.RandomBiasField(coefficients=s), x - low) + low


def _motion(x: torch.Tensor, s: float) -> torch.Tensor:
    motion = tio.RandomMotion(degrees=s, translation=s / 4, num_transforms=MOTION_MOVEMENTS)
    if x.ndim == 4:
        return _run(motion, x)
    # TorchIO's 2D case (C, H, W, 1) fills k-space in segments along the singleton axis,
    # so the result is a single rigid move with no motion artefact. Here the singleton
    # axis comes first, the rotation is about it, the shifts are in-plane, and the
    # k-space segments run along the last axis, as in 3D.
    times, degrees, translation = motion.get_params(motion.degrees_range, motion.translation_range, motion.num_transforms, is_2d=True)
    # TorchIO's 2D draw: rotation about axis 2, shifts along axes 0 and 1; move them one axis on
    degrees, translation = np.roll(degrees, 1, axis=1), np.roll(translation, 1, axis=1)
    fixed = tio.Motion(degrees=degrees, translation=translation, times=times, image_interpolation="linear")
    return fixed(_centred_image(x[:, None])).data[:, 0].float()


def _ghosting(x: torch.Tensor, s: float) -> torch.Tensor:
    # a single number would mean U(0, n) ghosts; TorchIO leaves out axis 2 for 2D images
    return _run(tio.RandomGhosting(num_ghosts=(4, 4), axes=(0, 1, 2), intensity=(s, s)), x)


def _spike(x: torch.Tensor, s: float) -> torch.Tensor:
    return _run(tio.RandomSpike(num_spikes=(1, 1), intensity=(s, s)), x)


def _gamma(x: torch.Tensor, s: float) -> torch.Tensor:
    # a power needs non-negative intensities: rescale each image to [0, 1], raise to
    # exp(s), map back to the image's own range (the darkest and brightest values stay)
    low, high = float(x.min()), float(x.max())
    if high == low:
        return x.clone()
    unit = (x - low) / (high - low)
    return _run(tio.RandomGamma(log_gamma=(s, s)), unit) * (high - low) + low


def _downsampling(x: torch.Tensor, s: float) -> torch.Tensor:
    # 3D (z, y, x): along z, as thick CT/MR slices; 2D (y, x): along x (TorchIO's axis 1)
    axis = 1 if x.ndim == 3 else 0
    return _run(tio.RandomAnisotropy(axes=(axis,), downsampling=(s, s)), x)


_APPLY: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "noise": _noise,
    "blur": _blur,
    "bias_field": _bias_field,
    "motion": _motion,
    "ghosting": _ghosting,
    "spike": _spike,
    "gamma": _gamma,
    "downsampling": _downsampling,
}
