"""Image-quality metrics of restored slices, as the field reports them: PSNR, SSIM and a
three-scale MS-SSIM (MONAI) on the display window, per image, and their means with paired bootstrap CIs over
patients between two methods (a network against the noisy input or a classical baseline).

Both are computed after mapping the window to [0, 1] (values outside it clipped), so the
data range is 1 and a number means the same for every study with the same window; the
window is part of every reported label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import MultiScaleSSIMMetric, PSNRMetric, SSIMMetric
from monai.metrics.regression import compute_ssim_and_cs

#: soft-tissue window (HU): where abdominal CT is read, and where the noise matters
SOFT_TISSUE = (-160.0, 240.0)


#: Wang et al.'s first three scale weights, renormalised: the standard five scales with an
#: 11-pixel window need images of at least 161 pixels, these slices have 48 to 64
MS_SSIM_WEIGHTS = tuple(w / (0.0448 + 0.2856 + 0.3001) for w in (0.0448, 0.2856, 0.3001))
MS_SSIM_KERNEL = 7
#: how every table and figure names it (not the standard five-scale MS-SSIM)
MS_SSIM_LABEL = "MS-SSIM (3 scales)"
#: an image side must exceed this for the coarsest scale's window (MONAI checks it)
MS_SSIM_MIN_SIDE = (MS_SSIM_KERNEL - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1)


def to_window(hu: np.ndarray, window: Sequence[float] = SOFT_TISSUE) -> np.ndarray:
    """HU mapped to [0, 1] over ``window`` (low, high), clipped outside it."""
    low, high = (float(v) for v in window)
    if not high > low:
        raise ValueError(f"a display window needs low < high, got {window}")
    return np.clip((np.asarray(hu, dtype=np.float32) - low) / (high - low), 0.0, 1.0)


def _batch(images: Sequence[np.ndarray], window: Sequence[float]) -> torch.Tensor:
    return torch.from_numpy(np.stack([to_window(i, window) for i in images]))[:, None]


def image_quality(
    restored: Sequence[np.ndarray], reference: Sequence[np.ndarray], window: Sequence[float] = SOFT_TISSUE, *, ms_ssim: bool = True
) -> dict[str, np.ndarray]:
    """PSNR (dB), SSIM and three-scale MS-SSIM of each restored image against its
    reference, on ``window``; no MS-SSIM when ``ms_ssim`` is false or an image side is
    at most :data:`MS_SSIM_MIN_SIDE` pixels (its coarsest scale would be smaller than its
    window)."""
    if len(restored) != len(reference):
        raise ValueError(f"{len(restored)} restored images against {len(reference)} references")
    pred, ref = _batch(restored, window), _batch(reference, window)
    psnr = PSNRMetric(max_val=1.0, reduction="none")(pred, ref)
    ssim = SSIMMetric(spatial_dims=pred.dim() - 2, data_range=1.0, reduction="none")(pred, ref)
    out = {"psnr": psnr, "ssim": ssim}
    if ms_ssim and min(pred.shape[2:]) > MS_SSIM_MIN_SIDE:
        out["ms_ssim"] = MultiScaleSSIMMetric(
            spatial_dims=pred.dim() - 2, data_range=1.0, kernel_size=MS_SSIM_KERNEL, weights=MS_SSIM_WEIGHTS, reduction="none"
        )(pred, ref)
    return {k: v.flatten().numpy().astype(float) for k, v in out.items()}


#: MONAI's SSIM defaults (Wang et al.'s 11-pixel Gaussian window, sigma 1.5)
SSIM_KERNEL, SSIM_SIGMA = 11, 1.5


def region_quality(
    restored: Sequence[np.ndarray], reference: Sequence[np.ndarray], regions: np.ndarray, window: Sequence[float] = SOFT_TISSUE
) -> dict[str, np.ndarray]:
    """PSNR and SSIM of each restored image inside its region (``regions[i]``: row,
    column, height, width), the only pixels a missing-region method has to make up: PSNR
    over the region's pixels, SSIM as the mean of MONAI's SSIM map (the image reflected
    at its edges, so every pixel has a full window) at the region's pixels; the windows
    there see the known surround too, as a reader does."""
    if not len(restored) == len(reference) == len(regions):
        raise ValueError(f"{len(restored)} restored images, {len(reference)} references and {len(regions)} regions")
    pad = SSIM_KERNEL // 2
    psnr, ssim = [], []
    for pred, ref, (r, c, h, w) in zip(_batch(restored, window), _batch(reference, window), np.asarray(regions)):
        if h < 1 or w < 1 or r < 0 or c < 0 or r + h > pred.shape[-2] or c + w > pred.shape[-1]:
            raise ValueError(f"region {(r, c, h, w)} is not inside the {tuple(pred.shape[-2:])} image")
        box = (slice(None), slice(None), slice(r, r + h), slice(c, c + w))
        psnr.append(float(PSNRMetric(max_val=1.0)(pred[None][box], ref[None][box]).item()))
        padded = [torch.nn.functional.pad(x[None], (pad,) * 4, mode="reflect") for x in (pred, ref)]
        ssim_map, _ = compute_ssim_and_cs(*padded, spatial_dims=2, kernel_size=(SSIM_KERNEL,) * 2, kernel_sigma=(SSIM_SIGMA,) * 2)
        ssim.append(float(ssim_map[box].mean()))
    return {"psnr": np.asarray(psnr), "ssim": np.asarray(ssim)}
