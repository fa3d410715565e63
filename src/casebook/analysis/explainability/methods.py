"""Attribution maps of a classifier's decision, one function per method.

Every method has the signature ``attribute(model, images, targets, **settings)``:
``images`` is a (N, C, *spatial) tensor on the model's device (2D or 3D), ``targets``
the class explained for each image, and the result a float32 NumPy array
(N, 1, *spatial) of exactly the input's spatial shape, non-negative and min-max scaled
to [0, 1] per image (a constant map becomes all zeros). The maps are therefore
*relative magnitudes*: the rank of a pixel within its image is meaningful, the value
across images or methods is not. Gradient methods (saliency, SmoothGrad, Integrated
Gradients) report the absolute value summed over the input channels; Grad-CAM(++) its
ReLU'd class activation map, upsampled to the input; occlusion the drop in the target
class's probability when a patch is blanked out.

The methods come from MONAI (Grad-CAM, Grad-CAM++, occlusion sensitivity) and Captum
(saliency, SmoothGrad, Integrated Gradients); this module only gives them one calling
convention. The model is put in eval mode with its parameters frozen while a method
runs, then left as it was: same weights, same training flag, same ``requires_grad``
flags, and no ``.grad`` left on any parameter.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from monai.transforms import ScaleIntensity
from monai.visualize import GradCAM, GradCAMpp, OcclusionSensitivity

Method = Callable[..., np.ndarray]


@contextmanager
def attribution_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode with frozen parameters for the duration of an attribution.

    Frozen parameters mean backward passes compute input gradients only (cheaper than a
    training step, and nothing accumulates in ``.grad``); the flags and the training
    mode are restored afterwards, so the caller's model is unchanged.
    """
    training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
            p.grad = None
        model.train(training)


def scale_maps(maps: torch.Tensor) -> np.ndarray:
    """Min-max scale each (1, *spatial) map of a batch to [0, 1] (constant maps to 0)."""
    scaler = ScaleIntensity(minv=0.0, maxv=1.0)
    scaled = [np.asarray(scaler(m.detach().float().cpu()), dtype=np.float32) for m in maps]
    return np.clip(np.stack(scaled), 0.0, 1.0)


def magnitude(attributions: torch.Tensor) -> torch.Tensor:
    """|attribution| summed over the input channels: (N, C, *sp) -> (N, 1, *sp)."""
    return attributions.detach().abs().sum(dim=1, keepdim=True)


def _leaf(images: torch.Tensor) -> torch.Tensor:
    """A copy of the images that requires grad: with the parameters frozen, the input
    is what the backward pass differentiates (and Captum warns unless it is set)."""
    return images.detach().clone().requires_grad_(True)


def _cam(cam_class, model, images, targets, layer: str, per_image: bool = False) -> np.ndarray:
    # MONAI's ModelWithHooks registers hooks it never removes and switches the layer's
    # `inplace` off: run it on a throwaway copy so that the caller's model stays as it was
    net = copy.deepcopy(model)
    for module in net.modules():
        # an in-place op right after the hooked layer (a ReLU after a batch norm) breaks
        # its full backward hook; MONAI switches off only the hooked layer's own `inplace`
        if getattr(module, "inplace", False):
            module.inplace = False
    cam = cam_class(nn_module=net, target_layers=layer, postprocessing=lambda m: m)
    x = _leaf(images)
    maps = torch.zeros((len(images), 1, *images.shape[2:]), device=images.device)
    targets = np.asarray(targets)
    # ModelWithHooks takes one class per call: one batched call per target class, or one
    # call per image for Grad-CAM++, whose MONAI 1.6.1 version multiplies the (B,) class
    # scores into (B, C, *spatial) gradients along the last axis: an error, or silently
    # wrong maps when the last spatial side of the feature map happens to equal B
    groups = [[i] for i in range(len(targets))] if per_image else [np.flatnonzero(targets == c) for c in np.unique(targets)]
    for rows in groups:
        rows = torch.as_tensor(np.asarray(rows), device=images.device)
        maps[rows] = cam(x[rows], class_idx=int(targets[rows[0].item()])).detach().to(maps.dtype)
    return scale_maps(maps)


def gradcam(model: torch.nn.Module, images: torch.Tensor, targets: Sequence[int], *, layer: str) -> np.ndarray:
    """Grad-CAM (monai.visualize.GradCAM) at ``layer`` (casebook.tasks.classification.networks.cam_layer)."""
    with attribution_mode(model):
        return _cam(GradCAM, model, images, targets, layer)


def gradcampp(model: torch.nn.Module, images: torch.Tensor, targets: Sequence[int], *, layer: str) -> np.ndarray:
    """Grad-CAM++ (monai.visualize.GradCAMpp) at ``layer``."""
    with attribution_mode(model):
        return _cam(GradCAMpp, model, images, targets, layer, per_image=True)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities from a classifier's (N, K) logits."""
    # MONAI's own `activate=True` picks sigmoid vs softmax by the *input's* channel count
    # (1.6.1), so a one-channel image would get a sigmoid of each logit: decide by outputs
    return logits.softmax(1) if logits.shape[1] > 1 else logits.sigmoid()


def occlusion(
    model: torch.nn.Module, images: torch.Tensor, targets: Sequence[int], *, mask_size: int = 8, overlap: float = 0.5, n_batch: int = 32
) -> np.ndarray:
    """Occlusion sensitivity (monai.visualize.OcclusionSensitivity).

    Each patch of side ``mask_size`` (sliding with ``overlap``) is set to 0, the same
    baseline as Integrated Gradients and the deletion curves (the mean of z-scored
    data, black for windowed data); MONAI averages the target probability over the
    patches covering a pixel. The map is the drop from the unoccluded probability,
    positive part: where hiding the image lowers the evidence for the target.
    """
    size = min(int(mask_size), *images.shape[2:])  # MONAI refuses a patch larger than the image
    occ = OcclusionSensitivity(
        model, mask_size=size, n_batch=n_batch, verbose=False, mode=0.0, overlap=float(overlap), activate=probabilities
    )
    maps = []
    with attribution_mode(model), torch.no_grad(), warnings.catch_warnings():
        # MONAI 1.6.1 indexes with lists, which torch deprecates: noise in the rule's log
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
        for x, c in zip(images, targets):
            clean = probabilities(model(x[None]))[0, int(c)]
            # MONAI returns (map, most probable class); the map is a MetaTensor
            # (1, n_classes, *spatial) whose channel k is class k's probability
            occ_map, _ = occ(x[None])
            occluded = occ_map.as_tensor()[0, int(c)]
            maps.append((clean - occluded).clamp(min=0)[None])
    return scale_maps(torch.stack(maps))


def saliency(model: torch.nn.Module, images: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
    """Vanilla gradient (captum.attr.Saliency): |d logit_target / d input|."""
    with attribution_mode(model):
        grads = Saliency(model).attribute(_leaf(images), target=[int(t) for t in targets], abs=True)
    return scale_maps(magnitude(grads))


def smoothgrad(
    model: torch.nn.Module, images: torch.Tensor, targets: Sequence[int], *, samples: int = 16, noise_level: float = 0.15, seed: int = 0
) -> np.ndarray:
    """SmoothGrad: the saliency map averaged over ``samples`` noisy copies of the image
    (captum.attr.NoiseTunnel over Saliency), noise sd = ``noise_level`` x the image's
    intensity range. Captum takes one sd per input tensor, so images go one at a time;
    the noise is seeded per image, so that an image's map does not depend on the batch
    it came in and is reproducible (the sanity check must tell a changed model from
    changed noise)."""
    tunnel = NoiseTunnel(Saliency(model))
    maps = []
    devices = [images.device] if images.device.type == "cuda" else []
    with attribution_mode(model), torch.random.fork_rng(devices=devices):
        for x, c in zip(images, targets):
            torch.manual_seed(seed)
            sd = float(noise_level) * float(x.max() - x.min())
            grads = tunnel.attribute(_leaf(x[None]), nt_type="smoothgrad", nt_samples=int(samples), stdevs=sd, target=int(c), abs=True)
            maps.append(magnitude(grads)[0])
    return scale_maps(torch.stack(maps))


def integrated_gradients(
    model: torch.nn.Module, images: torch.Tensor, targets: Sequence[int], *, steps: int = 32, internal_batch_size: int = 32
) -> np.ndarray:
    """Integrated Gradients (captum.attr.IntegratedGradients) from an all-zero baseline,
    ``steps`` points along the path; ``internal_batch_size`` bounds how many path points
    go through the network at once (memory, not result)."""
    with attribution_mode(model):
        attributions = IntegratedGradients(model).attribute(
            _leaf(images),
            baselines=0.0,
            target=[int(t) for t in targets],
            n_steps=int(steps),
            internal_batch_size=int(internal_batch_size),
        )
    return scale_maps(magnitude(attributions))


# the names of the case-study config's `explain: methods` (workflow/schemas/casestudy.schema.yaml)
METHODS: dict[str, Method] = {
    "gradcam": gradcam,
    "gradcampp": gradcampp,
    "occlusion": occlusion,
    "saliency": saliency,
    "smoothgrad": smoothgrad,
    "integrated_gradients": integrated_gradients,
}
LAYER_METHODS = frozenset({"gradcam", "gradcampp"})
LABELS = {
    "gradcam": "Grad-CAM",
    "gradcampp": "Grad-CAM++",
    "occlusion": "Occlusion",
    "saliency": "Saliency",
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "Integrated Gradients",
}


def explain(
    name: str,
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: Sequence[int],
    settings: dict[str, Any] | None = None,
    layer: str | None = None,
    batch_size: int = 8,
) -> np.ndarray:
    """Maps (N, 1, *spatial) of method ``name`` with its config ``settings``, computed
    ``batch_size`` images at a time (3D networks' activations bound the memory)."""
    if name not in METHODS:
        raise ValueError(f"unknown attribution method {name!r}; known: {sorted(METHODS)}")
    kwargs = dict(settings or {})
    if name in LAYER_METHODS:
        if layer is None:
            raise ValueError(f"{name} needs the network's target layer (casebook.tasks.classification.networks.cam_layer)")
        kwargs["layer"] = layer
    targets = [int(t) for t in targets]
    chunks = [
        METHODS[name](model, images[i : i + batch_size], targets[i : i + batch_size], **kwargs) for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, 1, *images.shape[2:]), dtype=np.float32)
