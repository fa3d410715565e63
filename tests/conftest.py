"""Shared fixtures for the unit tests of the pipeline stages (tiny data, no network)."""

from __future__ import annotations

import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest


def pytest_configure(config):
    """Under pytest-xdist, split the cores among the workers: two workers of two torch
    threads each on two cores spend their time waiting for each other."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_itemcollected(item):
    """One pytest-xdist group per test module (``--dist loadgroup``), so that a module's
    fixtures (its own Snakemake run) are made once, on one worker. The modules that read
    the session's shared run mark themselves ``xdist_group("tiny_run")``, so that it is
    made once too."""
    if item.get_closest_marker("xdist_group") is None:
        item.add_marker(pytest.mark.xdist_group(item.module.__name__))


def pytest_collection_modifyitems(config, items):
    """The Snakemake runs first (the shared run's readers, the longest group, before the
    others): pytest-xdist hands out the groups in this order, so the unit tests fill the
    workers' gaps at the end instead of one long run keeping a worker busy alone."""

    def order(item):
        group = item.get_closest_marker("xdist_group")
        return 0 if group and group.args[:1] == ("tiny_run",) else 1 if item.get_closest_marker("integration") else 2

    items.sort(key=order)


@pytest.fixture
def make_manifest() -> Callable[..., pd.DataFrame]:
    """A factory for in-memory manifests with several images per patient.

    ``make_manifest(n_patients=40, positive_every=4, seed=0, source_split=None)`` gives
    patients ``p000``... with 1 to 3 images each; every ``positive_every``-th patient is
    label 1 (all of their images). ``source_split`` maps a patient index to a split name.
    """

    def make(
        n_patients: int = 40,
        positive_every: int = 4,
        seed: int = 0,
        source_split: Callable[[int], str] | None = None,
        max_images: int = 3,
    ) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        rows = []
        for p in range(n_patients):
            label = int(p % positive_every == 0)
            for j in range(int(rng.integers(1, max_images + 1))):
                image_id = f"p{p:03d}_{j}"
                rows.append(
                    {
                        "image_id": image_id,
                        "patient_id": f"p{p:03d}",
                        "label": label,
                        "source_split": source_split(p) if source_split else "",
                        "image": f"images/{image_id}.nii.gz",
                        "mask": "",
                        "source_checksum": "",
                    }
                )
        return pd.DataFrame(rows)

    return make


@pytest.fixture
def make_medmnist_npz(tmp_path: Path) -> Callable[..., tuple[Path, dict[str, np.ndarray]]]:
    """A factory writing a small MedMNIST-style npz (train/val/test images and labels).

    ``make_medmnist_npz(shape=(28, 28), counts=(5, 3, 4), n_classes=2, drop=(), compressed=True)``
    returns the path and the arrays that were written. Labels are (N, 1) as MedMNIST's.
    """

    def make(
        shape: tuple[int, ...] = (28, 28),
        counts: tuple[int, int, int] = (5, 3, 4),
        n_classes: int = 2,
        drop: tuple[str, ...] = (),
        compressed: bool = True,
        name: str = "tinymnist.npz",
        seed: int = 0,
    ) -> tuple[Path, dict[str, np.ndarray]]:
        rng = np.random.default_rng(seed)
        arrays: dict[str, np.ndarray] = {}
        for split, n in zip(("train", "val", "test"), counts):
            arrays[f"{split}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
            # every class present in every split, then shuffled
            labels = np.arange(n) % n_classes
            rng.shuffle(labels)
            arrays[f"{split}_labels"] = labels.reshape(n, 1).astype(np.uint8)
        for key in drop:
            arrays.pop(key)
        path = tmp_path / name
        (np.savez_compressed if compressed else np.savez)(path, **arrays)
        return path, arrays

    return make


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server on 127.0.0.1 serving files from a folder."""
    root = tmp_path / "served"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The shared run of the tiny default DAG (tests/shared_run.py), made once per session
    on first use: for tests that only read its outputs, or put back what they change."""
    from shared_run import make_tiny_run

    return make_tiny_run(tmp_path_factory.mktemp("tiny_run") / "wf")


@pytest.fixture(scope="module")
def torch_two_threads():
    """At most two torch threads for a test module (``pytestmark =
    pytest.mark.usefixtures("torch_two_threads")``): the test machine has two cores and
    is shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(before, 2))
    yield
    torch.set_num_threads(before)
