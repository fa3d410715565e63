"""Displacement fields: drawing a known deformation, and warping with it.

Convention (MONAI's ``Warp``, used for every method): a dense displacement field
``ddf`` of shape (2, rows, columns) is in pixels, its components in array-axis order
(rows, then columns), and it maps the fixed image's grid into the moving image:
``warped(x) = moving(x + ddf(x))``. A SimpleITK transform (fixed points to moving
points, in mm) becomes such a field through :func:`ddf_from_transform`.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage


@lru_cache(maxsize=None)
def _warper(mode: str):
    from monai.networks.blocks import Warp

    with warnings.catch_warnings():  # MONAI says once per block that it uses torch's grid_sample
        warnings.simplefilter("ignore", UserWarning)
        return Warp(mode=mode, padding_mode="border")


def warp(images: torch.Tensor, ddf: torch.Tensor, *, labels: bool = False) -> torch.Tensor:
    """``images`` (N, C, rows, columns) resampled at ``x + ddf(x)``: bilinear for
    intensities, nearest for label maps (``labels``), borders repeated outside."""
    out = _warper("nearest" if labels else "bilinear")(images.float(), ddf.float())
    return out.round().to(images.dtype) if labels else out


def warp_array(image: np.ndarray, ddf: np.ndarray, *, labels: bool = False) -> np.ndarray:
    """:func:`warp` for one 2D numpy image (rows, columns) and its field (2, rows, columns)."""
    out = warp(torch.from_numpy(np.ascontiguousarray(image))[None, None], torch.from_numpy(np.ascontiguousarray(ddf))[None], labels=labels)
    return out[0, 0].numpy().astype(image.dtype)


def integrate_velocity(velocity: np.ndarray, steps: int = 7) -> np.ndarray:
    """The diffeomorphic field of a stationary velocity field (scaling and squaring,
    MONAI's ``DVF2DDF``), both (2, rows, columns) in pixels."""
    from monai.networks.blocks import DVF2DDF

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        to_ddf = DVF2DDF(num_steps=steps, mode="bilinear", padding_mode="border")
    return to_ddf(torch.from_numpy(velocity.astype(np.float32))[None])[0].numpy()


def rigid_ddf(shape: tuple[int, int], degrees: float, shift: tuple[float, float]) -> np.ndarray:
    """The field of a rotation by ``degrees`` about the image centre and a shift
    (rows, columns; pixels)."""
    rows, cols = np.meshgrid(np.arange(shape[0], dtype=np.float64), np.arange(shape[1], dtype=np.float64), indexing="ij")
    centre = (np.array(shape, dtype=np.float64) - 1) / 2
    dr, dc = rows - centre[0], cols - centre[1]
    angle = np.deg2rad(degrees)
    new_r = np.cos(angle) * dr - np.sin(angle) * dc + centre[0] + shift[0]
    new_c = np.sin(angle) * dr + np.cos(angle) * dc + centre[1] + shift[1]
    return np.stack([new_r - rows, new_c - cols]).astype(np.float32)


def random_field(
    shape: tuple[int, int],
    spacing: tuple[float, float],
    rng: np.random.Generator,
    *,
    max_displacement_mm: float,
    smoothness_mm: float,
    rotation_degrees: float,
    translation_mm: float,
) -> np.ndarray:
    """A known deformation (2, rows, columns; pixels): a rigid motion drawn uniformly
    within +-``rotation_degrees`` and +-``translation_mm`` per axis, plus the
    diffeomorphic integral of a smooth random velocity (Gaussian noise smoothed by
    ``smoothness_mm``) whose largest displacement is drawn in [0.5, 1] x
    ``max_displacement_mm``. Adding the two keeps the Jacobian positive while the rigid
    rotation stays small (a few degrees)."""
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    shift = tuple(rng.uniform(-translation_mm, translation_mm, 2) / spacing_arr)
    rigid = rigid_ddf(shape, rng.uniform(-rotation_degrees, rotation_degrees), shift)
    noise = rng.standard_normal((2, *shape))
    sigma = smoothness_mm / spacing_arr
    velocity = np.stack([ndimage.gaussian_filter(noise[i], sigma, mode="reflect") for i in range(2)])
    ddf = integrate_velocity(velocity)
    largest = float(np.max(np.hypot(ddf[0] * spacing_arr[0], ddf[1] * spacing_arr[1])))
    if largest > 0 and max_displacement_mm > 0:
        target = rng.uniform(0.5, 1.0) * max_displacement_mm
        ddf = integrate_velocity(velocity * (target / largest))
    else:
        ddf = np.zeros_like(ddf)
    return (rigid + ddf).astype(np.float32)


def displacement_image(ddf: np.ndarray, spacing: tuple[float, float]) -> sitk.Image:
    """A SimpleITK displacement field (mm, components x then y) on a grid with the
    given pixel spacing (rows, columns), origin 0 and identity direction."""
    vectors = np.stack([ddf[1] * spacing[1], ddf[0] * spacing[0]], axis=-1).astype(np.float64)
    image = sitk.GetImageFromArray(vectors, isVector=True)
    image.SetSpacing((float(spacing[1]), float(spacing[0])))
    return image


def ddf_from_transform(transform: sitk.Transform, shape: tuple[int, int], spacing: tuple[float, float]) -> np.ndarray:
    """The field (2, rows, columns; pixels) of a SimpleITK transform on the grid of an
    image of ``shape`` and ``spacing`` (rows, columns; mm) with origin 0."""
    field = sitk.TransformToDisplacementField(
        transform,
        sitk.sitkVectorFloat64,
        (int(shape[1]), int(shape[0])),
        (0.0, 0.0),
        (float(spacing[1]), float(spacing[0])),
    )
    vectors = sitk.GetArrayFromImage(field)  # rows, columns, (x, y) in mm
    return np.stack([vectors[..., 1] / spacing[0], vectors[..., 0] / spacing[1]]).astype(np.float32)
