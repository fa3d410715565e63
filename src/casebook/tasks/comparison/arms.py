"""The comparison_fit rule: one arm (a model of the study) with one seed, trained at
every level of the sweep on that seed's patient subsets, validated on the fold's whole
validation split and scored on the test split. The levels share the job's loaded
images; an interrupted level resumes from its own checkpoint (a finished job that
Snakemake reruns retrains every level, as the engine retrains a complete checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from casebook import provenance
from casebook.engine.checkpoint import resume_key
from casebook.fileio import atomic_path, read_json
from casebook.split import fold_split
from casebook.tasks.comparison.data import Images, load_images
from casebook.tasks.comparison.fit import Arm, fit_level
from casebook.tasks.comparison.networks import build_encoder
from casebook.tasks.comparison.pretrain import held_out_patients, load_init, load_weights_file


def _write_tsv(frame: pd.DataFrame, path: str) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def starting_weights(
    model: str, network: dict[str, Any], inputs: dict[str, str], train: Images, held_out: set[str]
) -> dict[str, torch.Tensor] | None:
    """The encoder weights an arm starts from: a pretraining job's (``network.init``,
    checked against this split and model), a user's file (``network.weights``, checked
    against its sha256), or None (random)."""
    if network.get("init"):
        return load_init(inputs["init"], network, train, model, held_out)[0]
    if network.get("weights"):
        encoder = build_encoder(network, spatial_dims=train.spatial_dims, in_channels=train.x.shape[1], size=train.x.shape[-1])
        return load_weights_file(network["weights"], model, encoder)
    return None


def arm_stage(
    model: str, cfg: dict[str, Any], settings: dict[str, Any], *, seed: int, inputs: dict[str, str], outputs: dict[str, str], wildcards=None
) -> pd.DataFrame:
    """The comparison_fit rule: ``predictions.tsv`` (every test image at every level),
    ``costs.tsv`` (one row per level) and the provenance record."""
    started, code = provenance.now(), provenance.code_state()
    images = load_images(inputs["images"])
    splits = read_json(inputs["splits"])
    fold = int(settings["fold"])
    split = fold_split(splits, fold, inputs["splits"])
    train_all, val, test = images.of_ids(split["train"]), images.of_ids(split["val"]), images.of_ids(splits["test"])
    network = cfg["network"]
    init = starting_weights(model, network, inputs, train_all, held_out_patients(images, splits, split))
    data_keys = {k: provenance.path_digest(inputs[k]) for k in ("images", "splits", "subsets", "init", "weights") if k in inputs}
    settings_key = {k: v for k, v in cfg.items() if k != "device"}  # where it runs is not what it learns
    arm = Arm(
        network=network,
        train=cfg["train"],
        augment=cfg.get("augment") or {},
        init=init,
        probe=bool(network.get("probe")),
        device=cfg.get("device", "auto"),
    )
    subsets = read_json(inputs["subsets"])
    predictions, costs = [], []
    for level, patients in subsets["subsets"].items():
        train = train_all.of_patients(patients)
        out_dir = Path(outputs["predictions"]).parent / f"{subsets['kind']}_{level}"
        key = resume_key({"model": settings_key, "level": level, "seed": seed}, fold, data_keys)
        fitted = fit_level(
            arm, train, val, test, seed=seed, out_dir=out_dir, resume_key=key, desc=f"{model} seed {seed} {subsets['kind']} {level}"
        )
        predictions.append(
            pd.DataFrame({"level": level, "image_id": test.image_id, "patient_id": test.patient, "label": test.label, "prob": fitted.probs})
        )
        costs.append({"level": level, **fitted.cost})
    table = pd.concat(predictions, ignore_index=True)
    _write_tsv(table, outputs["predictions"])
    _write_tsv(pd.DataFrame(costs), outputs["costs"])
    # the encoder's file among the inputs: audit follows it to the pretraining's record
    provenance.write_record(
        outputs["provenance"],
        rule="comparison_fit",
        inputs=[inputs[k] for k in ("images", "splits", "subsets", "init", "weights") if k in inputs],
        outputs=[outputs["predictions"], outputs["costs"]],
        params={"model": cfg, "settings": settings},
        seed=seed,
        started=started,
        code=code,
        wildcards=wildcards,
    )
    return table
