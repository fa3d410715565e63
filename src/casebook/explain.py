"""Explanation: Grad-CAM (monai.visualize) on test images, and, where lesion masks
exist (the synthetic data), how much of the CAM's energy falls inside the lesion.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.transforms import ScaleIntensity
from monai.visualize import GradCAM

from casebook.fileio import write_json
from casebook.figures import plot_cam_grid
from casebook.models import cam_layer
from casebook.preprocess import load_cache
from casebook.train import load_model, select_device


def pick_examples(predictions: pd.DataFrame, per_class: int, seed: int = 0) -> pd.DataFrame:
    """Up to ``per_class`` test images of each true class, drawn with a seed."""
    parts = [
        group.sample(n=min(per_class, len(group)), random_state=seed).sort_values("image_id")
        for _, group in predictions.groupby("label", sort=True)
    ]
    return pd.concat(parts, ignore_index=True)


def scale_to_unit(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each map to [0, 1], high activation staying high.

    MONAI's default CAM post-processing maps (min, max) to (1, 0), flipping magnitudes
    (its docstring says so); overlays and the in-mask energy need the unflipped map.
    """
    return torch.stack([ScaleIntensity(minv=0.0, maxv=1.0)(m) for m in maps])


def grad_cam(model: torch.nn.Module, layer: str, images: torch.Tensor, class_idx: int | list[int]) -> np.ndarray:
    """Grad-CAM maps (N, 1, *spatial), upsampled to the input and scaled to [0, 1]."""
    cam = GradCAM(nn_module=model, target_layers=layer, postprocessing=scale_to_unit)
    maps = []
    classes = [class_idx] * len(images) if isinstance(class_idx, int) else class_idx
    for x, c in zip(images, classes):
        maps.append(cam(x[None], class_idx=int(c)).detach().cpu().numpy()[0])
    return np.stack(maps)


def energy_in_mask(cam: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Share of CAM energy inside the mask, and the mask's share of the image.

    The second number is what a map spread evenly over the image would score, so the
    first is only informative relative to it.
    """
    cam = np.clip(cam.astype(np.float64), 0, None)
    inside = mask.astype(bool)
    total = cam.sum()
    share = float(cam[inside].sum() / total) if total > 0 else float("nan")
    return share, float(inside.mean())


def cam_mask_summary(cams: np.ndarray, masks: np.ndarray, image_ids: list[str]) -> dict[str, Any]:
    """Per-image and mean CAM energy inside the lesion mask, for images with a lesion."""
    rows = []
    for image_id, cam, mask in zip(image_ids, cams, masks):
        if mask.any():
            share, area = energy_in_mask(cam, mask)
            rows.append({"image_id": image_id, "cam_energy_in_mask": share, "mask_area_fraction": area})
    if not rows:
        return {"n_images": 0, "per_image": []}
    shares = np.array([r["cam_energy_in_mask"] for r in rows])
    areas = np.array([r["mask_area_fraction"] for r in rows])
    return {
        "n_images": len(rows),
        "cam_energy_in_mask_mean": float(np.nanmean(shares)),
        "cam_energy_in_mask_sd": float(np.nanstd(shares)),
        "mask_area_fraction_mean": float(areas.mean()),
        # how many times more CAM energy the lesion holds than its area would predict
        "enrichment": float(np.nanmean(shares) / areas.mean()),
        "per_image": rows,
    }


def explain_stage(
    model_cfg: dict[str, Any],
    cfg: dict[str, Any],
    *,
    inputs: dict[str, str],
    outputs: dict[str, str],
    class_names: list[str],
    title: str,
) -> dict[str, Any]:
    """The explain rule: a Grad-CAM grid of test images and, where lesion masks exist,
    the share of CAM energy inside them (for the positive class)."""
    images, masks = load_cache(inputs["images"], inputs["masks"])
    index = pd.read_csv(inputs["index"], sep="\t", dtype={"image_id": str, "patient_id": str})
    predictions = pd.read_csv(inputs["predictions"], sep="\t", dtype={"image_id": str, "patient_id": str})
    device = select_device(model_cfg.get("device", "auto"))
    n_classes = len(class_names)
    model = load_model(
        inputs["model"], model_cfg["network"], spatial_dims=images.ndim - 2, in_channels=images.shape[1], num_classes=n_classes, device=device
    )
    layer = cam_layer(model_cfg["network"])
    row_of = index.set_index("image_id")["row"]
    seed = int(model_cfg.get("seed", 0))

    def load(ids) -> torch.Tensor:
        return torch.from_numpy(np.stack([images[row_of[i]] for i in ids])).float().to(device)

    shown = pick_examples(predictions, int(cfg.get("images_per_class", 4)), seed)
    by_id = predictions.set_index("image_id")
    # the class reported in predictions.tsv (at the validation-chosen threshold), not the arg-max
    shown_images = np.stack([images[row_of[i]] for i in shown["image_id"]])
    classes = by_id.loc[shown["image_id"], "prediction"].astype(int).tolist()
    cams = grad_cam(model, layer, torch.from_numpy(shown_images).float().to(device), classes)
    shown_masks = None if masks is None else np.stack([masks[row_of[i]] for i in shown["image_id"]])

    summary: dict[str, Any] = {"layer": layer, "method": "Grad-CAM (monai.visualize.GradCAM)", "n_images": 0}
    if masks is not None:
        # measured on every lesion-bearing test image (up to a cap), not only those shown
        with_mask = [i for i in predictions["image_id"] if masks[row_of[i]].any()][: int(cfg.get("max_mask_images", 200))]
        if with_mask:
            mask_cams = grad_cam(model, layer, load(with_mask), n_classes - 1)
            summary.update(cam_mask_summary(mask_cams, np.stack([masks[row_of[i]] for i in with_mask]), with_mask))
            summary["target_class"] = class_names[-1]
    write_json(outputs["summary"], summary)
    if summary["n_images"]:
        title += (
            f"\nCAM energy inside lesion {summary['cam_energy_in_mask_mean']:.2f} on {summary['n_images']} test images"
            f" (lesion area {summary['mask_area_fraction_mean']:.2f}, {summary['enrichment']:.1f}x enrichment)"
        )
    positive = by_id.loc[shown["image_id"], f"prob_{n_classes - 1}"].to_numpy()
    plot_cam_grid(shown_images, cams, shown_masks, shown.assign(prob_1=positive), class_names, title, outputs["grid"])
    return summary
