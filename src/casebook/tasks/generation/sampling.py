"""The sample rule: a trained model's class-conditional samples with every configured
sampler (scheduler and step count), the same labels and seed for each, and the seconds
each took (``timing.tsv``: images per second, the DDIM-against-DDPM read-out)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from casebook import provenance
from casebook.engine.runtime import select_device
from casebook.fileio import atomic_path
from casebook.tasks.generation.diffusion import sample
from casebook.tasks.generation.train import load_generator


def sampler_key(spec: dict[str, Any]) -> str:
    """How a sampler is named in files and tables: ``ddim_50``."""
    return f"{spec['sampler']}_{int(spec['steps'])}"


def sample_labels(n_classes: int, n_per_class: int) -> np.ndarray:
    return np.repeat(np.arange(n_classes), n_per_class)


def load_samples(path: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every sampler's images of ``samples.npz`` and their class labels."""
    with np.load(path) as data:
        return {k: data[k] for k in data.files if k != "labels"}, data["labels"]


def sample_stage(
    model_path: str, network: dict[str, Any], settings: dict[str, Any], *, seed: int, device: str, outputs: dict[str, str], wildcards=None
) -> pd.DataFrame:
    """Draw ``settings['n_per_class']`` images of each class with each of
    ``settings['samplers']``; write ``samples.npz``, ``timing.tsv`` and the record."""
    started, code = provenance.now(), provenance.code_state()
    model, process = load_generator(model_path, network, select_device(device))
    n_classes = int(model.class_embedding.num_embeddings)
    labels = sample_labels(n_classes, int(settings["n_per_class"]))
    size, images, rows = int(settings["size"]), {}, []
    for spec in settings["samplers"]:
        key = sampler_key(spec)
        images[key], seconds = sample(
            model, labels, sampler=spec["sampler"], steps=int(spec["steps"]), size=size, process=process, seed=seed, desc=key
        )
        rows.append(
            {
                "sampler": spec["sampler"],
                "steps": int(spec["steps"]),
                "key": key,
                "n_images": len(labels),
                "seconds": seconds,
                "images_per_second": len(labels) / seconds,
            }
        )
    with atomic_path(outputs["samples"]) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, labels=labels, **images)
    timing = pd.DataFrame(rows)
    with atomic_path(outputs["timing"]) as tmp:
        timing.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    provenance.write_record(
        outputs["provenance"],
        rule="sample_generation",
        inputs=[model_path],
        outputs=[outputs["samples"], outputs["timing"]],
        params={"network": network, **settings},
        seed=seed,
        started=started,
        code=code,
        device=device,
        wildcards=wildcards,
    )
    return timing
