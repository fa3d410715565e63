"""Image geometry operations every family's preprocessing shares (SimpleITK):
resampling to a spacing, and the check that an image and its mask share one grid."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk

from casebook.layout import geometry_mismatches


def resample_to_spacing(image: sitk.Image, spacing: Sequence[float], *, is_label: bool, cover: bool = False) -> sitk.Image:
    """Resample to a target spacing (x, y[, z] in mm) on a grid inside the image's extent.

    The new grid starts at the first voxel centre and never passes the last one, so no
    voxel is filled from outside the image; should one be, it takes the image minimum
    (air in CT), not 0, which in Hounsfield units would be soft tissue. With ``cover``
    the grid reaches the last voxel centre or just past it instead: a segmentation
    resampled back from it then covers every original voxel (else the last slice, up
    to one target voxel short, would come back as background).
    """
    spacing = [float(s) for s in spacing]
    if len(spacing) != image.GetDimension():
        raise ValueError(f"target spacing {spacing} does not match a {image.GetDimension()}D image")
    if cover:
        size = [int(np.ceil((n - 1) * s / t - 1e-6)) + 1 for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    else:
        size = [int((n - 1) * s // t) + 1 for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    if is_label:
        interpolator, fill = sitk.sitkNearestNeighbor, 0.0
    else:
        # an array view, not MinimumMaximumImageFilter: that filter refuses vector
        # (multi-channel) images
        interpolator, fill = sitk.sitkLinear, float(sitk.GetArrayViewFromImage(image).min())
    return sitk.Resample(
        image,
        size,
        sitk.Transform(),
        interpolator,
        image.GetOrigin(),
        spacing,
        image.GetDirection(),
        fill,
        image.GetPixelID(),
    )


def check_same_geometry(image: sitk.Image, mask: sitk.Image, image_path: str, mask_path: str) -> None:
    """Refuse a mask whose grid (size, spacing, origin, direction) differs from its image's."""
    for what, a, b in geometry_mismatches(image, mask)[:1]:
        raise ValueError(f"{mask_path}: {what} {b} differs from its image {image_path} ({a})")
