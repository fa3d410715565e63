"""Sliding-window inference over whole volumes (MONAI), with Gaussian blending.

A network trained on patches sees a whole case patch by patch; overlapping windows are
blended with a Gaussian weight that trusts each window's centre more than its border,
where the receptive field is cut off (nnU-Net's and MONAI's default for 3D).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from casebook.engine.runtime import autocast


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int],
    *,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    amp: bool = True,
) -> torch.Tensor:
    """Logits (1, K, *spatial) of a (1, C, *spatial) image on the model's device.

    Windows of ``patch_size`` overlapping by ``overlap`` are blended with Gaussian
    weights; an image smaller than a window is padded, and the padding cut off again.
    """
    device = next(model.parameters()).device
    model.eval()
    with autocast(device, amp):
        logits = sliding_window_inference(
            image.to(device),
            roi_size=[int(p) for p in patch_size],
            sw_batch_size=int(sw_batch_size),
            predictor=model,
            overlap=float(overlap),
            mode="gaussian",
        )
    return logits.float()


def predict_probabilities(model: torch.nn.Module, image: np.ndarray, patch_size: Sequence[int], **kwargs) -> np.ndarray:
    """Class probabilities (K, *spatial), float32, of one preprocessed (C, *spatial) array."""
    logits = predict_logits(model, torch.from_numpy(np.ascontiguousarray(image))[None], patch_size, **kwargs)
    return torch.softmax(logits, dim=1)[0].cpu().numpy().astype(np.float32)
