"""What MONAI's RetinaNet takes from torchvision, for where torchvision does not import.

``monai.apps.detection`` imports four helpers from torchvision through
``optional_import``; without torchvision each is a placeholder that raises when used:

- ``Matcher`` (retinanet_detector): the IoU matcher of ``set_regular_matcher``. Worse,
  ``compute_anchor_matched_idxs`` tests ``isinstance(matcher, Matcher)`` before its ATSS
  branch, so the placeholder breaks training with MONAI's own ATSS matcher too;
- ``BalancedPositiveNegativeSampler`` (retinanet_detector): the sampler of
  ``set_balanced_sampler``, also named in an ``isinstance`` test before MONAI's own
  ``HardNegativeSampler`` is reached;
- ``IntermediateLayerGetter`` (``torchvision.models._utils``, used by
  ``monai.networks.blocks.backbone_fpn_utils.BackboneWithFPN``): the backbone's
  feature maps for the FPN;
- ``_validate_trainable_layers`` (retinanet_network, used by
  ``resnet_fpn_feature_extractor``): the number of backbone stages left trainable.

:func:`ensure_monai_detection` puts the classes below in their place, and only where
``import torchvision`` fails: where torchvision runs (a GPU node), MONAI keeps its own.
They follow torchvision's documented behaviour (match codes -1 and -2, low-quality
matches, samplers returning per-image 0/1 masks, an ordered dict of named feature maps).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

import torch
from torch import nn

#: the helpers replaced, as MONAI names them
REPLACED = (
    "torchvision.models.detection._utils.Matcher",
    "torchvision.models.detection._utils.BalancedPositiveNegativeSampler",
    "torchvision.models._utils.IntermediateLayerGetter",
    "torchvision.models.detection.backbone_utils._validate_trainable_layers",
)


class Matcher:
    """Match each prediction (column) to the ground truth (row) it overlaps most.

    ``matcher(quality)`` with ``quality`` of shape (M ground truths, N predictions) gives
    N indices: the matched ground truth when its quality is at least ``high_threshold``,
    ``BELOW_LOW_THRESHOLD`` under ``low_threshold``, ``BETWEEN_THRESHOLDS`` between. With
    ``allow_low_quality_matches``, a ground truth whose best quality is under the high
    threshold keeps the predictions that reach that best quality (so every box has an
    anchor), each matched to the ground truth it overlaps most.
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold {low_threshold} is above high_threshold {high_threshold}")
        self.high_threshold, self.low_threshold = high_threshold, low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, quality: torch.Tensor) -> torch.Tensor:
        if quality.numel() == 0:
            raise ValueError(f"no ground truth or no prediction to match (quality matrix of shape {tuple(quality.shape)})")
        best, matches = quality.max(dim=0)
        out = matches.clone()
        out[best < self.high_threshold] = self.BETWEEN_THRESHOLDS
        out[best < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        if self.allow_low_quality_matches:
            # every prediction tying a ground truth's best quality gets its own best match back
            best_per_truth = quality.max(dim=1, keepdim=True).values
            keep = (quality == best_per_truth).any(dim=0)
            out[keep] = matches[keep]
        return out


class BalancedPositiveNegativeSampler:
    """Per image, up to ``batch_size_per_image`` elements, at most ``positive_fraction``
    of them positive, the rest negative, drawn at random (torch's global generator).

    Takes a list of per-image tensors (-1 ignored, 0 negative, above 0 positive); returns
    two lists of uint8 masks of the same shapes, the positives and the negatives chosen.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction

    @staticmethod
    def _choose(candidates: torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(like, dtype=torch.uint8)
        chosen = candidates[torch.randperm(candidates.numel(), device=candidates.device)[:n]]
        mask[chosen] = 1
        return mask

    def __call__(self, matched_idxs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        positives, negatives = [], []
        for labels in matched_idxs:
            pos = torch.where(labels >= 1)[0]
            neg = torch.where(labels == 0)[0]
            n_pos = min(int(self.batch_size_per_image * self.positive_fraction), pos.numel())
            n_neg = min(self.batch_size_per_image - n_pos, neg.numel())
            positives.append(self._choose(pos, n_pos, labels))
            negatives.append(self._choose(neg, n_neg, labels))
        return positives, negatives


class IntermediateLayerGetter(nn.ModuleDict):
    """A model's direct children in order, up to the last one named in ``return_layers``;
    its forward returns an ordered dict of the outputs of those children, under the
    names ``return_layers`` gives them. Only direct children can be named, and only a
    model whose forward applies its children in order gives the features it would."""

    def __init__(self, model: nn.Module, return_layers: dict[str, str]):
        children = OrderedDict(model.named_children())
        missing = sorted(set(return_layers) - set(children))
        if missing:
            raise ValueError(f"return_layers {missing} are not direct children of {type(model).__name__} ({list(children)})")
        wanted, layers = dict(return_layers), OrderedDict()
        for name, module in children.items():
            layers[name] = module
            wanted.pop(name, None)
            if not wanted:
                break
        super().__init__(layers)
        self.return_layers = dict(return_layers)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out = OrderedDict()
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


def validate_trainable_layers(is_trained: bool, trainable_backbone_layers: int | None, max_value: int, default_value: int) -> int:
    """How many backbone stages train: all (``max_value``) for an untrained backbone, else
    the number asked for or ``default_value``; out of [0, max_value] is refused."""
    if not is_trained:
        if trainable_backbone_layers is not None and trainable_backbone_layers != max_value:
            warnings.warn(f"an untrained backbone trains all its {max_value} stages, not {trainable_backbone_layers}", stacklevel=2)
        return max_value
    layers = default_value if trainable_backbone_layers is None else trainable_backbone_layers
    if not 0 <= layers <= max_value:
        raise ValueError(f"trainable_backbone_layers must lie in [0, {max_value}], got {layers}")
    return layers


def torchvision_imports() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - an ImportError, or a build that fails to load its operators
        return False
    return True


def provider() -> str:
    """Whose helpers MONAI's detection uses here, for the records."""
    if torchvision_imports():
        return "torchvision"
    return f"casebook.tasks.detection.torchvision_standin for {', '.join(REPLACED)}"


def ensure_monai_detection() -> bool:
    """Put the stand-ins into MONAI's detection modules where torchvision does not import;
    return whether they are in place (False: torchvision's own are used)."""
    if torchvision_imports():
        return False
    from types import SimpleNamespace

    from monai.apps.detection.networks import retinanet_detector, retinanet_network
    from monai.networks.blocks import backbone_fpn_utils

    retinanet_detector.Matcher = Matcher
    retinanet_detector.BalancedPositiveNegativeSampler = BalancedPositiveNegativeSampler
    retinanet_network._validate_trainable_layers = validate_trainable_layers
    backbone_fpn_utils.torchvision_models = SimpleNamespace(_utils=SimpleNamespace(IntermediateLayerGetter=IntermediateLayerGetter))
    return True
