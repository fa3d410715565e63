"""Sliding-window inference throughput, and what the blending costs over the windows alone.

For each network (``casebook.tasks.segmentation.networks.build_seg_network``, the pipeline's
defaults), in the same process and from the same weights:

* ours: ``casebook.tasks.segmentation.inference.predict_probabilities`` on a random
  (C, z, y, x) float32 volume (default 4 x 96 x 96 x 96): MONAI sliding windows of
  ``--patch`` overlapping by ``--overlap``, Gaussian blending, softmax, back to numpy;
* baseline: the network's plain forward passes (eval, no_grad, same autocast) over the
  same number of windows in the same batches (``--sw-batch``), on random patches already
  on the device: the cost of the windows alone, without cutting, padding, blending,
  softmax or transfers. The windows and their batches are counted by a forward hook
  during ours' warm-up, so they are exactly what MONAI ran.

Throughput is voxels of the volume per second (spatial voxels; for the baseline, the
same voxels over its time). ``ratio`` is ours / plain forward in voxels per second
(1.0: blending is free; 0.8: it costs 25% on top of the windows). Times are the median
of ``--repeats`` after one warm-up each; ours and the baseline alternate within each
repeat so that other jobs on the machine hit both alike. On a GPU every timing is
bracketed by torch.cuda.synchronize.

    .venv/bin/python benchmarks/sliding_window.py                           # unet, segresnet, dynunet
    .venv/bin/python benchmarks/sliding_window.py --size 64 64 64 --repeats 1   # quick check
    .venv/bin/python benchmarks/sliding_window.py --networks unet segresnet dynunet unetr swinunetr
    .venv/bin/python benchmarks/sliding_window.py --device cuda --amp --size 192 192 192

``--device`` defaults to cuda when available, else cpu; ``--amp`` is bfloat16 autocast,
on cuda only (the pipeline's own switch; nothing on a CPU). SwinUNETR cannot take 32^3
(its 32x downsampling would leave one voxel for instance norm), so it gets
``--swin-patch`` (default 32 32 64). The machine may be shared: the load average
(os.getloadavg) is printed before and after.

``--threads`` defaults to 1: on the shared 2-core machine, two torch threads spin-wait
for each other whenever another job takes a core, and single runs then vary 10-fold
(0.1 s to 8 s for the same unet pass, seen at a load average of 3.5-4), which no median
of three repairs; one thread gives times within a few percent. On an idle machine pass
``--threads 2`` (or set OMP_WAIT_POLICY=PASSIVE, which also tames the spinning).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

try:
    from casebook.engine.runtime import autocast
    from casebook.tasks.segmentation.inference import predict_probabilities
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from casebook.engine.runtime import autocast
    from casebook.tasks.segmentation.inference import predict_probabilities

from casebook.tasks.segmentation.networks import build_seg_network

NETWORKS = ("unet", "segresnet", "dynunet", "unetr", "swinunetr")
DEFAULT_NETWORKS = ["unet", "segresnet", "dynunet"]


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def measure(name: str, args, device: torch.device, volume: np.ndarray) -> dict:
    patch = tuple(args.swin_patch if name == "swinunetr" else args.patch)
    torch.manual_seed(0)
    model = build_seg_network(
        {"name": name},
        spatial_dims=3,
        in_channels=volume.shape[0],
        out_channels=args.classes,
        patch_size=patch,
        spacing=(1.0, 1.0, 1.0),
    ).to(device)
    model.eval()
    params = sum(p.numel() for p in model.parameters())

    batches: list[int] = []
    hook = model.register_forward_hook(lambda _m, inputs, _o: batches.append(int(inputs[0].shape[0])))

    def ours():
        predict_probabilities(model, volume, patch, overlap=args.overlap, sw_batch_size=args.sw_batch, amp=args.amp)

    ours()  # warm-up, and count the windows MONAI runs
    hook.remove()
    windows = sum(batches)
    inputs = {b: torch.randn(b, volume.shape[0], *patch, device=device) for b in set(batches)}

    @torch.no_grad()
    def plain():
        with autocast(device, args.amp):
            for b in batches:
                model(inputs[b])

    plain()  # warm-up
    times = {"ours": [], "plain": []}
    for r in range(args.repeats):
        for kind in ("ours", "plain") if r % 2 == 0 else ("plain", "ours"):
            times[kind].append(timed(ours if kind == "ours" else plain, device))
    return {
        "patch": patch,
        "params": params,
        "windows": windows,
        "ours": float(np.median(times["ours"])),
        "plain": float(np.median(times["plain"])),
        "runs": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=DEFAULT_NETWORKS)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--size", type=int, nargs=3, default=[96, 96, 96], metavar=("Z", "Y", "X"))
    parser.add_argument("--patch", type=int, nargs=3, default=[32, 32, 32], metavar=("Z", "Y", "X"))
    parser.add_argument("--swin-patch", type=int, nargs=3, default=[32, 32, 64], metavar=("Z", "Y", "X"))
    parser.add_argument("--classes", type=int, default=4, help="output channels")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--sw-batch", type=int, default=2, help="windows per forward pass (the pipeline's default, 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (cuda only; ignored on cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default); see above")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    amp = "bf16 autocast" if (args.amp and device.type == "cuda") else "fp32"
    volume = np.random.default_rng(0).standard_normal((args.channels, *args.size)).astype(np.float32)
    voxels = int(np.prod(args.size))
    print(f"load average (1/5/15 min) at start: {load()}")
    print(
        f"device {what}, {amp}; volume {args.channels} x {' x '.join(map(str, args.size))}, "
        f"overlap {args.overlap}, Gaussian blending, {args.sw_batch} windows per batch, median of {args.repeats}"
    )
    print(
        f"\n{'network':10s} {'patch':>10s} {'params':>8s} {'windows':>7s} {'ours s':>8s} {'Mvox/s':>7s} "
        f"{'plain s':>8s} {'Mvox/s':>7s} {'ratio':>6s}"
    )
    for name in args.networks:
        m = measure(name, args, device, volume)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the last network's memory, freed on leaving measure
        print(
            f"{name:10s} {'x'.join(map(str, m['patch'])):>10s} {m['params'] / 1e6:7.2f}M {m['windows']:7d} "
            f"{m['ours']:8.3f} {voxels / m['ours'] / 1e6:7.3f} {m['plain']:8.3f} {voxels / m['plain'] / 1e6:7.3f} "
            f"{m['plain'] / m['ours']:6.3f}",
            flush=True,
        )
    print("\nratio = ours / plain forward in voxels/s (1.0: the blending, padding and transfers cost nothing)")
    print(f"load average (1/5/15 min) at end: {load()}")


if __name__ == "__main__":
    main()
