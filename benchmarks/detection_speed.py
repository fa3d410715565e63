"""Detection throughput: the family's inference path against the bare network.

Volumes are made and prepared as the pipeline makes them (synthetic chest CT, 48 x 48 x
32 voxels of 2 x 2 x 2.5 mm, windowed). For each detector, in one run, on the device
the engine picks (a GPU when there is one) with the threads torch has:

- ``pipeline``: casebook.tasks.detection.networks.candidates, numpy volume in,
  candidates out (forward pass, then the heatmap's peaks and MONAI's NMS, the
  connected components, or RetinaNet's anchor decoding and box selection);
- ``bare``: the network's forward pass alone on a tensor already on the device (the
  MONAI U-Net; RetinaNet's ResNet-FPN and heads);
- ``post``: the post-processing's share of the pipeline, per volume (timed apart from
  the network's forward pass in one more pass).

Volumes per second of each, the ratio of pipeline to bare throughput, and the
post-processing time per volume. A detector trained for ``--epochs`` first (0: the
untrained network, whose heatmap has peaks everywhere: the worst case for the
post-processing, capped by ``max_candidates``); with ``--patch``, volumes are read by
sliding windows of that size.

    .venv/bin/python benchmarks/detection_speed.py [--volumes 16] [--repeats 3] [--epochs 15]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from casebook.boxes import BOXES_FILE, boxes_of, read_boxes
from casebook.engine.runtime import select_device
from casebook.layout import write_dataset
from casebook.synthetic.chest_ct import CLASS_NAMES, generate_chest_ct
from casebook.tasks.detection.networks import KINDS, build_detector, candidates
from casebook.tasks.detection.train import fit, load_detector
from casebook.tasks.detection.volumes import load_volumes, prepare_volumes

SETTINGS = {
    "window": [-1000, 400],
    "pad_to": 8,
    "positive_fraction": 0.7,
    "min_score": 0.05,
    "max_candidates": 30,
    "nms_iou": 0.1,
    "component_threshold": 0.3,
}

#: RetinaNet learns its sparse anchors at a lower rate (as in lung_nodule_detection.yaml)
LR = {"retinanet": 0.002}


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--patch", type=int, nargs=3, default=None, help="sliding-window size (z y x)")
    args = parser.parse_args()
    device = select_device("auto")
    settings = {**SETTINGS, "patch": args.patch}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_dataset(generate_chest_ct(n_patients=args.volumes + 8, seed=0), data, class_names=CLASS_NAMES, modality="CT")
        prepare_volumes(data, settings, Path(tmp) / "volumes")
        ids = load_volumes(Path(tmp) / "volumes").ids
        train, test = load_volumes(Path(tmp) / "volumes", ids[:8]), load_volumes(Path(tmp) / "volumes", ids[8:])
        boxes = boxes_of(read_boxes(data / BOXES_FILE))
        for kind in KINDS:
            network = {"name": kind}
            if args.epochs:
                cfg = {
                    "network": network,
                    "train": {
                        "epochs": args.epochs,
                        "batch_size": 2,
                        "optimizer": "adam",
                        "lr": LR.get(kind, 0.01),
                        "schedule": {"name": "none"},
                    },
                }
                fit({**cfg, "device": str(device)}, train, train, boxes, settings, Path(tmp) / kind)
                model = load_detector(Path(tmp) / kind / "model.pt", network, device)
            else:
                model = build_detector(network, 3).to(device).eval()
            tensors = [torch.from_numpy(np.array(v))[None, None].to(device) for v in test.images]
            # RetinaNet's bare network is its ResNet-FPN with the heads, without MONAI's
            # anchor decoding and box selection
            net = model.network if kind == "retinanet" else model

            def bare():
                with torch.no_grad():
                    for x in tensors:
                        net(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()

            pipeline_s = best_of(args.repeats, lambda: [candidates(model, kind, v, settings) for v in test.images])
            bare_s = best_of(args.repeats, bare)
            seconds: dict[str, float] = {}
            found = [candidates(model, kind, v, settings, seconds) for v in test.images]
            n = len(test)
            rows.append(
                {
                    "detector": kind,
                    "pipeline_vol_per_s": n / pipeline_s,
                    "bare_vol_per_s": n / bare_s,
                    "pipeline_over_bare_throughput": bare_s / pipeline_s,
                    "post_ms_per_vol": 1000 * seconds["post"] / n,
                    "candidates_per_vol": float(np.mean([len(f) for f in found])),
                }
            )
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, {len(test)} volumes of {test.images[0].shape}, trained {args.epochs} epochs"
    )
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
