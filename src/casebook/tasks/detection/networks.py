"""The detectors: MONAI's U-Net with a head per kind, and how each turns its output into
candidates.

``centre_point``: a U-Net with one heatmap channel and one size channel per axis
(:mod:`.heatmap`); its candidates are the heatmap's peaks with their predicted sizes.
``unet_components``: a U-Net segmenting the findings (background and finding); its
candidates are the connected components of the finding probability above
``component_threshold``, each scored by its highest probability, sized by its extent
(the U-Net plus connected components of the 6.4b comparison).
``retinanet``: MONAI's RetinaNet detector on a small ResNet with an FPN (:mod:`.retina`);
its candidates are MONAI's selected boxes.
All take one channel, windowed to [0, 1]; a volume larger than ``detection.patch`` is
read by MONAI's sliding-window inference.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from monai.data.box_utils import non_max_suppression
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from scipy import ndimage

from casebook.tasks.detection import retina
from casebook.tasks.detection.heatmap import decode

KINDS = ("centre_point", "unet_components", "retinanet")
#: (score, centre voxel, size voxels), array-axis order
Candidate = tuple[float, np.ndarray, np.ndarray]


def out_channels(kind: str, spatial_dims: int) -> int:
    return 1 + spatial_dims if kind == "centre_point" else 2


#: the heatmap's prior probability of a centre (CenterNet's initial bias): starting from
#: 0.5 everywhere, the background's focal loss swamps the few centres for many epochs
PRIOR = 0.01


class Detector(torch.nn.Module):
    """A MONAI U-Net whose first output channel starts at the centre prior (centre_point)."""

    def __init__(self, unet: UNet, kind: str):
        super().__init__()
        self.unet, self.kind = unet, kind
        self.offset = float(np.log(PRIOR / (1 - PRIOR))) if kind == "centre_point" else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.unet(x)
        if self.offset:
            out = torch.cat([out[:, :1] + self.offset, out[:, 1:]], dim=1)
        return out


def build_detector(network: dict[str, Any], spatial_dims: int) -> torch.nn.Module:
    """The detector ``network['name']`` (a kind of :data:`KINDS`): for the U-Net kinds,
    ``kwargs`` may set channels, strides and num_res_units; for ``retinanet``, see
    :mod:`.retina`."""
    kind = network["name"]
    if kind not in KINDS:
        raise ValueError(f"unknown detector {kind!r}; choose one of {list(KINDS)}")
    if kind == "retinanet":
        return retina.build_retinanet(network, spatial_dims)
    kwargs = {"channels": (8, 16, 32, 64), "strides": (2, 2, 2), "num_res_units": 1, **(network.get("kwargs") or {})}
    return Detector(UNet(spatial_dims=spatial_dims, in_channels=1, out_channels=out_channels(kind, spatial_dims), **kwargs), kind)


def divisor(network: dict[str, Any]) -> int:
    """What every input size must be a multiple of: the product of the network's strides."""
    if network["name"] == "retinanet":
        return retina.divisor(network)
    strides = (network.get("kwargs") or {}).get("strides", (2, 2, 2))
    return int(np.prod(strides))


@torch.no_grad()
def forward(model: torch.nn.Module, image: np.ndarray, patch: list[int] | None) -> torch.Tensor:
    """The network's output (C, *shape) for one volume, on the CPU."""
    device = next(model.parameters()).device
    # a copy in memory: the prepared volumes are read-only memory maps
    x = torch.from_numpy(np.array(image, np.float32))[None, None].to(device)
    if patch and any(n > p for n, p in zip(image.shape, patch)):
        out = sliding_window_inference(x, roi_size=list(patch), sw_batch_size=2, predictor=model, overlap=0.25, mode="gaussian")
    else:
        out = model(x)
    return out[0].float().cpu()


def _corner_boxes(cands: list[Candidate]) -> torch.Tensor:
    return torch.tensor(np.array([np.concatenate([c - s / 2, c + s / 2]) for _, c, s in cands]), dtype=torch.float32)


def heatmap_candidates(output: torch.Tensor, settings: dict[str, Any]) -> list[Candidate]:
    """Peaks of the heatmap, then NMS (MONAI) of their boxes."""
    cands = decode(output[:1], output[1:], min_score=float(settings["min_score"]), max_candidates=int(settings["max_candidates"]))
    if len(cands) < 2:
        return cands
    keep = non_max_suppression(_corner_boxes(cands), torch.tensor([c[0] for c in cands]), float(settings["nms_iou"]))
    return [cands[i] for i in sorted(keep.tolist())]


def component_candidates(output: torch.Tensor, settings: dict[str, Any]) -> list[Candidate]:
    """Connected components of the finding probability, best first."""
    prob = torch.softmax(output, dim=0)[1].numpy()
    labels, n = ndimage.label(prob >= float(settings["component_threshold"]))
    cands = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        inside = labels[region] == index
        score = float(prob[region][inside].max())
        centre = np.array([s.start for s in region], float) + np.array(ndimage.center_of_mass(inside))
        cands.append((score, centre, np.array([s.stop - s.start for s in region], float)))
    cands.sort(key=lambda c: -c[0])
    return cands[: int(settings["max_candidates"])]


def candidates(
    model: torch.nn.Module, kind: str, image: np.ndarray, settings: dict[str, Any], seconds: dict[str, float] | None = None
) -> list[Candidate]:
    """A detector's candidates in one prepared volume. With ``seconds``, adds the time of
    the network's forward pass to ``forward`` and of the post-processing to ``post``."""
    if kind == "retinanet":
        return retina.retina_candidates(model, image, settings, seconds)
    start = time.perf_counter()
    output = forward(model, image, settings.get("patch"))
    middle = time.perf_counter()
    found = heatmap_candidates(output, settings) if kind == "centre_point" else component_candidates(output, settings)
    if seconds is not None:
        seconds["forward"] = seconds.get("forward", 0.0) + middle - start
        seconds["post"] = seconds.get("post", 0.0) + time.perf_counter() - middle
    return found
