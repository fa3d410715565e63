"""The explain rule: attribution maps of a trained classifier on test images, how
faithful they are to the model (deletion / insertion against a random pixel order),
how well they find the lesion where masks exist (pointing game, energy inside the
mask), and whether they depend on the learned weights at all (model-randomization
sanity check). The methods and scores live in :mod:`casebook.analysis.explainability`; this
module picks the images, runs them, and writes the figures and ``explain.json``.

Images:

- *shown*: :func:`pick_examples`, ``images_per_class`` test images of each true class,
  in the attribution grid;
- *scored*: up to ``max_images`` test images drawn at random with the model's seed (a
  plain random sample, so the class mix follows the test set), sorted by image id.
  Every method is timed and scored by deletion / insertion on all of them; the pointing
  game and energy-in-mask use those with a non-empty lesion mask, explaining the
  positive (last) class; the sanity check uses the first ``min(8, max_images)``.

Every map explains the class in predictions.tsv's ``prediction`` column (the class at
the validation-chosen threshold), except the localisation scores, as said above.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from casebook.analysis.explainability import explain, sanity_check
from casebook.analysis.explainability.faithfulness import (
    deletion_insertion,
    energy_in_mask,
    pointing_chance,
    pointing_game,
    random_reference,
)
from casebook.analysis.explainability.figures import plot_attribution_grid, plot_faithfulness, plot_sanity
from casebook.engine.runtime import select_device
from casebook.fileio import json_safe, write_json
from casebook.tasks.classification.cache import load_cache
from casebook.tasks.classification.networks import cam_layer
from casebook.tasks.classification.train import load_model

__all__ = ["DEFAULTS", "energy_in_mask", "explain_stage", "pick_examples", "pick_scored"]

# the schema's defaults (workflow/schemas/casestudy.schema.yaml, `explain:`), for
# callers that pass a config Snakemake has not validated
DEFAULTS: dict[str, Any] = {
    "images_per_class": 4,
    "methods": ["gradcam", "gradcampp", "occlusion", "saliency", "smoothgrad", "integrated_gradients"],
    "max_images": 32,
    "deletion_steps": 20,
    "pointing_tolerance": 0,
    "occlusion": {"mask_size": 8, "overlap": 0.5},
    "smoothgrad": {"samples": 16, "noise_level": 0.15},
    "integrated_gradients": {"steps": 32},
    "sanity": {"randomization": "full", "pass_below": 0.5},
}
MAX_SANITY_IMAGES = 8
ATTRIBUTION_BATCH = 8  # images per attribution call (3D activations bound the memory)
FORWARD_BATCH = 16  # perturbed images per forward pass of the deletion / insertion curves
BASELINE = 0.0  # deletion / insertion / occlusion / IG baseline: the z-scored mean, black when windowed


def settings_with_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """The `explain:` config with the schema's defaults filled in (nested blocks too)."""
    out = {**DEFAULTS, **cfg}
    for key, default in DEFAULTS.items():
        if isinstance(default, dict):
            out[key] = {**default, **(cfg.get(key) or {})}
    return out


def method_settings(name: str, cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """The keyword settings of one method from the `explain:` config."""
    settings = dict(cfg.get(name) or {}) if name in ("occlusion", "smoothgrad", "integrated_gradients") else {}
    if name == "smoothgrad":
        settings["seed"] = seed
    return settings


def pick_examples(predictions: pd.DataFrame, per_class: int, seed: int = 0) -> pd.DataFrame:
    """Up to ``per_class`` test images of each true class, drawn with a seed."""
    parts = [
        group.sample(n=min(per_class, len(group)), random_state=seed).sort_values("image_id")
        for _, group in predictions.groupby("label", sort=True)
    ]
    return pd.concat(parts, ignore_index=True)


def pick_scored(predictions: pd.DataFrame, max_images: int, seed: int = 0) -> pd.DataFrame:
    """Up to ``max_images`` test images drawn with ``seed``, as many of each class as it
    has (up to an equal share), so that a small sample still holds lesion-bearing images
    for the pointing game; sorted by image id."""
    per_class = max(1, int(max_images) // predictions["label"].nunique())
    picked = pick_examples(predictions, per_class, seed)
    rest = predictions[~predictions["image_id"].isin(picked["image_id"])]
    extra = rest.sample(n=min(int(max_images) - len(picked), len(rest)), random_state=seed) if len(picked) < max_images else rest.iloc[:0]
    return pd.concat([picked, extra]).sort_values("image_id").reset_index(drop=True)


class _Cache:
    """The cached arrays, looked up by image id."""

    def __init__(self, images: np.ndarray, masks: np.ndarray | None, index: pd.DataFrame, device: torch.device):
        self.images, self.masks, self.device = images, masks, device
        self.row_of = index.set_index("image_id")["row"]

    def arrays(self, ids) -> np.ndarray:
        return np.stack([np.asarray(self.images[self.row_of[i]], dtype=np.float32) for i in ids])

    def tensor(self, ids) -> torch.Tensor:
        return torch.from_numpy(self.arrays(ids)).to(self.device)

    def mask_arrays(self, ids) -> np.ndarray | None:
        return None if self.masks is None else np.stack([np.asarray(self.masks[self.row_of[i]]) for i in ids])


def timed_maps(model, x: torch.Tensor, targets: list[int], methods: list[str], cfg, layer: str, seed: int):
    """Each method's maps of ``x`` and its seconds per image (wall clock)."""
    maps, seconds = {}, {}
    for name in tqdm(methods, desc="attribution maps (scored images)"):
        start = time.perf_counter()
        maps[name] = explain(name, model, x, targets, method_settings(name, cfg, seed), layer, ATTRIBUTION_BATCH)
        seconds[name] = (time.perf_counter() - start) / max(len(x), 1)
    return maps, seconds


def faithfulness_scores(model, x: torch.Tensor, targets: list[int], maps: dict[str, np.ndarray], steps: int, seed: int):
    """Deletion / insertion curves per method and image, and the random-order reference
    per image (one random ranking per image, shared by all methods)."""
    random = [random_reference(model, xi, t, steps, BASELINE, FORWARD_BATCH, seed) for xi, t in zip(tqdm(x, desc="random order"), targets)]
    curves = {
        name: [deletion_insertion(model, xi, t, m, steps, BASELINE, FORWARD_BATCH, seed) for xi, t, m in zip(x, targets, maps[name])]
        for name in tqdm(maps, desc="deletion / insertion")
    }
    return curves, random


def positive_class_maps(model, x, targets, maps, positive: int, cfg, layer, seed) -> dict[str, np.ndarray]:
    """Maps explaining the positive class: reused where it was the predicted class,
    recomputed for the other images."""
    redo = [i for i, t in enumerate(targets) if t != positive]
    out = {}
    for name, m in maps.items():
        out[name] = m.copy()
        if redo:
            out[name][redo] = explain(
                name, model, x[redo], [positive] * len(redo), method_settings(name, cfg, seed), layer, ATTRIBUTION_BATCH
            )
    return out


def localisation_scores(maps: dict[str, np.ndarray], masks: np.ndarray, tolerance: float) -> dict[str, dict[str, list]]:
    """Per method: pointing-game hits and energy-in-mask shares, one per masked image."""
    scores = {}
    for name, method_maps in maps.items():
        hits = [pointing_game(m, k, tolerance) for m, k in zip(method_maps, masks)]
        shares = [energy_in_mask(m, k)[0] for m, k in zip(method_maps, masks)]
        scores[name] = {"hits": hits, "energy": shares}
    return scores


def sanity_scores(model, x, targets, maps: dict[str, np.ndarray], cfg, layer: str, seed: int) -> dict[str, dict[str, Any]]:
    """The model-randomization check of every method on the first images of ``x``."""
    n = min(MAX_SANITY_IMAGES, int(cfg["max_images"]), len(x))
    sanity = cfg["sanity"]
    return {
        name: sanity_check(
            model,
            x[:n],
            targets[:n],
            name,
            method_settings(name, cfg, seed),
            layer,
            randomization=sanity["randomization"],
            pass_below=float(sanity["pass_below"]),
            seed=seed,
            trained_maps=m[:n],
            batch_size=ATTRIBUTION_BATCH,
        )
        for name, m in tqdm(maps.items(), desc="sanity check")
    }


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def method_summary(seconds, curves, random, local, area_mean, sanity) -> dict[str, Any]:
    """One method's entry of explain.json (the keys the summary table reads)."""
    energy = None if local is None else _mean(local["energy"])
    entry = {
        "seconds_per_image": seconds,
        "deletion_auc": _mean(c["deletion_auc"] for c in curves),
        "insertion_auc": _mean(c["insertion_auc"] for c in curves),
        "deletion_auc_random": _mean(r["deletion_auc"] for r in random),
        "insertion_auc_random": _mean(r["insertion_auc"] for r in random),
        "pointing_game": None if local is None else float(np.mean(local["hits"])),
        "energy_in_mask_mean": energy,
        "mask_area_fraction_mean": area_mean,
        # how many times more of the map's energy the lesion holds than its area predicts
        "enrichment": None if energy is None or not area_mean else energy / area_mean,
        "sanity_spearman_mean": sanity["spearman_mean"],
        "sanity_spearman_sd": sanity["spearman_sd"],
        "sanity_pass": bool(sanity["passed"]),
    }
    if "cascade" in sanity:
        entry["sanity_cascade"] = sanity["cascade"]
    return entry


def per_image_rows(scored, targets, curves, random, masked_ids, local, areas, sanity) -> list[dict[str, Any]]:
    """explain.json's per_image list: one row per scored image, its scores per method."""
    position = {image_id: k for k, image_id in enumerate(masked_ids)}
    rows = []
    for i, row in enumerate(scored.itertuples(index=False)):
        k = position.get(row.image_id)
        methods = {}
        for name in curves:
            entry = {"deletion_auc": curves[name][i]["deletion_auc"], "insertion_auc": curves[name][i]["insertion_auc"]}
            if k is not None:
                entry.update(pointing_hit=bool(local[name]["hits"][k]), energy_in_mask=local[name]["energy"][k])
            if i < len(sanity[name]["spearman"]):
                entry["sanity_spearman"] = sanity[name]["spearman"][i]
            methods[name] = entry
        rows.append(
            {
                "image_id": row.image_id,
                "label": int(row.label),
                "target": int(targets[i]),
                "prob": float(getattr(row, f"prob_{int(targets[i])}")),  # of the explained class
                "mask_area_fraction": None if k is None else areas[k],
                "deletion_auc_random": random[i]["deletion_auc"],
                "insertion_auc_random": random[i]["insertion_auc"],
                "methods": methods,
            }
        )
    return rows


def mean_curves(curves: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean deletion and insertion curves of several images (same steps), and the
    mean of their areas."""
    return {
        "fraction": curves[0]["fraction"],
        **{kind: np.mean([c[kind] for c in curves], axis=0) for kind in ("deletion", "insertion")},
        **{f"{kind}_auc": float(np.mean([c[f"{kind}_auc"] for c in curves])) for kind in ("deletion", "insertion")},
    }


def _sanity_example(masks: np.ndarray | None, n: int) -> int:
    """The sanity figure's image: the first checked one with a lesion, else the first."""
    if masks is not None:
        for i in range(n):
            if masks[i].any():
                return i
    return 0


@dataclass
class _Stage:
    """What every step of the stage shares: the config (defaults filled in), the trained
    model with its CAM layer and seed, the cached arrays and the predictions."""

    cfg: dict[str, Any]
    class_names: list[str]
    model: torch.nn.Module
    layer: str
    seed: int
    cache: _Cache
    predictions: pd.DataFrame
    by_id: pd.DataFrame  # predictions indexed by image id
    methods: list[str]

    @property
    def positive(self) -> int:
        """The positive (last) class, the one the localisation scores explain."""
        return len(self.class_names) - 1

    def targets(self, ids) -> list[int]:
        """The class each map explains: predictions.tsv's ``prediction`` of each image."""
        return self.by_id.loc[ids, "prediction"].astype(int).tolist()


@dataclass
class _Scores:
    """The scored images (see the module docstring) and everything measured on them."""

    images: pd.DataFrame  # their predictions.tsv rows, sorted by image id
    x: torch.Tensor
    targets: list[int]
    maps: dict[str, np.ndarray]
    seconds: dict[str, float]
    curves: dict[str, list[dict[str, Any]]]
    random: list[dict[str, Any]]
    masks: np.ndarray | None
    masked: list[int]  # positions of the images with a non-empty lesion mask
    local: dict[str, dict[str, list]] | None  # None when no image is masked
    areas: list[float]  # lesion area fraction of each masked image
    sanity: dict[str, dict[str, Any]]


def _load_stage(model_cfg: dict[str, Any], cfg: dict[str, Any], inputs: dict[str, str], class_names: list[str]) -> _Stage:
    """Load the rule's inputs: the preprocessed cache, its index, the predictions and the model."""
    cfg = settings_with_defaults(cfg)
    images, masks = load_cache(inputs["images"], inputs["masks"])
    index = pd.read_csv(inputs["index"], sep="\t", dtype={"image_id": str, "patient_id": str})
    predictions = pd.read_csv(inputs["predictions"], sep="\t", dtype={"image_id": str, "patient_id": str})
    device = select_device(model_cfg.get("device", "auto"))
    n_classes = len(class_names)
    model = load_model(
        inputs["model"],
        model_cfg["network"],
        spatial_dims=images.ndim - 2,
        in_channels=images.shape[1],
        num_classes=n_classes,
        device=device,
    )
    return _Stage(
        cfg=cfg,
        class_names=class_names,
        model=model,
        layer=cam_layer(model_cfg["network"]),
        seed=int(model_cfg.get("seed", 0)),
        cache=_Cache(images, masks, index, device),
        predictions=predictions,
        by_id=predictions.set_index("image_id"),
        methods=list(cfg["methods"]),
    )


def _localise(stage: _Stage, x: torch.Tensor, targets: list[int], maps: dict[str, np.ndarray], masks: np.ndarray | None):
    """The positions of the images with a lesion, their localisation scores (of maps that
    explain the positive class) and lesion area fractions; ``[], None, []`` without any."""
    masked = [] if masks is None else [i for i in range(len(x)) if masks[i].any()]
    if not masked:
        return masked, None, []
    masked_maps = positive_class_maps(
        stage.model,
        x[masked],
        [targets[i] for i in masked],
        {n: m[masked] for n, m in maps.items()},
        stage.positive,
        stage.cfg,
        stage.layer,
        stage.seed,
    )
    local = localisation_scores(masked_maps, masks[masked], float(stage.cfg["pointing_tolerance"]))
    areas = [float(masks[i].astype(bool).mean()) for i in masked]
    return masked, local, areas


def _score(stage: _Stage) -> _Scores:
    """Time every method on the scored images and score it: faithfulness, localisation, sanity."""
    cfg, model, layer, seed = stage.cfg, stage.model, stage.layer, stage.seed
    scored = pick_scored(stage.predictions, cfg["max_images"], seed)
    x = stage.cache.tensor(scored["image_id"])
    targets = stage.targets(scored["image_id"])
    maps, seconds = timed_maps(model, x, targets, stage.methods, cfg, layer, seed)
    curves, random = faithfulness_scores(model, x, targets, maps, int(cfg["deletion_steps"]), seed)
    masks = stage.cache.mask_arrays(scored["image_id"])
    masked, local, areas = _localise(stage, x, targets, maps, masks)
    sanity = sanity_scores(model, x, targets, maps, cfg, layer, seed)
    return _Scores(scored, x, targets, maps, seconds, curves, random, masks, masked, local, areas, sanity)


def _summary(stage: _Stage, scores: _Scores) -> dict[str, Any]:
    """explain.json's content, JSON-safe (key order is the file's)."""
    cfg, s = stage.cfg, scores
    masked_ids = [s.images["image_id"][i] for i in s.masked]
    summary = {
        "layer": stage.layer,
        "target_class": stage.class_names[stage.positive],
        "n_images": len(s.images),
        "n_mask_images": len(s.masked),
        "n_sanity_images": len(next(iter(s.sanity.values()))["spearman"]),
        "method_order": stage.methods,
        "deletion_steps": int(cfg["deletion_steps"]),
        "baseline": BASELINE,
        "pointing_tolerance": cfg["pointing_tolerance"],
        # what a map whose maximum falls anywhere at random would score in the pointing game
        "pointing_game_chance": _mean(pointing_chance(s.masks[i], float(cfg["pointing_tolerance"])) for i in s.masked)
        if s.masked
        else None,
        "sanity_randomization": cfg["sanity"]["randomization"],
        "sanity_pass_below": float(cfg["sanity"]["pass_below"]),
        "methods": {
            name: method_summary(
                s.seconds[name], s.curves[name], s.random, None if s.local is None else s.local[name], _mean(s.areas), s.sanity[name]
            )
            for name in stage.methods
        },
        "per_image": per_image_rows(s.images, s.targets, s.curves, s.random, masked_ids, s.local, s.areas, s.sanity),
    }
    return json_safe(summary)


def _grid_figure(stage: _Stage, title: str, path: str) -> None:
    """The attribution grid: every method's maps of the shown images (:func:`pick_examples`),
    each explaining its predicted class."""
    cfg, cache, seed = stage.cfg, stage.cache, stage.seed
    shown = pick_examples(stage.predictions, int(cfg["images_per_class"]), seed)
    shown_targets = stage.targets(shown["image_id"])
    shown_x = cache.tensor(shown["image_id"])
    shown_maps = {
        name: explain(name, stage.model, shown_x, shown_targets, method_settings(name, cfg, seed), stage.layer, ATTRIBUTION_BATCH)
        for name in tqdm(stage.methods, desc="attribution maps (shown images)")
    }
    probs = stage.by_id.loc[shown["image_id"], [f"prob_{k}" for k in range(len(stage.class_names))]].to_numpy()
    table = pd.DataFrame(
        {
            "image_id": shown["image_id"],
            "label": shown["label"],
            "target": shown_targets,
            "prob": probs[np.arange(len(shown)), shown_targets],
        }
    )
    plot_attribution_grid(
        cache.arrays(shown["image_id"]),
        shown_maps,
        cache.mask_arrays(shown["image_id"]),
        table,
        stage.class_names,
        f"{title}: attribution maps of the predicted class",
        path,
    )


def _faithfulness_figure(stage: _Stage, scores: _Scores, title: str, path: str) -> None:
    """Each method's mean deletion and insertion curves against the random order's."""
    reference = mean_curves(scores.random)
    plot_faithfulness(
        {**{name: mean_curves(scores.curves[name]) for name in stage.methods}, "random": reference},
        f"{title}: deletion and insertion, mean of {len(scores.images)} test images",
        path,
    )


def _sanity_figure(stage: _Stage, scores: _Scores, n_sanity: int, title: str, path: str) -> None:
    """Trained against randomized-model maps of one checked image (:func:`_sanity_example`),
    with every method's rank correlation over the ``n_sanity`` checked images."""
    methods, sanity, masks, cfg = stage.methods, scores.sanity, scores.masks, stage.cfg
    example = _sanity_example(masks, n_sanity)
    plot_sanity(
        stage.cache.arrays(scores.images["image_id"][example : example + 1])[0],
        None if masks is None else masks[example],
        {name: sanity[name]["trained_maps"][example] for name in methods},
        {name: sanity[name]["randomized_maps"][example] for name in methods},
        {name: (sanity[name]["spearman_mean"], sanity[name]["spearman_sd"]) for name in methods},
        float(cfg["sanity"]["pass_below"]),
        f"{title}: model-randomization sanity check ({cfg['sanity']['randomization']}), {n_sanity} test images",
        path,
    )


def explain_stage(
    model_cfg: dict[str, Any],
    cfg: dict[str, Any],
    *,
    inputs: dict[str, str],
    outputs: dict[str, str],
    class_names: list[str],
    title: str,
) -> dict[str, Any]:
    """The explain rule (see the module docstring): writes outputs ``grid``,
    ``faithfulness``, ``sanity`` (PNG) and ``summary`` (explain.json); returns the summary."""
    stage = _load_stage(model_cfg, cfg, inputs, class_names)
    scores = _score(stage)
    summary = _summary(stage, scores)
    write_json(outputs["summary"], summary)
    # the figures only read what was scored (and the shown images' own maps), so they
    # come after explain.json, in the order they have always been written
    _grid_figure(stage, title, outputs["grid"])
    _faithfulness_figure(stage, scores, title, outputs["faithfulness"])
    _sanity_figure(stage, scores, summary["n_sanity_images"], title, outputs["sanity"])
    return summary
