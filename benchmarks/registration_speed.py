"""Seconds per registered pair: SimpleITK's affine then B-spline against the networks.

Pairs are made as the pipeline makes them (synthetic brain MRI, each central T1 slice
deformed by a known field, 64 x 64 pixels of 3 mm). Measured in one run, on the
device the engine picks (a GPU when there is one) with the threads torch has:

- ``simpleitk``: casebook.tasks.registration.baselines.register_simpleitk, per pair;
- each network (untrained: speed does not depend on the weights), at batch sizes 1 and
  16: ``pipeline``, the family's path (casebook.tasks.registration.train.predict_fields:
  numpy in, field out as numpy), against ``bare``, the MONAI network's forward pass alone
  on tensors already on the device. Latency per pair (ms), pairs per second, and the
  ratio of pipeline to bare time.

    .venv/bin/python benchmarks/registration_speed.py [--pairs 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from casebook.engine.runtime import select_device
from casebook.layout import write_dataset
from casebook.synthetic.brain_mri import ANATOMY_NAMES, generate_brain_mri
from casebook.tasks.registration.baselines import register_simpleitk
from casebook.tasks.registration.networks import NETWORKS, build_registration_network
from casebook.tasks.registration.pairs import simulate_pairs
from casebook.tasks.registration.train import image_batch, predict_fields


def make_pairs(n: int):
    with tempfile.TemporaryDirectory() as tmp:
        patients = max(1, -(-n // 8))
        records = generate_brain_mri(n_patients=patients, seed=0, labels="anatomy", tumour_fraction=0.0)
        write_dataset(records, Path(tmp) / "data", class_names=[ANATOMY_NAMES[v] for v in range(6)], modality="MRI")
        pairs = simulate_pairs(Path(tmp) / "data", {"slices": 8}, seed=0)
    return pairs.subset(np.arange(len(pairs)) < n)


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = select_device("auto")
    pairs = make_pairs(args.pairs)
    rows = []
    seconds = best_of(1, lambda: [register_simpleitk(m, f, tuple(s)) for m, f, s in zip(pairs.moving, pairs.fixed, pairs.spacing)])
    rows.append({"method": "simpleitk", "path": "per pair", "batch": 1, "ms_per_pair": 1000 * seconds / len(pairs)})
    for name in NETWORKS:
        model = build_registration_network({"name": name}, pairs.moving.shape[1:]).to(device).eval()
        for batch in (1, 16):
            moving, fixed = image_batch(pairs.moving).to(device), image_batch(pairs.fixed).to(device)

            @torch.no_grad()
            def bare():
                for i in range(0, len(pairs), batch):
                    model(moving[i : i + batch], fixed[i : i + batch])
                if device.type == "cuda":
                    torch.cuda.synchronize()

            bare()  # warm-up
            pipeline = lambda: predict_fields(model, pairs.moving, pairs.fixed, batch_size=batch)  # noqa: E731
            for path, run in (("bare", bare), ("pipeline", pipeline)):
                rows.append({"method": name, "path": path, "batch": batch, "ms_per_pair": 1000 * best_of(args.repeats, run) / len(pairs)})
    table = pd.DataFrame(rows)
    table["pairs_per_second"] = 1000 / table["ms_per_pair"]
    sitk_ms = table.loc[0, "ms_per_pair"]
    table["simpleitk_over_this"] = sitk_ms / table["ms_per_pair"]
    bare = table[table["path"] == "bare"].set_index(["method", "batch"])["ms_per_pair"]
    table["pipeline_over_bare"] = [
        r.ms_per_pair / bare[(r.method, r.batch)] if r.path == "pipeline" else np.nan for r in table.itertuples()
    ]
    print(f"device {device}, torch threads {torch.get_num_threads()}, {len(pairs)} pairs of {pairs.moving.shape[1:]} pixels")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
