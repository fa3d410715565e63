"""Evaluation of a segmentation model on the held-out test cases, in their own geometry.

Each test case is segmented by sliding-window inference on its preprocessed volume;
the prediction is resampled back onto the original image's grid (undoing orientation,
crop and spacing at once), checked against the original header and written as NIfTI.
Dice, IoU, HD95 and normalised surface Dice are computed there, against the ground
truth as it was delivered, per region (BraTS: whole tumour, tumour core, enhancing
tumour), with bootstrap CIs over cases; the volume of one region is read out as a
regression (predicted vs true ml, Bland-Altman), the book's treatment-monitoring task.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm.auto import tqdm

from casebook import provenance
from casebook.analysis.stats import bland_altman
from casebook.engine.runtime import select_device
from casebook.fileio import atomic_path, read_json, write_json
from casebook.layout import geometry_mismatches, read_manifest
from casebook.tasks.segmentation import figures
from casebook.tasks.segmentation.inference import predict_probabilities
from casebook.tasks.segmentation.metrics import CASE_METRICS, case_metrics, default_regions, summarize_cases
from casebook.tasks.segmentation.preprocess import to_original
from casebook.tasks.segmentation.train import load_seg_model

log = logging.getLogger(__name__)


class PredictionGeometryError(RuntimeError):
    """A prediction that does not lie on its input image's grid."""


def regions_of(cfg: dict[str, Any], seg_plan: dict[str, Any]) -> dict[str, list[int]]:
    """The configured regions, or one per foreground label. A region naming a label value
    the case study does not have is refused: it would be empty in truth and prediction
    alike, and score a perfect Dice (BraTS 2017's 4 in MSD Task01, whose labels are 1-3)."""
    if not cfg.get("regions"):
        return default_regions(dict(zip(seg_plan["label_values"], seg_plan["class_names"])))
    regions = {name: [int(v) for v in values] for name, values in cfg["regions"].items()}
    known = set(seg_plan["label_values"]) - {0}
    for name, values in regions.items():
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"evaluate.regions.{name}: label value(s) {unknown} are not foreground labels of this case study {sorted(known)}"
            )
    volume = cfg.get("volume_region")
    if volume and volume not in regions:
        raise ValueError(f"evaluate.volume_region {volume!r} is not one of the regions {sorted(regions)}")
    return regions


def display_channel(cfg: dict[str, Any], seg_plan: dict[str, Any]) -> int:
    """The channel shown in overlays: an index or a channel name (FLAIR shows edema)."""
    channel = cfg.get("display_channel", 0)
    names = [str(n) for n in seg_plan.get("channel_names") or []]
    if isinstance(channel, str):
        if channel not in names:
            raise ValueError(f"evaluate.display_channel {channel!r} is not a channel; channels: {names}")
        return names.index(channel)
    return int(channel)


def write_prediction(prediction: sitk.Image, reference: sitk.Image, path: Path) -> None:
    """Write a prediction as NIfTI, then read its header back and refuse it unless it
    lies exactly on the input image's grid (what a viewer or a challenge checks)."""
    # written in place: the whole predictions folder is the job's output, which Snakemake
    # removes if the job fails (NIfTI needs its extension, so no temporary name)
    sitk.WriteImage(prediction, str(path), True)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    problems = geometry_mismatches(reference, reader)
    if problems:
        raise PredictionGeometryError(f"{path}: the prediction is not on its image's grid: {problems}")


def _mean_dice(table: pd.DataFrame) -> pd.Series:
    return table.groupby("case_id", sort=False)["dice"].mean()


def pick_cases(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(label, case id) of the best, median and worst test case by mean Dice over regions."""
    ranked = _mean_dice(table).sort_values(ascending=False, kind="stable")
    ids = list(ranked.index)
    picks = [("best", ids[0]), ("median", ids[len(ids) // 2]), ("worst", ids[-1])]
    seen, out = set(), []
    for name, case_id in picks:  # fewer than three cases: each shown once
        if case_id not in seen:
            seen.add(case_id)
            out.append((name, case_id))
    return out


def overlay_cases(table: pd.DataFrame, data_dir: Path, manifest: pd.DataFrame, predictions_dir: Path, channel: int) -> list[dict]:
    """Image, truth and prediction of the best, median and worst case, read from disk."""
    dice = _mean_dice(table)
    rows = manifest.set_index("image_id")
    cases = []
    for name, case_id in pick_cases(table):
        image = sitk.ReadImage(str(data_dir / rows.loc[case_id, "image"]))
        array = sitk.GetArrayFromImage(image)
        array = array[..., channel] if image.GetNumberOfComponentsPerPixel() > 1 else array
        cases.append(
            {
                "image": array.astype(np.float32),
                "truth": sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / rows.loc[case_id, "mask"]))),
                "pred": sitk.GetArrayFromImage(sitk.ReadImage(str(predictions_dir / f"{case_id}.nii.gz"))),
                "spacing": list(image.GetSpacing())[::-1],
                "caption": f"{name}: mean Dice {dice[case_id]:.3f} ({case_id})",
            }
        )
    return cases


def segment_test_cases(
    model, patch, seg_plan, cfg, *, case_ids, cases_dir: Path, data_dir: Path, manifest: pd.DataFrame, predictions_dir: Path, regions
) -> pd.DataFrame:
    """Segment, map back, write and score every test case; the per-case table."""
    rows = manifest.set_index("image_id")
    predictions_dir.mkdir(parents=True, exist_ok=True)
    table = []
    for case_id in tqdm(case_ids, desc="segment test cases", unit="case"):
        if not rows.loc[case_id, "mask"]:
            raise ValueError(f"{data_dir / 'manifest.tsv'}: test case {case_id} has no label map to evaluate against")
        probs = predict_probabilities(
            model, np.load(cases_dir / f"{case_id}.npy"), patch,
            overlap=cfg.get("sw_overlap", 0.5), sw_batch_size=cfg.get("sw_batch_size", 2), amp=cfg.get("amp", True),
        )  # fmt: skip
        reference = sitk.ReadImage(str(data_dir / rows.loc[case_id, "image"]))
        prediction = to_original(probs, seg_plan["cases"][case_id], reference, seg_plan["label_values"])
        write_prediction(prediction, reference, predictions_dir / f"{case_id}.nii.gz")
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / rows.loc[case_id, "mask"])))
        spacing = list(reference.GetSpacing())[::-1]  # array order, as the metrics take it
        for row in case_metrics(
            sitk.GetArrayViewFromImage(prediction), truth, spacing, regions, nsd_tolerance_mm=float(cfg.get("nsd_tolerance_mm", 2.0))
        ):
            table.append({"case_id": case_id, "patient_id": rows.loc[case_id, "patient_id"], **row})
    return pd.DataFrame(table)


def evaluate_stage(
    model_cfg: dict[str, Any],
    cfg: dict[str, Any],
    *,
    inputs: dict[str, str],
    outputs: dict[str, str],
    fold: int,
    title: str,
    wildcards: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The evaluate_seg rule: predictions in the original geometry, per-case metrics,
    ``metrics.json`` with CIs and the volume read-out, overlays and the Bland-Altman plot."""
    started, code = provenance.now(), provenance.code_state()
    seg_plan = read_json(inputs["plan"])
    data_dir = Path(inputs["data"])
    manifest = read_manifest(data_dir / "manifest.tsv")
    device = select_device(model_cfg.get("device", "auto"))
    model, patch = load_seg_model(inputs["model"], model_cfg["network"], seg_plan, device=device)
    regions = regions_of(cfg, seg_plan)
    infer = {**model_cfg.get("segmentation", {}), "amp": model_cfg["train"].get("amp", True), **cfg}
    table = segment_test_cases(
        model, patch, seg_plan, infer,
        case_ids=list(read_json(inputs["splits"])["test"]), cases_dir=Path(inputs["cases"]), data_dir=data_dir,
        manifest=manifest, predictions_dir=Path(outputs["predictions"]), regions=regions,
    )  # fmt: skip
    with atomic_path(outputs["per_case"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    metrics = summarize_cases(
        table, n_boot=int(cfg.get("n_bootstrap", 1000)), level=float(cfg.get("ci_level", 0.95)), seed=int(model_cfg.get("seed", 0))
    )
    for region, summary in metrics["regions"].items():
        found = summary["detection"]
        if found["cases_with_region"] and not found["found"]:
            log.warning(
                "%s: %s was not found in any of the %d test cases that hold it (its mean Dice counts the cases without it as 1)",
                title, region, found["cases_with_region"],
            )  # fmt: skip
    volume_region = cfg.get("volume_region") or next(iter(regions))
    part = table[table["region"] == volume_region]
    agreement = bland_altman(part["volume_true_ml"].to_numpy(), part["volume_pred_ml"].to_numpy())
    metrics.update(
        task="segmentation",
        metrics=list(CASE_METRICS),
        region_labels=regions,
        volume={"region": volume_region, **agreement},
        patch_size=patch,
        n_test_cases=int(table["case_id"].nunique()),
    )
    write_json(outputs["metrics"], metrics)
    figures.plot_bland_altman(
        part["volume_true_ml"].to_numpy(),
        part["volume_pred_ml"].to_numpy(),
        agreement,
        title,
        outputs["bland_altman"],
        region=volume_region,
    )
    names = {int(v): n for v, n in zip(seg_plan["label_values"], seg_plan["class_names"])}
    cases = overlay_cases(table, data_dir, manifest, Path(outputs["predictions"]), display_channel(cfg, seg_plan))
    figures.plot_overlays(cases, title, outputs["overlays"], label_names=names)
    provenance.write_record(
        outputs["provenance"],
        rule="evaluate_seg",
        inputs=list(inputs.values()),
        outputs=[outputs["per_case"], outputs["metrics"], outputs["overlays"], outputs["bland_altman"]],
        params={"model": model_cfg, "evaluate": cfg, "fold": fold},
        seed=model_cfg.get("seed"),
        started=started,
        code=code,
        device=str(device),
        wildcards=wildcards,
    )
    log.info("test: mean Dice %.3f over %d cases", metrics["mean_dice"], metrics["n_test_cases"])
    return metrics
