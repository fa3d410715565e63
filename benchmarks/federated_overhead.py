"""Overhead of a Flower federation against the same local training without Flower.

Three sites of random 32 px images (a cache and index like the pipeline's), the
classification family's site trainer (casebook.tasks.classification.federated) and a
small MONAI DenseNet. Measured in one run, alternating nothing else on the machine:

- ``flower``: casebook.engine.federated.launch.federate with FedAvg: a server and three
  client processes on 127.0.0.1 (gRPC), ``--rounds`` rounds of ``--epochs`` local epochs;
- ``bare``: in this process, the same three trainers train the same local epochs one
  after the other each round and their weights are averaged with numpy (FedAvg's
  arithmetic, no processes, no gRPC, no serialization).

    .venv/bin/python benchmarks/federated_overhead.py [--rounds 5] [--epochs 1] [--images 256]

Prints wall seconds of each, their ratio, the federation's start-up (process start
and imports, until the first round's weights are on disk), the seconds per round after
that, and the bytes each client uploads per round (the serialized weights). Both use
one thread per trainer; the federation's clients run side by side on their cores, the
bare loop runs them one after the other, so on a machine with as many cores as sites the
ratio is the federation's cost, and on fewer cores it also carries the clients'
competition for them.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from casebook.engine.federated.launch import federate
from casebook.tasks.classification.federated import SiteClassifier, site_classifier

NETWORK = {
    "name": "densenet",
    "kwargs": {"init_features": 16, "growth_rate": 16, "block_config": [2, 2], "norm": ["group", {"num_groups": 4}]},
}
CFG = {"network": NETWORK, "train": {"batch_size": 32, "optimizer": "adam", "lr": 0.002}, "augment": {}, "seed": 0, "device": "cpu"}


def write_cache(folder: Path, images_per_site: int, sites: list[str]) -> tuple[str, str, dict[str, dict[str, list[str]]]]:
    rng = np.random.default_rng(0)
    n = images_per_site * len(sites)
    np.save(folder / "images.npy", rng.standard_normal((n, 1, 32, 32)).astype(np.float32))
    ids = [f"img{i:05d}" for i in range(n)]
    pd.DataFrame({"row": range(n), "image_id": ids, "patient_id": ids, "label": rng.integers(0, 2, n)}).to_csv(
        folder / "index.tsv", sep="\t", index=False
    )
    per_site = {}
    for k, site in enumerate(sites):
        own = ids[k * images_per_site : (k + 1) * images_per_site]
        cut = int(0.8 * len(own))
        per_site[site] = {"train": own[:cut], "val": own[cut:]}
    return str(folder / "images.npy"), str(folder / "index.tsv"), per_site


def site_kwargs(images, index, split, seed):
    return dict(cfg=CFG, images_path=images, index_path=index, train_ids=split["train"], val_ids=split["val"], num_classes=2, seed=seed)


def bare(images, index, sites, rounds: int, epochs: int) -> float:
    torch.set_num_threads(1)
    trainers = [SiteClassifier(**site_kwargs(images, index, split, k)) for k, split in enumerate(sites.values())]
    weights = trainers[0].get_weights()
    start = time.perf_counter()
    for _ in range(rounds):
        updates, sizes = [], []
        for t in trainers:
            t.set_weights(weights)
            sizes.append(t.fit(epochs)["n"])
            updates.append(t.get_weights())
            t.evaluate()
        weights = [sum(n * u[i] for n, u in zip(sizes, updates)) / sum(sizes) for i in range(len(weights))]
    return time.perf_counter() - start


def flower(images, index, sites, rounds: int, epochs: int, work: Path) -> tuple[float, float, float, int]:
    initial = SiteClassifier(**site_kwargs(images, index, next(iter(sites.values())), 0)).get_weights()
    start = time.perf_counter()
    result = federate(
        factory=site_classifier,
        sites={s: site_kwargs(images, index, split, k) for k, (s, split) in enumerate(sites.items())},
        initial=initial,
        strategy={"name": "fedavg"},
        rounds=rounds,
        local_epochs=epochs,
        work_dir=work,
        resume_key="benchmark",
        threads=1,
    )
    total = time.perf_counter() - start
    first = (work / "rounds" / "round_001.npz").stat().st_mtime
    last = (work / "rounds" / f"round_{rounds:03d}.npz").stat().st_mtime
    per_round = (last - first) / max(rounds - 1, 1)
    startup = total - per_round * rounds  # all that is not a round: processes, imports, connecting
    upload = int(result["history"][-1]["bytes_up"] / result["history"][-1]["clients"])
    return total, startup, per_round, upload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--images", type=int, default=256, help="images per site")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        images, index, sites = write_cache(Path(tmp), args.images, ["A", "B", "C"])
        bare_s = bare(images, index, sites, args.rounds, args.epochs)
        total, startup, per_round, upload = flower(images, index, sites, args.rounds, args.epochs, Path(tmp) / "federation")
    print(f"sites 3, images per site {args.images}, rounds {args.rounds}, local epochs {args.epochs}, 1 thread per trainer")
    print(f"bare (no Flower, sites one after another): {bare_s:.1f} s, {bare_s / args.rounds:.2f} s per round")
    print(f"flower (server + 3 client processes, gRPC): {total:.1f} s = start-up {startup:.1f} s + {per_round:.2f} s per round")
    print(f"ratio flower / bare: {total / bare_s:.2f} in all, {per_round / (bare_s / args.rounds):.2f} per round after start-up")
    print(f"upload per client per round: {upload / 1e6:.3f} MB (the same again downloaded)")


if __name__ == "__main__":
    main()
