"""Training throughput of the pipeline's loop against a bare PyTorch loop.

Both train the same MONAI network, from the same initial weights, with the same
optimizer and batch size, in the same process, alternating rounds so that machine
load affects both alike. The pipeline loop is casebook.tasks.classification.train.train_epoch over the
memory-mapped preprocessed cache through casebook.tasks.classification.data (DataLoader, no augmentation);
the bare loop slices batches from tensors already in memory.

    .venv/bin/python benchmarks/train_throughput.py [--rounds 5] [--threads 2]

Prints images/second of each and their ratio (target: pipeline / bare >= 0.9).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from casebook.tasks.classification.data import CachedImages, make_loader
from casebook.tasks.classification.networks import build_network
from casebook.tasks.classification.train import train_epoch

CASES = {
    # name: (network spec, image shape (C, *spatial), batch size, images)
    "densenet_small_2d_64": (
        {"name": "densenet", "kwargs": {"init_features": 16, "growth_rate": 16, "block_config": [2, 2, 2]}},
        (1, 64, 64),
        32,
        1024,
    ),
    "resnet18_2d_28": ({"name": "resnet18"}, (1, 28, 28), 128, 2048),
    "densenet_small_3d_32": (
        {"name": "densenet", "kwargs": {"init_features": 16, "growth_rate": 16, "block_config": [2, 2, 2]}},
        (1, 32, 32, 32),
        16,
        256,
    ),
}


def bare_epoch(model, x, y, optimizer, loss_fn, batch_size, generator) -> None:
    model.train()
    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x) - batch_size + 1, batch_size):
        idx = order[start : start + batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x[idx]), y[idx]).backward()
        optimizer.step()


def measure(name: str, spec, shape, batch_size: int, n: int, rounds: int, cache_dir: Path) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    images = rng.standard_normal((n, *shape)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    cache = cache_dir / f"{name}.npy"
    np.save(cache, images)
    memmap = np.load(cache, mmap_mode="r")
    x, y = torch.from_numpy(images), torch.from_numpy(labels)

    torch.manual_seed(0)
    model = build_network(spec, spatial_dims=len(shape) - 1, in_channels=1, num_classes=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn = torch.nn.CrossEntropyLoss()
    loader = make_loader(CachedImages(memmap, labels, np.arange(n)), batch_size=batch_size, shuffle=True, drop_last=True)
    per_epoch = (n // batch_size) * batch_size
    timings = {"pipeline": [], "bare": []}
    for r in range(rounds + 1):  # round 0 warms up both and is not counted
        for kind in ("pipeline", "bare"):
            model.load_state_dict(state)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            start = time.perf_counter()
            if kind == "pipeline":
                train_epoch(model, loader, optimizer, loss_fn, torch.device("cpu"))
            else:
                bare_epoch(model, x, y, optimizer, loss_fn, batch_size, torch.Generator().manual_seed(r))
            if r:
                timings[kind].append(time.perf_counter() - start)
    pipeline = per_epoch / float(np.median(timings["pipeline"]))
    bare = per_epoch / float(np.median(timings["bare"]))
    return pipeline, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'case':24s} {'pipeline img/s':>15s} {'bare img/s':>11s} {'ratio':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            pipeline, bare = measure(name, *CASES[name], args.rounds, Path(tmp))
            print(f"{name:24s} {pipeline:15.1f} {bare:11.1f} {pipeline / bare:6.3f}")


if __name__ == "__main__":
    main()
