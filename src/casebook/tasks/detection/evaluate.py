"""Rule evaluate_detection: every model's candidates on the test volumes, scored by the
LUNA16 protocol (:mod:`.froc`) and MONAI's COCO metric.

Per model: the CPM and the sensitivity at each false-positive rate with percentile
bootstrap intervals over patients, the paired CPM difference of every other model from
the first, mAP at one IoU (0.1 in 3D, 0.5 in 2D: MONAI's ``COCOMetric``, excluded
findings ignored), sensitivity by size at ``operating_fps`` false positives per scan,
and the seconds per volume of the network's forward pass and of the post-processing
(peak finding or connected components, and NMS; RetinaNet's anchor decoding and box
selection). The models side by side, with those absent here named (the 6.4b comparison
table): ``comparison.tsv`` and its figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.apps.detection.metrics.coco import COCOMetric
from monai.apps.detection.metrics.matching import matching_batch
from monai.data.box_utils import box_iou

from casebook import provenance
from casebook.analysis.plotting import plot_text_table
from casebook.analysis.stats import group_members, resample_groups
from casebook.boxes import BOXES_FILE, Box, boxes_of, read_boxes
from casebook.engine.runtime import select_device
from casebook.fileio import atomic_path, read_json, write_json
from casebook.tasks.detection import figures
from casebook.tasks.detection.froc import (
    FP_RATES,
    ScanResult,
    bootstrap_cpm,
    cpm,
    match_scan,
    operating_threshold,
    outcomes,
    sensitivity_by_size,
)
from casebook.tasks.detection.networks import candidates
from casebook.tasks.detection.torchvision_standin import provider, torchvision_imports
from casebook.tasks.detection.train import load_detector
from casebook.tasks.detection.volumes import Volumes, load_volumes

CANDIDATE_COLUMNS = [
    "model",
    "image_id",
    "patient_id",
    "score",
    "centre_x",
    "centre_y",
    "centre_z",
    "size_x",
    "size_y",
    "size_z",
    "outcome",
]


def detect(model, kind: str, volumes: Volumes, settings: dict[str, Any]) -> tuple[list[list[tuple]], dict[str, float]]:
    """Every volume's candidates in world mm (score, centre, size) and the mean seconds
    per volume of the forward pass and the post-processing (after one warm-up pass)."""
    candidates(model, kind, volumes.images[0], settings)  # warm-up: first-call allocations
    out, seconds = [], {"forward": 0.0, "post": 0.0}
    for i, image in enumerate(volumes.images):
        cands = candidates(model, kind, image, settings, seconds)
        out.append([(s, volumes.to_world(i, c), volumes.size_to_world(i, z)) for s, c, z in cands])
    return out, {k: v / len(volumes) for k, v in seconds.items()}


def absent_models() -> dict[str, str]:
    """The comparison's models that did not run here, and why."""
    why = "not run: casebook has no Mask R-CNN yet"
    return {"mask_rcnn": why if torchvision_imports() else f"{why} (torchvision, which it needs, does not import here)"}


def comparison_table(per_model: dict[str, dict[str, Any]], map_iou: float, absent: dict[str, str]) -> pd.DataFrame:
    """One row of text per model: the CPM with its interval, the sensitivity at one false
    positive per scan, the AP, the parameters and the milliseconds per volume; then a row
    per absent model, its status saying why."""
    one_fp = FP_RATES.index(1.0)
    rows = [
        {
            "model": name,
            "CPM (CI)": f"{m['cpm']:.3f} ({m['ci_low']:.3f}-{m['ci_high']:.3f})",
            "sensitivity at 1 FP/scan": f"{m['sensitivity'][one_fp]:.3f}",
            f"AP@{map_iou:g}": f"{m['map']:.3f}",
            "parameters": f"{m['parameters']:,}",
            "ms/volume (network + post)": f"{1000 * m['seconds_per_volume']['forward']:.1f} + {1000 * m['seconds_per_volume']['post']:.1f}",
            "status": "ran",
        }
        for name, m in per_model.items()
    ]
    columns = list(rows[0]) if rows else ["model", "status"]
    rows += [{**{c: "-" for c in columns}, "model": name, "status": why} for name, why in absent.items()]
    return pd.DataFrame(rows, columns=columns)


def _corners(centres: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    return np.concatenate([centres - sizes / 2.0, centres + sizes / 2.0], axis=1) if len(centres) else np.zeros((0, 2 * sizes.shape[1]))


def mean_average_precision(cands: list[list[tuple]], boxes: list[list[Box]], iou: float, ndim: int) -> float:
    """MONAI's COCO AP at one IoU over every test volume, excluded findings ignored."""
    metric = COCOMetric(classes=["finding"], iou_list=(iou,), iou_range=(iou, iou, 0.05), max_detection=(100,), verbose=False)
    results = matching_batch(
        iou_fn=box_iou,
        iou_thresholds=metric.iou_thresholds,
        pred_boxes=[
            _corners(np.array([c for _, c, _ in v]).reshape(-1, ndim), np.array([z for _, _, z in v]).reshape(-1, ndim)) for v in cands
        ],
        pred_classes=[np.zeros(len(v), int) for v in cands],
        pred_scores=[np.array([s for s, _, _ in v], float) for v in cands],
        gt_boxes=[
            _corners(np.array([b.centre for b in v]).reshape(-1, ndim), np.array([b.size for b in v]).reshape(-1, ndim)) for v in boxes
        ],
        gt_classes=[np.zeros(len(v), int) for v in boxes],
        gt_ignore=[np.array([b.excluded for b in v], bool) for v in boxes],
        max_detections=100,
    )
    values = metric(results)[0]
    return float(next(v for k, v in values.items() if k.startswith("AP_IoU")))


def paired_cpm_difference(a: list[ScanResult], b: list[ScanResult], *, n_boot: int, level: float, seed: int) -> dict[str, float]:
    """CPM of ``a`` minus CPM of ``b`` on the same scans, with its percentile bootstrap
    interval over patients (both resampled alike)."""
    rng = np.random.default_rng(seed)
    members = group_members([s.patient for s in a])
    draws = []
    for _ in range(n_boot):
        idx = resample_groups(members, rng)
        if sum(len(a[i].finding_scores) for i in idx):
            draws.append(cpm([a[i] for i in idx]) - cpm([b[i] for i in idx]))
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail]) if draws else (np.nan, np.nan)
    return {"difference": cpm(a) - cpm(b), "ci_low": float(low), "ci_high": float(high)}


def candidate_table(name: str, volumes: Volumes, cands: list[list[tuple]], boxes: dict[str, list[Box]]) -> pd.DataFrame:
    rows = []
    for vid, pid, found in zip(volumes.ids, volumes.patients, cands):
        for (score, centre, size), outcome in zip(found, outcomes(found, boxes.get(vid, []))):
            pad = [np.nan] * (3 - len(centre))
            rows.append([name, vid, pid, score, *centre, *pad, *size, *pad, outcome])
    return pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)


def evaluate_stage(
    models: dict[str, dict[str, Any]],
    settings: dict[str, Any],
    *,
    inputs: dict[str, Any],
    outputs: dict[str, str],
    title: str,
    seed: int,
    wildcards=None,
) -> dict[str, Any]:
    """``models`` maps a model name to its config; ``inputs['models']`` lists their
    ``model.pt`` in the same order."""
    started, code = provenance.now(), provenance.code_state()
    test = load_volumes(inputs["volumes"], read_json(inputs["splits"])["test"])
    boxes = boxes_of(read_boxes(Path(inputs["data"]) / BOXES_FILE))
    test_boxes = [boxes.get(v, []) for v in test.ids]
    if not any(not b.excluded for v in test_boxes for b in v):
        raise ValueError(
            f"{inputs['splits']}: the {len(test)} test images hold no finding (boxes of {inputs['data']}): the FROC is undefined; "
            "a larger test fraction or more data gives it some"
        )
    n_boot, level = int(settings["n_bootstrap"]), float(settings["ci_level"])
    iou = float(settings.get("map_iou") or (0.1 if test.ndim == 3 else 0.5))
    scans, found, tables, per_model = {}, {}, [], {}
    for (name, cfg), path in zip(models.items(), inputs["models"]):
        model = load_detector(path, cfg["network"], select_device(cfg.get("device", "auto")))
        cands, seconds = detect(model, cfg["network"]["name"], test, settings)
        found[name] = cands
        scans[name] = [match_scan(v, p, [(s, c) for s, c, _ in cc], b) for v, p, cc, b in zip(test.ids, test.patients, cands, test_boxes)]
        threshold = operating_threshold(scans[name], float(settings["operating_fps"]))
        per_model[name] = {
            **bootstrap_cpm(scans[name], n_boot=n_boot, level=level, seed=seed),
            "map": mean_average_precision(cands, test_boxes, iou, test.ndim),
            "operating_threshold": threshold,
            "sensitivity_by_size": sensitivity_by_size(scans[name], settings["size_bins_mm"], threshold),
            "seconds_per_volume": seconds,
            "candidates_per_volume": float(np.mean([len(c) for c in cands])),
            "parameters": int(sum(p.numel() for p in model.parameters())),
        }
        tables.append(candidate_table(name, test, cands, boxes))
    first = next(iter(models))
    comparisons = {
        name: paired_cpm_difference(scans[name], scans[first], n_boot=n_boot, level=level, seed=seed) for name in models if name != first
    }
    with atomic_path(outputs["candidates"]) as tmp:
        pd.concat(tables).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    n_nodules = sum(not b.excluded for v in test_boxes for b in v)
    absent = absent_models()
    table = comparison_table(per_model, iou, absent)
    with atomic_path(outputs["comparison"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    metrics = {
        "task": "detection",
        "protocol": "LUNA16: a hit lies within the finding's radius; excluded findings are neither hits nor false positives",
        "fp_rates": list(FP_RATES),
        "models": per_model,
        "absent_models": absent,
        "torchvision_helpers": provider(),
        "cpm_difference_from": first,
        "comparisons": comparisons,
        "map_iou": iou,
        "operating_fps": float(settings["operating_fps"]),
        "n_test_volumes": len(test),
        "n_test_patients": len(set(test.patients)),
        "n_test_findings": n_nodules,
        "n_test_excluded": sum(b.excluded for v in test_boxes for b in v),
        "ci_level": level,
        "n_bootstrap": n_boot,
        "ci_method": "percentile bootstrap over patients",
        "threads": torch.get_num_threads(),
    }
    write_json(outputs["metrics"], metrics)
    figures.plot_froc(per_model, f"{title}: {len(test)} test images, {n_nodules} findings", outputs["froc"])
    figures.plot_overlays(test, test_boxes, found[first], f"{title}: {first} on test scans", outputs["overlays"])
    figures.plot_sensitivity_by_size(
        per_model, f"{title}: sensitivity by size at {settings['operating_fps']:g} FP/scan", outputs["by_size"]
    )
    plot_text_table(
        table.astype(str).values.tolist(), list(table.columns), f"{title}: the detectors compared", outputs["comparison_figure"]
    )
    provenance.write_record(
        outputs["provenance"],
        rule="evaluate_detection",
        inputs=[inputs["volumes"], inputs["data"], inputs["splits"], *inputs["models"]],
        outputs=[outputs[k] for k in ("candidates", "metrics", "comparison", "froc", "overlays", "by_size", "comparison_figure")],
        params={"detection": settings, "models": models},
        seed=seed,
        started=started,
        code=code,
        wildcards=wildcards,
    )
    return metrics
