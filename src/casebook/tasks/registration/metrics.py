"""What a registration is scored by, per pair.

* Overlap of the warped moving labels with the fixed labels: Dice and HD95 (MONAI),
  per label and their mean over the labels present in the fixed image.
* Regularity of the field: the Jacobian determinant (SimpleITK), the standard deviation
  of its logarithm (SDlogJ) and the share of folding pixels (determinant at most 0),
  both over the image without a two-pixel border, as Learn2Reg reports them.
* Where the true field is known (the simulated pairs): the mean endpoint error of the
  field inside the fixed brain mask, in mm ("field error"; a dense target registration
  error).
"""

from __future__ import annotations

import warnings

import numpy as np
import SimpleITK as sitk
import torch

from casebook.tasks.registration.fields import displacement_image

#: Pixels left out at each border by the Jacobian statistics (finite differences there
#: see the repeated border).
BORDER = 2


def jacobian_determinant(ddf: np.ndarray) -> np.ndarray:
    """det(I + grad u) of a field (2, rows, columns; pixels), per pixel (SimpleITK's
    ``DisplacementFieldJacobianDeterminant``; unitless, so the spacing does not matter)."""
    return sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(displacement_image(ddf, (1.0, 1.0)))).astype(np.float64)


def _interior(array: np.ndarray) -> np.ndarray:
    return array[BORDER:-BORDER, BORDER:-BORDER] if min(array.shape) > 2 * BORDER else array


def jacobian_stats(ddf: np.ndarray) -> dict[str, float]:
    """``sdlogj``: std of log(clip(det J, 1e-9, 1e9)); ``folding_percent``: pixels with
    det J <= 0, in percent; both over the interior."""
    det = _interior(jacobian_determinant(ddf))
    return {
        "sdlogj": float(np.std(np.log(np.clip(det, 1e-9, 1e9)))),
        "folding_percent": float(100.0 * np.mean(det <= 0)),
    }


def _one_hot(labels: np.ndarray, values: list[int]) -> torch.Tensor:
    return torch.from_numpy(np.stack([labels == v for v in values]).astype(np.float32))[None]


def mean_dice(warped: np.ndarray, fixed: np.ndarray, labels: list[int]) -> float:
    """The mean Dice of the ``labels`` present in the fixed label map (NaN: none is)."""
    from monai.metrics import compute_dice

    present = [v for v in labels if (fixed == v).any()]
    if not present:
        return float("nan")
    return float(compute_dice(_one_hot(warped, present), _one_hot(fixed, present), include_background=True, ignore_empty=False).mean())


def label_overlap(warped: np.ndarray, fixed: np.ndarray, labels: list[int], spacing: tuple[float, float]) -> dict[str, float]:
    """Dice and HD95 (mm) of each label of ``labels`` present in the fixed label map
    (``dice_<v>``, ``hd95_<v>``), and their means (``dice``, ``hd95``). A label the
    warped map lost entirely has Dice 0 and the image diagonal as its HD95."""
    from monai.metrics import compute_dice, compute_hausdorff_distance

    present = [v for v in labels if (fixed == v).any()]
    out: dict[str, float] = {}
    if not present:
        return {"dice": float("nan"), "hd95": float("nan")}
    pred, truth = _one_hot(warped, present), _one_hot(fixed, present)
    dice = compute_dice(pred, truth, include_background=True, ignore_empty=False)[0].numpy()
    diagonal = float(np.hypot(fixed.shape[0] * spacing[0], fixed.shape[1] * spacing[1]))
    with np.errstate(all="ignore"), warnings.catch_warnings():  # MONAI warns of its own deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        hd = compute_hausdorff_distance(pred, truth, include_background=True, percentile=95, spacing=list(spacing))[0].numpy()
    hd = np.where(np.isfinite(hd), hd, diagonal)
    for v, d, h in zip(present, dice, hd):
        out[f"dice_{v}"], out[f"hd95_{v}"] = float(d), float(h)
    out["dice"], out["hd95"] = float(np.mean(dice)), float(np.mean(hd))
    return out


def field_error_mm(ddf: np.ndarray, truth: np.ndarray, mask: np.ndarray, spacing: tuple[float, float]) -> float:
    """Mean endpoint error (mm) of a field against the true one, inside ``mask``."""
    diff = (ddf - truth) * np.asarray(spacing, dtype=np.float64).reshape(2, 1, 1)
    error = np.hypot(diff[0], diff[1])
    return float(error[mask.astype(bool)].mean()) if mask.any() else float(error.mean())
