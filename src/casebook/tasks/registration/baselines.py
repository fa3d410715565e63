"""The classical baseline: SimpleITK's registration framework, an affine transform then
a cubic B-spline on top of it, both by Mattes mutual information over a two-level
pyramid (the usual recipe of the SimpleITK notebooks and of elastix's defaults). Its
result is turned into a field on the fixed grid (:func:`fields.ddf_from_transform`), so
it is warped and scored exactly as the networks' fields are."""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

from casebook.tasks.registration.fields import ddf_from_transform

#: The baseline's settings when the case study sets none.
SIMPLEITK = {"mesh_size": 6, "bins": 32, "affine_iterations": 100, "bspline_iterations": 50, "sampling": 0.5}


def _image(array: np.ndarray, spacing: tuple[float, float]) -> sitk.Image:
    image = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    image.SetSpacing((float(spacing[1]), float(spacing[0])))
    return image


def _method(settings: dict[str, Any], seed: int) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(settings["bins"]))
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(float(settings["sampling"]), seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return method


def simpleitk_field(
    moving: np.ndarray, fixed: np.ndarray, spacing: tuple[float, float], settings: dict[str, Any] | None = None, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """The field (2, rows, columns; pixels) of SimpleITK's affine then B-spline
    registration of ``moving`` to ``fixed`` (one 2D pair, ``spacing`` in mm, rows and
    columns), and the stages that failed: ITK gives up when the metric's samples leave
    the moving image; the pair then keeps what the stages before gave (identity for the
    affine), and the failure is reported, not hidden."""
    settings = {**SIMPLEITK, **(settings or {})}
    fixed_img, moving_img = _image(fixed, spacing), _image(moving, spacing)
    failed = []

    affine = _method(settings, seed)
    initial = sitk.CenteredTransformInitializer(
        fixed_img, moving_img, sitk.AffineTransform(2), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    affine.SetInitialTransform(initial, inPlace=False)
    affine.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=int(settings["affine_iterations"]))
    affine.SetOptimizerScalesFromPhysicalShift()
    try:
        affine_tx = affine.Execute(fixed_img, moving_img)
    except RuntimeError:
        affine_tx, failed = sitk.AffineTransform(2), ["affine"]

    bspline = _method(settings, seed)
    mesh = [int(settings["mesh_size"])] * 2
    bspline_tx = sitk.BSplineTransformInitializer(fixed_img, mesh, order=3)
    bspline.SetMovingInitialTransform(affine_tx)
    bspline.SetInitialTransform(bspline_tx, inPlace=True)
    bspline.SetOptimizerAsLBFGSB(
        gradientConvergenceTolerance=1e-5, numberOfIterations=int(settings["bspline_iterations"]), maximumNumberOfCorrections=5
    )
    try:
        bspline.Execute(fixed_img, moving_img)
    except RuntimeError:
        bspline_tx, failed = sitk.BSplineTransformInitializer(fixed_img, mesh, order=3), failed + ["bspline"]
    # the B-spline acts first (fixed grid to the affine's space), then the affine
    return ddf_from_transform(sitk.CompositeTransform([affine_tx, bspline_tx]), fixed.shape, spacing), failed


def register_simpleitk(
    moving: np.ndarray, fixed: np.ndarray, spacing: tuple[float, float], settings: dict[str, Any] | None = None, seed: int = 0
) -> np.ndarray:
    """:func:`simpleitk_field`'s field alone."""
    return simpleitk_field(moving, fixed, spacing, settings, seed)[0]
