"""``retinanet``: MONAI's RetinaNet detector (``monai.apps.detection``) on a feature
extractor of the project's own size.

The backbone is MONAI's ``ResNet`` (basic blocks, one channel in), its stages
``returned_layers`` fed to MONAI's ``BackboneWithFPN`` with ``fpn_channels`` channels
(torchvision's 256 is minutes per epoch on a CPU). ``BackboneWithFPN`` runs the ResNet's
children one after another (``IntermediateLayerGetter``), not its ``forward``, so the
ResNet's max-pool always runs, whatever ``no_max_pool`` says: the finest level has the
first convolution's stride times 2; anchors come from MONAI's
``AnchorGeneratorWithAnchorShape`` (``anchor_shapes`` in voxels at the finest level,
doubled at each coarser one). Training matches anchors by MONAI's ATSS matcher (or the
IoU ``Matcher``) and samples them by its hard-negative sampler (or the balanced one);
where torchvision does not import, :mod:`.torchvision_standin` supplies what MONAI takes
from it. Excluded findings are left out of the targets (RetinaNet cannot ignore a
region), so they count as background in training, though never as false positives in
the FROC.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.losses.giou_loss import BoxGIoULoss
from monai.networks.blocks.backbone_fpn_utils import BackboneWithFPN
from monai.networks.nets.resnet import ResNet

from casebook.tasks.detection.torchvision_standin import ensure_monai_detection

#: the defaults of ``network.kwargs``: a small backbone for CPUs whose finest feature map
#: has stride 2 (a first convolution of stride 2, so a finest stride of 4, put the boxes'
#: centres about a nodule's radius off: CPM 0.51 against 0.93 on the synthetic chest CT);
#: anchors for findings of 4 to 24 voxels (3D) or 6 to 48 pixels (2D)
DEFAULTS: dict[str, Any] = {
    "channels": [8, 16, 32, 64],
    "layers": [1, 1, 1, 1],
    "conv1_stride": 1,
    "returned_layers": [1, 2],
    "fpn_channels": 16,
    "anchor_shapes": {3: [[4, 4, 4], [6, 6, 6]], 2: [[8, 8], [12, 6], [6, 12]]},
    "box_loss": "smooth_l1",
    "matcher": "atss",
    "sampler": "hard_negative",
    "anchors_per_image": 64,
    "positive_fraction": 0.3,
}


def settings_of(network: dict[str, Any], spatial_dims: int) -> dict[str, Any]:
    kw = {**DEFAULTS, **(network.get("kwargs") or {})}
    if isinstance(kw["anchor_shapes"], dict):
        kw["anchor_shapes"] = kw["anchor_shapes"][spatial_dims]
    if any(len(s) != spatial_dims for s in kw["anchor_shapes"]):
        raise ValueError(f"retinanet anchor_shapes {kw['anchor_shapes']} must have {spatial_dims} sides each")
    if kw["box_loss"] not in ("smooth_l1", "giou"):
        raise ValueError(f"retinanet box_loss must be smooth_l1 or giou, got {kw['box_loss']!r}")
    if kw["matcher"] not in ("atss", "iou") or kw["sampler"] not in ("hard_negative", "balanced"):
        raise ValueError(f"retinanet matcher must be atss or iou, sampler hard_negative or balanced; got {kw['matcher']}, {kw['sampler']}")
    return kw


def divisor(network: dict[str, Any]) -> int:
    """The total stride of the coarsest feature map: the first convolution's, the
    ResNet's max-pool, one per returned stage after the first, and the FPN's extra
    max-pooled level."""
    kw = {**DEFAULTS, **(network.get("kwargs") or {})}
    return int(kw["conv1_stride"]) * 2 ** (max(kw["returned_layers"]) + 1)


def build_retinanet(network: dict[str, Any], spatial_dims: int) -> RetinaNetDetector:
    """MONAI's RetinaNetDetector for one class, configured for training; inference
    settings are given per call (:func:`retina_candidates`)."""
    ensure_monai_detection()
    kw = settings_of(network, spatial_dims)
    layers = list(kw["returned_layers"])
    backbone = ResNet(
        block="basic",
        layers=list(kw["layers"]),
        block_inplanes=list(kw["channels"]),
        spatial_dims=spatial_dims,
        n_input_channels=1,
        conv1_t_size=3,
        conv1_t_stride=int(kw["conv1_stride"]),
        feed_forward=False,
    )
    extractor = BackboneWithFPN(
        backbone,
        return_layers={f"layer{k}": str(i) for i, k in enumerate(layers)},
        in_channels_list=[int(kw["channels"][k - 1]) for k in layers],
        out_channels=int(kw["fpn_channels"]),
        spatial_dims=spatial_dims,
    )
    anchors = AnchorGeneratorWithAnchorShape(
        feature_map_scales=[2**i for i in range(len(layers) + 1)], base_anchor_shapes=[list(s) for s in kw["anchor_shapes"]]
    )
    net = RetinaNet(
        spatial_dims=spatial_dims,
        num_classes=1,
        num_anchors=len(kw["anchor_shapes"]),
        feature_extractor=extractor,
        size_divisible=divisor(network),
    )
    detector = RetinaNetDetector(net, anchors)
    if kw["box_loss"] == "giou":  # on the decoded boxes: the overlap that mAP scores, not offsets
        detector.set_box_regression_loss(BoxGIoULoss(reduction="mean"), encode_gt=False, decode_pred=True)
    if kw["matcher"] == "atss":
        detector.set_atss_matcher(num_candidates=4, center_in_gt=False)
    else:
        detector.set_regular_matcher(0.4, 0.3, allow_low_quality_matches=True)
    if kw["sampler"] == "hard_negative":
        detector.set_hard_negative_sampler(int(kw["anchors_per_image"]), float(kw["positive_fraction"]), min_neg=16, pool_size=20)
    else:
        detector.set_balanced_sampler(int(kw["anchors_per_image"]), float(kw["positive_fraction"]))
    return detector


#: the family's voxel coordinates put voxel centres on whole numbers; MONAI's boxes put
#: voxel edges there (its anchors centre on ``i * stride + stride // 2``, its flips map
#: ``x`` to ``n - x``): a box goes to MONAI half a voxel up, and comes back down
EDGE = 0.5


def retina_item(image: np.ndarray, boxes: np.ndarray, start: np.ndarray, stop: np.ndarray) -> dict[str, np.ndarray]:
    """The corner boxes (min per axis, then max, in MONAI's voxel-edge coordinates of the
    crop) of the findings whose centre lies in the crop [start, stop), clipped to it;
    excluded findings, and findings centred outside the crop, are left out (background
    in this crop, unlike the U-Nets' targets, which keep a neighbour's tail)."""
    nd = len(start)
    centres, sizes, excluded = boxes[:, :nd], boxes[:, nd : 2 * nd], boxes[:, 2 * nd] > 0.5
    inside = ~excluded & np.all((centres >= start) & (centres < stop), axis=1)
    lo = np.clip(centres[inside] - sizes[inside] / 2 - start + EDGE, 0, stop - start)
    hi = np.clip(centres[inside] + sizes[inside] / 2 - start + EDGE, 0, stop - start)
    return {"image": image[None], "boxes": np.concatenate([lo, hi], axis=1).astype(np.float32).reshape(-1, 2 * nd)}


def flip_boxes(boxes: np.ndarray, shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    """Corner boxes (voxel-edge coordinates) of an image flipped along ``axes`` (array axes)."""
    nd, out = len(shape), boxes.copy()
    for a in axes:
        out[:, a], out[:, a + nd] = shape[a] - boxes[:, a + nd], shape[a] - boxes[:, a]
    return out


def retina_batch(items: list[dict[str, np.ndarray]], flips: np.ndarray) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """The stacked images and MONAI's per-image targets, each item flipped along the axes
    ``flips`` marks."""
    images, targets = [], []
    for item, flip in zip(items, flips):
        axes = tuple(int(a) for a in np.flatnonzero(flip))
        image = np.flip(item["image"], tuple(1 + a for a in axes)) if axes else item["image"]
        boxes = flip_boxes(item["boxes"], item["image"].shape[1:], axes)
        images.append(np.ascontiguousarray(image))
        targets.append({"boxes": torch.from_numpy(boxes), "labels": torch.zeros(len(boxes), dtype=torch.long)})
    try:
        return torch.from_numpy(np.stack(images)), targets
    except ValueError:
        raise ValueError("volumes of different shapes cannot be batched: train on patches (detection.patch) or with batch_size 1") from None


@contextlib.contextmanager
def _loss_mode(detector: RetinaNetDetector):
    """The detector computes losses (its own ``training`` flag) while its network stays in
    evaluation mode (batch norm's running statistics, nothing updated): the validation loss."""
    detector_mode, network_mode = detector.training, detector.network.training
    detector.network.eval()
    detector.training = True
    try:
        yield
    finally:
        detector.training = detector_mode
        detector.network.train(network_mode)


def retina_loss(detector: RetinaNetDetector, images: torch.Tensor, targets: list[dict[str, torch.Tensor]], *, validation: bool = False):
    """Classification (focal-free BCE on sampled anchors) plus box-regression loss."""
    device = images.device
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    with _loss_mode(detector) if validation else contextlib.nullcontext():
        losses = detector(images, targets)
    return losses[detector.cls_key] + losses[detector.box_reg_key]


def _now(device: torch.device) -> float:
    """The time once the device's queued work is done (a GPU runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class _NetworkClock:
    """Seconds spent in the detector's network (forward hooks, once per sliding window):
    the rest of a call is MONAI's stitching of the windows, anchor decoding and box
    selection."""

    def __init__(self, network: torch.nn.Module, device: torch.device):
        self.seconds, self._start = 0.0, 0.0

        def started(*_):
            self._start = _now(device)

        def finished(*_):
            self.seconds += _now(device) - self._start

        self._hooks = [network.register_forward_pre_hook(started), network.register_forward_hook(finished)]

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()


def retina_candidates(detector: RetinaNetDetector, image: np.ndarray, settings: dict[str, Any], seconds: dict[str, float] | None = None):
    """The detector's boxes in one prepared volume as candidates (score, centre, size in
    voxels), best first; MONAI's box selector applies ``min_score``, ``nms_iou`` and
    ``max_candidates``. With ``seconds``, adds the network's time to ``forward`` and the
    rest to ``post``."""
    patch = settings.get("patch")
    detector.eval()
    detector.set_box_selector_parameters(
        score_thresh=float(settings["min_score"]),
        topk_candidates_per_level=1000,
        nms_thresh=float(settings["nms_iou"]),
        detections_per_img=int(settings["max_candidates"]),
    )
    windows = bool(patch) and any(n > p for n, p in zip(image.shape, patch))
    if windows:
        detector.set_sliding_window_inferer(roi_size=list(patch), sw_batch_size=2, overlap=0.25, mode="gaussian")
    device = next(detector.parameters()).device
    x = torch.from_numpy(np.array(image, np.float32))[None, None].to(device)
    clock = _NetworkClock(detector.network, device)
    start = _now(device)
    try:
        with torch.no_grad():
            found = detector(x, use_inferer=windows)[0]
    finally:
        clock.remove()
    if seconds is not None:
        seconds["forward"] = seconds.get("forward", 0.0) + clock.seconds
        seconds["post"] = seconds.get("post", 0.0) + _now(device) - start - clock.seconds
    boxes = found[detector.target_box_key].float().cpu().numpy()
    scores = found[detector.pred_score_key].float().cpu().numpy()
    nd = image.ndim
    order = np.argsort(-scores, kind="stable")
    return [(float(scores[i]), (boxes[i, :nd] + boxes[i, nd:]) / 2 - EDGE, boxes[i, nd:] - boxes[i, :nd]) for i in order]
