"""Cost of each attribution method of the explain rule, in seconds per explained image.

Each method runs through casebook.analysis.explainability.explain with the schema's default
settings (occlusion 8-pixel patches at 0.5 overlap, SmoothGrad 16 samples, Integrated
Gradients 32 steps) on a small MONAI DenseNet: 2D at 64x64 and 3D at 32^3. The weights
are random (seeded): the cost of a method does not depend on what the network learned,
though the maps do. The baseline, measured in the same process and alternating with the
methods so that machine load affects all alike, is one plain forward + backward pass per
image to the input (the cost of a vanilla gradient, written directly in torch); each
method's ratio to it is its cost in such passes.

    .venv/bin/python benchmarks/explain_methods.py [--rounds 3] [--threads 2] [--device cuda]

Prints the median over rounds of seconds per image (each timed call preceded by an
untimed one), and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from casebook.analysis.explainability import METHODS, attribution_mode, explain
from casebook.tasks.classification.networks import build_network, cam_layer

SPEC = {"name": "densenet", "kwargs": {"init_features": 16, "growth_rate": 16, "block_config": [2, 2, 2]}}
CASES = {
    # name: (network spec, image shape (C, *spatial), images explained per round)
    "densenet_small_2d_64": (SPEC, (1, 64, 64), 8),
    "densenet_small_3d_32": (SPEC, (1, 32, 32, 32), 4),
}
# the schema's defaults (workflow/schemas/casestudy.schema.yaml, `explain:`)
SETTINGS = {
    "occlusion": {"mask_size": 8, "overlap": 0.5},
    "smoothgrad": {"samples": 16, "noise_level": 0.15},
    "integrated_gradients": {"steps": 32},
}


def baseline(model: torch.nn.Module, images: torch.Tensor, targets: list[int]) -> None:
    """One forward and one backward pass to the input, per image (batched)."""
    with attribution_mode(model):
        x = images.detach().clone().requires_grad_(True)
        scores = model(x)[torch.arange(len(x)), torch.as_tensor(targets, device=x.device)]
        torch.autograd.grad(scores.sum(), x)


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(spec, shape, n: int, rounds: int, methods: list[str], device: torch.device) -> dict[str, float]:
    """Median seconds per image of the baseline and of each method."""
    torch.manual_seed(0)
    model = build_network(spec, spatial_dims=len(shape) - 1, in_channels=shape[0], num_classes=2).to(device).eval()
    images = torch.from_numpy(np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)).to(device)
    targets = [k % 2 for k in range(n)]
    layer = cam_layer(spec)
    jobs = {"baseline": lambda: baseline(model, images, targets)}
    for name in methods:
        jobs[name] = lambda name=name: explain(name, model, images, targets, SETTINGS.get(name, {}), layer, batch_size=n)
    timings: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(rounds):
        for name, job in jobs.items():
            # an untimed call first: a job that follows a memory-hungry one (IG, occlusion)
            # would otherwise pay for the allocator's reshuffle (seen: 2x on the baseline)
            job()
            timings[name].append(_timed(job, device) / n)
    return {name: float(np.median(t)) for name, t in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, {args.threads} thread(s), random weights, median of {args.rounds} rounds")
    print(f"{'case':22s} {'method':22s} {'s / image':>10s} {'x baseline':>11s}")
    for case in args.cases:
        spec, shape, n = CASES[case]
        seconds = measure(spec, shape, n, args.rounds, args.methods, device)
        for name, value in seconds.items():
            print(f"{case:22s} {name:22s} {value:10.4f} {value / seconds['baseline']:11.1f}")


if __name__ == "__main__":
    main()
