"""Seconds per perturbed image for each robustness perturbation (casebook.analysis.robustness).

For each perturbation, ``casebook.analysis.robustness.perturbations.perturb`` at its highest
default severity on ``--n`` random float32 images of ``--size`` (2 numbers: 2D
(N, 1, H, W); 3 numbers: 3D (N, 1, D, H, W)). Times are the median of ``--repeats``
after one warm-up; the rule's cost is about this times the number of test images times
the number of severities, plus one forward pass of the model per severity.

    .venv/bin/python benchmarks/robustness_sweep.py                       # 64 x 64, like the CXR case study
    .venv/bin/python benchmarks/robustness_sweep.py --size 32 32 32       # like the nodule CT case study

``--threads`` defaults to 1 (torch and SimpleITK, which TorchIO's motion and
downsampling resample with), as the rule runs with one thread unless configured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

try:
    from casebook.analysis.robustness.perturbations import DEFAULT_SEVERITIES, perturb
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from casebook.analysis.robustness.perturbations import DEFAULT_SEVERITIES, perturb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--n", type=int, default=16, help="images per call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if len(args.size) not in (2, 3):
        parser.error("--size takes 2 (2D) or 3 (3D) numbers")

    import SimpleITK as sitk
    import torch

    torch.set_num_threads(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    images = np.random.default_rng(0).normal(size=(args.n, 1, *args.size)).astype(np.float32)
    print(f"images {images.shape}, threads {args.threads}, load average {os.getloadavg()[0]:.2f}")
    print(f"{'perturbation':14s} {'severity':>8s} {'ms/image':>9s}")
    for name, levels in DEFAULT_SEVERITIES.items():
        perturb(images[:1], name, levels[-1], seed=0)  # warm-up
        times = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            perturb(images, name, levels[-1], seed=repeat)
            times.append((time.perf_counter() - start) / args.n)
        print(f"{name:14s} {levels[-1]:8g} {1000 * statistics.median(times):9.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
