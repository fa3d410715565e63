"""Training throughput of the comparison family's arms, and the cost of its grid with
and without preprocessing shared between arms.

1. Per architecture (ResNet, ViT, Swin at the default study's sizes), images per second
   of the family's training path (casebook.tasks.comparison.fit.fit_level: its epoch loop
   with the engine's checkpoints, validation, no augmentation), read from the fit's own
   timer of the training loop, against a bare PyTorch loop over the same tensors (the
   same network, batch size, optimizer and loss, no validation or checkpoints); the ratio
   is family over bare (1.0: no overhead). Same process, same threads, the bare loop
   timed after one warm-up epoch, as the family leaves its first epoch out of its timer.
2. The learning-curve grid's data preparation: every arm reading the one prepared
   ``images.npz`` (what the family does: prepare once, each fit loads the array) against
   every arm preparing the images itself from the ingested data set (read, resize,
   z-score), for a given number of arms.

    .venv/bin/python benchmarks/comparison_speed.py [--images 512] [--epochs 3] [--arms 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from casebook.layout import write_dataset
from casebook.synthetic.cxr import generate_cxr
from casebook.tasks.comparison.data import Images, load_dataset, load_images, save_images
from casebook.tasks.comparison.fit import Arm, fit_level
from casebook.tasks.comparison.networks import build_classifier

NETWORKS = {
    "resnet": {"name": "resnet"},
    "vit": {"name": "vit", "kwargs": {"patch_size": 8, "hidden_size": 64, "num_layers": 4}},
    "swin": {"name": "swin"},
}


def bare_loop(spec: dict, images: Images, epochs: int, batch_size: int) -> float:
    """Images per second of a plain PyTorch loop over the same tensors."""
    torch.manual_seed(0)
    net = build_classifier(spec, spatial_dims=2, in_channels=1, size=images.x.shape[-1], num_classes=2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = torch.tensor(images.x), torch.tensor(images.label)
    net.train()
    seconds = 0.0
    for epoch in range(epochs + 1):  # epoch 0 warms up
        start = time.perf_counter()
        for idx in torch.randperm(len(x)).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(x[idx]), y[idx]).backward()
            optimizer.step()
        if epoch:
            seconds += time.perf_counter() - start
    return epochs * len(x) / seconds


def family_loop(spec: dict, images: Images, epochs: int, batch_size: int, out: Path) -> float:
    arm = Arm(network=spec, train={"epochs": epochs + 1, "batch_size": batch_size, "lr": 1e-3, "optimizer": "adam"}, device="cpu")
    val = Images(images.x[:64], images.label[:64], images.patient[:64], images.image_id[:64])
    fitted = fit_level(arm, images, val, val, seed=0, out_dir=out, resume_key="bench", desc="bench")
    return fitted.cost["train_images_per_s"]


def make_data(n_images: int, tmp: Path) -> Path:
    records = generate_cxr(n_patients=max(4, n_images // 3), images_per_patient=(3, 3), size=32, seed=0)
    write_dataset(records, tmp / "data", class_names=["normal", "pneumonia"], modality="CXR")
    return tmp / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--arms", type=int, default=4)
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}, {args.images} images, {args.epochs} timed epochs, batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = make_data(args.images, tmp)
        images = load_dataset(data, 32)
        print(f"{'network':8s} {'family img/s':>13s} {'bare img/s':>11s} {'family/bare':>12s}")
        for name, spec in NETWORKS.items():
            bare = bare_loop(spec, images, args.epochs, args.batch_size)
            family = family_loop(spec, images, args.epochs, args.batch_size, tmp / name)
            print(f"{name:8s} {family:13.0f} {bare:11.0f} {family / bare:12.2f}")

        start = time.perf_counter()
        save_images(tmp / "images.npz", load_dataset(data, 32))
        for _ in range(args.arms):
            load_images(tmp / "images.npz")
        shared = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.arms):
            load_dataset(data, 32)
        each = time.perf_counter() - start
        print(f"grid data for {args.arms} arms: prepared once {shared:.2f} s, by each arm {each:.2f} s ({each / shared:.1f}x)")


if __name__ == "__main__":
    main()
