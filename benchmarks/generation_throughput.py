"""Diffusion training and sampling throughput: the generation family against bare loops.

Training: casebook.tasks.generation.train.fit (the engine's epoch loop: validation noise
loss, best-epoch weights, a checkpoint and the history every epoch) against a bare
PyTorch loop over the same tensors (the DDPM loss written inline, nothing else), same
network, initial weights, optimizer, batch size and number of steps, alternating rounds.
Sampling: casebook.tasks.generation.diffusion.sample with each scheduler and step count
against the same number of bare forward passes of the network (the scheduler's share).

    .venv/bin/python benchmarks/generation_throughput.py [--rounds 3] [--threads 2] [--device cpu]

Prints images/second and ratios (training target: pipeline / bare >= 0.95).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from casebook.tasks.generation.data import ImageSet
from casebook.tasks.generation.diffusion import make_scheduler, sample
from casebook.tasks.generation.networks import build_diffusion
from casebook.tasks.generation.train import fit

NETWORK = {"name": "ddpm", "kwargs": {"channels": [32, 64, 64]}}


def image_set(n: int, size: int, seed: int) -> ImageSet:
    rng = np.random.default_rng(seed)
    ids = np.array([f"i{k}" for k in range(n)])
    return ImageSet(rng.uniform(-1, 1, (n, size, size)).astype(np.float32), rng.integers(0, 2, n), ids, ids)


def bare_training(train: ImageSet, epochs: int, batch: int, device: str) -> float:
    torch.manual_seed(0)
    model = build_diffusion(NETWORK, 2).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.002)
    scheduler = make_scheduler("ddpm")
    x, y = torch.from_numpy(train.images)[:, None].to(device), torch.from_numpy(train.labels).to(device)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), device=device).split(batch):
            noise = torch.randn_like(x[idx])
            steps = torch.randint(0, 1000, (len(idx),), device=device)
            loss = torch.nn.functional.mse_loss(model(scheduler.add_noise(x[idx], noise, steps), steps, class_labels=y[idx]), noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def pipeline_training(train: ImageSet, val: ImageSet, epochs: int, batch: int, device: str) -> float:
    cfg = {
        "network": NETWORK,
        "train": {"epochs": epochs, "batch_size": batch, "optimizer": "adam", "lr": 0.002},
        "seed": 0,
        "device": device,
    }
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        fit(cfg, train, val, 2, out)
        return time.perf_counter() - start


@torch.no_grad()
def bare_forwards(model, n: int, steps: int, size: int, batch: int, device: str) -> float:
    labels = torch.zeros(min(n, batch), dtype=torch.long, device=device)
    image = torch.randn((len(labels), 1, size, size), device=device)
    start = time.perf_counter()
    for _ in range(0, n, batch):
        for t in range(steps):
            model(image, torch.full((len(labels),), t, device=device), class_labels=labels)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=32, help="images per sampler")
    parser.add_argument("--ddpm-steps", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, val = image_set(args.images, args.size, 0), image_set(max(args.batch, args.images // 10), args.size, 1)
    n_images = args.images * args.epochs
    bare, pipe = [], []
    for _ in range(args.rounds):  # alternate, so that load changes affect both alike
        bare.append(n_images / bare_training(train, args.epochs, args.batch, args.device))
        pipe.append(n_images / pipeline_training(train, val, args.epochs, args.batch, args.device))
    b, p = float(np.median(bare)), float(np.median(pipe))
    print(f"training ({args.device}, {args.threads} threads, {args.size} px, batch {args.batch}, {args.epochs} epochs of {args.images})")
    print(f"  bare loop {b:8.1f} img/s   pipeline fit {p:8.1f} img/s   ratio {p / b:.3f} (target >= 0.95)")
    model = build_diffusion(NETWORK, 2).to(args.device).eval()
    labels = np.arange(args.samples) % 2
    print(f"sampling ({args.samples} images, batch {args.batch})")
    for sampler, steps in (("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddim", 100), ("ddpm", args.ddpm_steps)):
        _, seconds = sample(
            model, labels, sampler=sampler, steps=steps, size=args.size, seed=0, batch_size=args.batch, desc=f"{sampler}_{steps}"
        )
        forwards = bare_forwards(model, args.samples, steps, args.size, args.batch, args.device)
        print(
            f"  {sampler.upper()} {steps:5d} steps: {args.samples / seconds:8.2f} img/s, {seconds:7.2f} s; bare forward passes {forwards:7.2f} s; ratio {forwards / seconds:.3f}"
        )


if __name__ == "__main__":
    main()
