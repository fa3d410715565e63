"""Tune the difficulty of the synthetic generators: train the pipeline's small DenseNet.

Run by hand (not part of the test suite)::

    .venv/bin/python benchmarks/tune_synthetic.py                    # both, seeds 0 1 2
    .venv/bin/python benchmarks/tune_synthetic.py --generator cxr --seeds 0 1 \\
        --set lesion_contrast='(0.2, 0.6)' --set subtle_fraction=0.4

For every seed it generates the pipeline's default dataset, splits it by patient
60/20/20 (GroupShuffleSplit), trains ``DenseNet(init_features=16, growth_rate=16,
block_config=(2, 2, 2))`` with Adam (lr 1e-3, batch 32, cross-entropy) for ``--epochs``
epochs, keeps the epoch with the best validation AUC and prints its test AUC. The
defaults of the generators are meant to land at a test AUC of about 0.90-0.98: hard
enough that models and explanations can be told apart, easy enough to learn on a CPU.

Preprocessing mirrors the pipeline: CXR images are z-scored per image; CT patches are
clipped to [-1000, 400] HU, scaled to [0, 1], resampled to 1 mm and padded/cropped to 32^3.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets import DenseNet
from scipy import ndimage
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupShuffleSplit

try:
    from casebook.synthetic import GENERATORS
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from casebook.synthetic import GENERATORS

#: The pipeline's default dataset sizes.
DEFAULT_ARGS = {
    "cxr": {"n_patients": 160, "images_per_patient": (2, 5), "size": 64},
    "nodule_ct": {
        "n_patients": 160,
        "images_per_patient": (1, 3),
        "shape": (12, 40, 40),
        "spacing": (0.8, 0.8, 2.5),
    },
}


def preprocess_cxr(image: np.ndarray, spacing) -> np.ndarray:
    """Per-image z-score, as in the pipeline."""
    image = image.astype(np.float32)
    return (image - image.mean()) / (image.std() + 1e-6)


def preprocess_ct(image: np.ndarray, spacing, target: int = 32) -> np.ndarray:
    """Clip to the lung window, scale to [0, 1], resample to 1 mm, centre crop/pad to target^3."""
    image = (np.clip(image.astype(np.float32), -1000.0, 400.0) + 1000.0) / 1400.0
    sx, sy, sz = spacing
    image = ndimage.zoom(image, (sz, sy, sx), order=1, mode="nearest")
    out = np.zeros((target,) * 3, dtype=np.float32)  # pad value 0 = air after scaling
    src, dst = [], []
    for n in image.shape:
        if n >= target:
            start = (n - target) // 2
            src.append(slice(start, start + target))
            dst.append(slice(0, target))
        else:
            start = (target - n) // 2
            src.append(slice(0, n))
            dst.append(slice(start, start + n))
    out[tuple(dst)] = image[tuple(src)]
    return out


def patient_split(groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train/val/test, 60/20/20 by patient."""
    idx = np.arange(len(groups))
    outer = GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=seed)
    trainval, test = next(outer.split(idx, groups=groups))
    inner = GroupShuffleSplit(n_splits=1, test_size=0.25, random_state=seed)
    tr, va = next(inner.split(trainval, groups=groups[trainval]))
    return trainval[tr], trainval[va], test


def predict(model: torch.nn.Module, x: torch.Tensor, batch: int = 64) -> np.ndarray:
    """Probability of class 1."""
    model.eval()
    with torch.no_grad():
        probs = [torch.softmax(model(x[i : i + batch]), dim=1)[:, 1] for i in range(0, len(x), batch)]
    return torch.cat(probs).numpy()


def train_and_test(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int, epochs: int) -> dict:
    """Train on a patient split; return test AUC at the best validation epoch and timing."""
    torch.manual_seed(seed)
    tr, va, te = patient_split(groups, seed)
    xt = torch.from_numpy(x[:, None])
    yt = torch.from_numpy(y)
    model = DenseNet(spatial_dims=x.ndim - 1, in_channels=1, out_channels=2, init_features=16, growth_rate=16, block_config=(2, 2, 2))
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    best = {"val_auc": -1.0}
    history = []
    for epoch in range(epochs):
        model.train()
        order = tr[torch.randperm(len(tr), generator=gen).numpy()]
        for i in range(0, len(order), 32):
            b = order[i : i + 32]
            optim.zero_grad()
            loss = loss_fn(model(xt[b]), yt[b])
            loss.backward()
            optim.step()
        val_auc = roc_auc_score(y[va], predict(model, xt[va]))
        test_auc = roc_auc_score(y[te], predict(model, xt[te]))
        history.append((round(val_auc, 3), round(test_auc, 3)))
        if val_auc > best["val_auc"]:
            best = {"val_auc": val_auc, "test_auc": test_auc, "epoch": epoch}
    best["history"] = history
    best["n"] = (len(tr), len(va), len(te))
    return best


def run(name: str, seed: int, epochs: int, overrides: dict) -> dict:
    t0 = time.perf_counter()
    records = list(GENERATORS[name](seed=seed, **DEFAULT_ARGS[name], **overrides))
    t_gen = time.perf_counter() - t0
    prep = preprocess_cxr if name == "cxr" else preprocess_ct
    x = np.stack([prep(r.image, r.spacing) for r in records]).astype(np.float32)
    y = np.array([r.label for r in records], dtype=np.int64)
    groups = np.array([r.patient_id for r in records])
    mean_auc = roc_auc_score(y, [r.image.mean() for r in records])
    result = train_and_test(x, y, groups, seed, epochs)
    result.update(generate_s=t_gen, total_s=time.perf_counter() - t0, mean_intensity_auc=mean_auc)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", choices=["cxr", "nodule_ct", "both"], default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="print val/test AUC of every epoch")
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", help="override a difficulty knob (Python literal)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = ast.literal_eval(value)
    names = ["cxr", "nodule_ct"] if args.generator == "both" else [args.generator]
    for name in names:
        aucs = []
        for seed in args.seeds:
            r = run(name, seed, args.epochs, overrides)
            aucs.append(r["test_auc"])
            print(
                f"{name:9s} seed={seed} test_auc={r['test_auc']:.3f} val_auc={r['val_auc']:.3f} "
                f"best_epoch={r['epoch']} n(train,val,test)={r['n']} "
                f"mean_intensity_auc={r['mean_intensity_auc']:.3f} gen={r['generate_s']:.1f}s total={r['total_s']:.1f}s",
                flush=True,
            )
            if args.verbose:
                print("   (val, test) per epoch:", r["history"], flush=True)
        print(f"{name:9s} test AUC mean={np.mean(aucs):.3f} min={np.min(aucs):.3f} max={np.max(aucs):.3f}", flush=True)


if __name__ == "__main__":
    main()
