"""Robustness of a segmentation model to acquisition-like perturbations of its test cases.

The classification sweep (``casebook.tasks.classification.robustness``) for 3D segmentation: every
test case's preprocessed image channels are perturbed with
``casebook.analysis.robustness.perturbations.perturb`` at each severity (each case keeps one
seed at every severity, so that only the strength changes along a curve), segmented by
the same sliding-window inference as the evaluate_seg rule (the model's patch, its
``segmentation.sw_overlap`` and ``sw_batch_size``, Gaussian blending; no test-time
augmentation), and scored by Dice per region (the evaluate regions: BraTS whole tumour,
tumour core, enhancing tumour).

Scoring is done in the preprocessed space: the prediction is compared with the
preprocessed label map on the preprocessed grid (reoriented, cropped, resampled),
not written back onto each original image's grid as evaluate_seg does. A sweep is a
sliding window per case per severity; the write-back, the original label's reading and
the surface distances would multiply its cost for a curve whose shape they hardly
change. The clean Dice here is therefore close to, but not the same number as, the
evaluate_seg Dice of the same model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from tqdm.auto import tqdm

from casebook.analysis.plotting import display_slice
from casebook.analysis.robustness import figures
from casebook.analysis.robustness.breakdown import breakdown
from casebook.analysis.robustness.perturbations import IDENTITY, UNITS, image_seeds, merged_severities, perturb
from casebook.analysis.robustness.sweep import test_subset, write_sweep
from casebook.engine.runtime import select_device
from casebook.fileio import read_json
from casebook.tasks.segmentation.evaluate import regions_of
from casebook.tasks.segmentation.inference import predict_probabilities
from casebook.tasks.segmentation.metrics import region_mask
from casebook.tasks.segmentation.train import load_seg_model

log = logging.getLogger(__name__)

METRIC = "dice"

Regions = dict[str, list[int]]
Examples = dict[str, list[tuple[float, np.ndarray]]]


def region_dice(pred: np.ndarray, truth: np.ndarray, regions: Regions) -> dict[str, float]:
    """Dice of each region between two label maps of voxel label values. As in
    ``casebook.tasks.segmentation.metrics``: both empty is 1 (nothing to find, nothing found),
    exactly one empty is 0."""
    out = {}
    for name, values in regions.items():
        p, t = region_mask(pred, values), region_mask(truth, values)
        total = int(p.sum()) + int(t.sum())
        out[name] = 1.0 if total == 0 else 2.0 * float(np.logical_and(p, t).sum()) / total
    return out


def columns(regions: Regions) -> list[str]:
    """The table's columns: perturbation, severity, dice, dice_<region>..., n_images."""
    return ["perturbation", "severity", METRIC, *(f"{METRIC}_{name}" for name in regions), "n_images"]


def sweep_cases(
    model: torch.nn.Module,
    patch: Sequence[int],
    cases: Sequence[tuple[np.ndarray, np.ndarray]],
    severities: dict[str, list[float]],
    regions: Regions,
    label_values: Sequence[int],
    *,
    seed: int = 0,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    amp: bool = True,
) -> tuple[pd.DataFrame, Examples]:
    """One row per (perturbation, severity): the Dice of ``model`` on the perturbed cases.

    ``cases`` are (image (C, z, y, x), label map of class indices (z, y, x)) pairs on
    the preprocessed grid; ``label_values`` maps class indices to the voxel label
    values the ``regions`` name. ``dice`` is the mean over cases of each case's mean
    over regions; ``dice_<region>`` the mean over cases of that region's. Each
    perturbation's first row is the clean cases (its identity severity: 0, or 1 for
    downsampling), segmented once. Case i is perturbed with ``image_seeds(seed, n)[i]``
    at every perturbation and severity.

    Also returns the first case's first channel, at its axial slice with the most
    foreground, as the model saw it at each severity (the examples figure's panels).
    """
    unknown = set(severities) - set(IDENTITY)
    if unknown:
        raise ValueError(f"unknown perturbation(s) {sorted(unknown)}; known: {list(IDENTITY)}")
    if not cases:
        raise ValueError("no test cases to perturb")
    values = np.asarray(label_values)
    steps = [(name, float(s)) for name, levels in severities.items() for s in sorted(set(map(float, levels))) if s != IDENTITY[name]]
    seeds = image_seeds(seed, len(cases))
    scores: dict[tuple[str, float], list[dict[str, float]]] = {("clean", 0.0): []} | {step: [] for step in steps}
    examples: dict[tuple[str, float], np.ndarray] = {}
    bar = tqdm(total=len(cases) * (len(steps) + 1), desc="robustness", unit="inference")
    for i, (image, label) in enumerate(cases):
        truth = values[label]
        view = display_slice(image, (label > 0)[None]) if i == 0 else None
        for key in [("clean", 0.0), *steps]:
            name, severity = key
            bar.set_postfix_str(f"case {i + 1} {name} {severity:g}")
            moved = image if name == "clean" else perturb(image[None], name, severity, seeds[i : i + 1])[0]
            probs = predict_probabilities(model, moved, patch, overlap=overlap, sw_batch_size=sw_batch_size, amp=amp)
            scores[key].append(region_dice(values[probs.argmax(axis=0)], truth, regions))
            if view is not None:
                examples[key] = np.array(moved[view][None])  # (1, y, x): one channel, one slice
            bar.update()
    bar.close()

    def row(name: str, severity: float, key: tuple[str, float]) -> dict[str, Any]:
        per_case = pd.DataFrame(scores[key], columns=list(regions))
        by_region = {f"{METRIC}_{r}": float(per_case[r].mean()) for r in regions}
        return {
            "perturbation": name,
            "severity": severity,
            METRIC: float(per_case.mean(axis=1).mean()),
            **by_region,
            "n_images": len(cases),
        }

    rows = []
    for name in severities:
        rows.append(row(name, IDENTITY[name], ("clean", 0.0)))
        rows += [row(name, s, (n, s)) for n, s in steps if n == name]
    table = pd.DataFrame(rows, columns=columns(regions))
    for name, severity in steps:
        part = table[(table["perturbation"] == name) & (table["severity"] == severity)]
        log.info("%s %g: Dice %.4f (clean %.4f)", name, severity, part[METRIC].iloc[0], table[METRIC].iloc[0])
    shown = {
        name: [(IDENTITY[name], examples[("clean", 0.0)])] + [(s, examples[(n, s)]) for n, s in steps if n == name] for name in severities
    }
    return table, shown


class PreprocessedCases(Sequence):
    """(image, label map) of each preprocessed case, as preprocess_seg stored them, read
    when asked for: a sweep holds one case at a time, not the whole test set."""

    def __init__(self, cases_dir: str | Path, case_ids: Sequence[str]):
        self.cases_dir, self.case_ids = Path(cases_dir), list(case_ids)
        missing = [c for c in self.case_ids if not (self.cases_dir / f"{c}_label.npy").exists()]
        if missing:
            raise ValueError(f"{self.cases_dir}: test case(s) {missing} have no label map to score against")

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        case_id = self.case_ids[i]
        return np.load(self.cases_dir / f"{case_id}.npy"), np.load(self.cases_dir / f"{case_id}_label.npy")


def robustness_seg_stage(
    model_cfg: dict[str, Any],
    cfg: dict[str, Any],
    *,
    inputs: dict[str, str],
    outputs: dict[str, str],
    title: str,
    wildcards: dict[str, str] | None = None,
    regions: Regions | None = None,
) -> dict[str, Any]:
    """The robustness rule of a segmentation case study: sweep the (capped) test cases, write the table
    (``outputs["table"]``), the summary (``summary``), the curves (``curves``) and the
    perturbation examples (``examples``). Returns the summary.

    ``inputs``: ``model``, ``cases`` (preprocessed folder), ``plan`` (seg_plan.json),
    ``splits``. ``cfg`` is the case study's ``robustness`` block: ``margin``,
    ``max_images`` (test cases), ``perturbations``; its ``metric`` is for classifiers,
    a segmentation sweep always scores the mean foreground Dice over ``regions`` (the
    evaluate block's; None: one region per foreground label). Scores are computed in
    the preprocessed space (see the module docstring).
    """
    margin = float(cfg.get("margin", 0.05))
    if cfg.get("metric") not in (None, "auc", METRIC):  # "auc" is the schema's default
        log.info("robustness.metric %r is for classifiers: a segmentation sweep scores the mean Dice", cfg["metric"])
    severities = merged_severities(cfg.get("perturbations"))
    if not severities:
        raise ValueError("robustness.perturbations skips every perturbation (all lists empty): nothing to sweep")
    seed = int(model_cfg.get("seed", 0))
    seg_plan = read_json(inputs["plan"])
    regions = regions_of({"regions": regions}, seg_plan)
    ids = test_subset(list(read_json(inputs["splits"])["test"]), cfg.get("max_images"), seed)
    if not ids:
        raise ValueError(f"{inputs['splits']}: the test set is empty; nothing to perturb")
    cases = PreprocessedCases(inputs["cases"], ids)
    device = select_device(model_cfg.get("device", "auto"))
    # TorchIO's motion and downsampling resample with SimpleITK, which takes every core
    # by default: keep it within the job's threads, as torch is
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, torch.get_num_threads()))
    model, patch = load_seg_model(inputs["model"], model_cfg["network"], seg_plan, device=device)
    scfg = model_cfg.get("segmentation", {})
    table, examples = sweep_cases(
        model, patch, cases, severities, regions, seg_plan["label_values"], seed=seed,
        overlap=float(scfg.get("sw_overlap", 0.5)), sw_batch_size=int(scfg.get("sw_batch_size", 2)),
        amp=bool(model_cfg["train"].get("amp", True)),
    )  # fmt: skip
    clean = table.iloc[0]
    summary = {
        "metric": METRIC,
        "margin": margin,
        "clean": float(clean[METRIC]),
        "clean_by_region": {r: float(clean[f"{METRIC}_{r}"]) for r in regions},
        "breakdown": breakdown(table, METRIC, margin),
        "severities": severities,
        "units": {name: UNITS[name] for name in severities},
        "regions": regions,
        "space": "preprocessed",
        "patch_size": patch,
        "n_images": len(ids),
        "seed": seed,
    }
    write_sweep(table, summary, outputs, wildcards=wildcards, metric=METRIC, margin=margin, title=f"{title}: mean Dice under perturbation")
    channel = (seg_plan.get("channel_names") or ["channel 0"])[0]
    figures.plot_perturbation_examples(
        examples, f"{title}: test case {ids[0]} ({channel}; the axial slice with the most foreground)", outputs["examples"]
    )
    log.info("clean mean Dice %.3f over %d cases; breakdown %s", summary["clean"], len(ids), summary["breakdown"])
    return summary
