"""Data set fingerprint and plan, in the manner of nnU-Net's (MIC-DKFZ/nnUNet).

Before anything is resampled or normalised we look at the data as they are: the voxel
spacing and size of every case, the intensities inside the foreground, and how often each
voxel label occurs. nnU-Net calls this the *fingerprint* and derives its preprocessing
*plan* from it (target spacing, intensity normalisation) instead of asking the user to
guess. We do the same in a few small functions, so that

* a mask or region of interest on another grid than its image is caught first, from the
  headers alone (:func:`check_geometry`), before it silently shifts every label;
* the preprocessing choices ``spacing: auto`` and ``intensity: auto`` (see
  :func:`casebook.tasks.classification.preprocess.apply_plan`) come from the data (:func:`plan_from_fingerprint`);
* the per-case histograms kept in the fingerprint let the QC figure
  (:func:`casebook.qc.plot_fingerprint`) show a case with another scanner, protocol or
  unit before it skews training.

Spacings and sizes are in SimpleITK's physical order (x, y[, z]) throughout.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm.auto import tqdm

from casebook.boxes import BOXES_FILE, box_problems, read_boxes
from casebook.fileio import read_json, write_json
from casebook.layout import geometry_mismatches, image_header, read_manifest

__all__ = [
    "GeometryError",
    "check_geometry",
    "compute_fingerprint",
    "plan_from_fingerprint",
    "geometry_stage",
    "fingerprint_stage",
]

log = logging.getLogger(__name__)

MAX_REPORTED = 20  # mismatch lines in a GeometryError message
ANISOTROPY_THRESHOLD = 3.0  # nnU-Net's: lowest resolution axis > 3 x the finest one
# Samples of all cases pooled, per channel: bounds memory (8 bytes each, so 80 MB per
# channel) for data sets of thousands of images; nnU-Net likewise divides a fixed total
# budget of foreground samples among the cases.
MAX_POOLED_SAMPLES = 10_000_000


class GeometryError(ValueError):
    """An image and its mask / region of interest do not share one voxel grid."""


# --------------------------------------------------------------------------- geometry


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) + ")"
    return str(value)


def _columns(manifest: pd.DataFrame) -> list[str]:
    """The manifest columns that name a file on the image's grid."""
    return ["mask"] + (["roi"] if "roi" in manifest.columns else [])


def check_geometry(dataset_dir: str | Path) -> dict[str, Any]:
    """Check, from the file headers only, that every mask and region of interest lies on
    its image's grid (same dimension, size, spacing, origin and direction, within 1e-4).

    All rows are checked before anything is raised, so that one run names every bad case
    (a converter bug usually hits many); the :class:`GeometryError` lists up to 20.
    """
    root = Path(dataset_dir)
    manifest = read_manifest(root / "manifest.tsv")
    problems: list[str] = []
    n_checked = 0
    for row in manifest.itertuples(index=False):
        others = [(col, getattr(row, col)) for col in _columns(manifest) if getattr(row, col)]
        if not others:
            continue
        image = image_header(root / row.image)
        for col, rel in others:
            n_checked += 1
            for prop, a, b in geometry_mismatches(image, image_header(root / rel)):
                problems.append(f"{row.image_id}: {col} {rel} {prop} {_fmt(b)} != image {row.image} {prop} {_fmt(a)}")
    n_boxes = 0
    if (root / BOXES_FILE).is_file():  # a detection data set: its boxes lie in their images
        boxes = read_boxes(root / BOXES_FILE)
        n_boxes = len(boxes)
        headers = {row.image_id: image_header(root / row.image) for row in manifest.itertuples(index=False)}
        problems += box_problems(boxes, headers, str(root / BOXES_FILE), first_row=2)
    if problems:
        lines = problems[:MAX_REPORTED]
        if len(problems) > MAX_REPORTED:
            lines.append(f"... and {len(problems) - MAX_REPORTED} more")
        raise GeometryError(
            f"{root}: {len(problems)} geometry mismatch(es) between images and their masks / ROIs / boxes:\n" + "\n".join(lines)
        )
    return {"status": "ok", "n_images": int(len(manifest)), "n_checked": n_checked, **({"n_boxes": n_boxes} if n_boxes else {})}


# ------------------------------------------------------------------------ fingerprint


def _read_label(path: Path, shape: tuple[int, ...], image_id: str) -> np.ndarray:
    """A uint8 label volume in array order, refused if it is not on the image's grid."""
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    if array.shape != shape:
        raise GeometryError(f"{image_id}: {path} has array shape {array.shape}, its image {shape} (run check_geometry)")
    return array


def _sample(flat: np.ndarray, region: np.ndarray | None, k: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``k`` voxels (rows of ``flat``, shape (voxels, channels)) drawn without
    replacement from ``region`` (a flat boolean array; None means every voxel).

    The same voxels are taken in every channel, so channels stay paired. Indices are
    sorted so that reading them walks the volume in memory order.
    """
    index = np.flatnonzero(region) if region is not None else None
    n = flat.shape[0] if index is None else index.size
    pick = np.sort(rng.choice(n, size=k, replace=False)) if n > k else np.arange(n)
    return flat[pick if index is None else index[pick]].astype(np.float64)


def _case(root: Path, row: Any, has_roi_column: bool, k: int, rng: np.random.Generator, counts: np.ndarray | None):
    """One case's geometry, foreground samples (voxels, channels), and label counts
    (added to ``counts``, a length-256 array, when the case has a mask)."""
    image = sitk.ReadImage(str(root / row.image))
    n_channels = image.GetNumberOfComponentsPerPixel()
    array = sitk.GetArrayViewFromImage(image)
    spatial = array.shape[:-1] if n_channels > 1 else array.shape
    flat = array.reshape(-1, n_channels)
    info: dict[str, Any] = {
        "image_id": str(row.image_id),
        "spacing": [float(s) for s in image.GetSpacing()],
        "size": [int(s) for s in image.GetSize()],
        "n_channels": int(n_channels),
    }
    region, source, label_counts = None, "image", None
    if row.mask:
        mask = _read_label(root / row.mask, spatial, row.image_id)
        label_counts = np.bincount(mask.ravel(), minlength=256)
        if label_counts[1:].any():
            region, source = mask.ravel() > 0, "mask"
    roi_rel = row.roi if has_roi_column else ""
    has_roi = False
    if roi_rel:
        roi = _read_label(root / roi_rel, spatial, row.image_id).ravel() > 0
        has_roi = bool(roi.any())
        if region is None and has_roi:
            region, source = roi, "roi"
    info["foreground_from"] = source
    info["has_roi"] = has_roi
    info["n_foreground"] = int(flat.shape[0] if region is None else np.count_nonzero(region))
    samples = _sample(flat, region, k, rng)
    info["n_samples"] = int(samples.shape[0])
    if counts is not None and label_counts is not None:
        counts += label_counts[: counts.size]
    return info, samples, label_counts


def _stats(values: np.ndarray) -> dict[str, float]:
    """nnU-Net's ``foreground_intensity_properties_per_channel`` entries."""
    p005, median, p995 = np.percentile(values, [0.5, 50.0, 99.5])
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "median": float(median),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "percentile_00_5": float(p005),
        "percentile_99_5": float(p995),
    }


def _edges(stats: dict[str, float], bins: int) -> np.ndarray:
    """Common histogram edges from the pooled 0.5 to 99.5 percentile. A constant
    foreground (p0.5 == p99.5) gets a unit-wide range around it, since np.histogram
    needs increasing edges."""
    low, high = stats["percentile_00_5"], stats["percentile_99_5"]
    if not high > low:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1)


def _histogram(values: np.ndarray, edges: np.ndarray) -> list[int]:
    # values beyond the pooled percentiles count in the outermost bins: every sample is
    # counted, and a case whose intensities lie off the common range (a wrong unit, a
    # scaling bug) shows as a spike at the edge instead of vanishing from the QC figure
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return [int(c) for c in counts]


def _class_frequencies(counts: np.ndarray, cases_with: np.ndarray, n_with_mask: int, names: dict[str, str]) -> dict:
    """Per voxel label value (those seen in a mask, and those dataset.json names)."""
    declared = {int(k) for k in names if k.isdigit() and int(k) < counts.size}
    values = sorted(set(np.flatnonzero(counts).tolist()) | declared)
    total = int(counts.sum())
    foreground = int(counts[1:].sum())
    out = {}
    for v in values:
        out[str(v)] = {
            "name": names.get(str(v), f"label {v}"),
            "voxels": int(counts[v]),
            "fraction_of_voxels": float(counts[v] / total) if total else 0.0,
            # background is not part of the foreground: null rather than a made-up number
            "fraction_of_foreground": (float(counts[v] / foreground) if foreground else 0.0) if v else None,
            "fraction_of_cases": float(cases_with[v] / n_with_mask) if n_with_mask else 0.0,
        }
    return out


def compute_fingerprint(
    dataset_dir: str | Path,
    *,
    samples_per_case: int = 10000,
    seed: int = 0,
    bins: int = 50,
    progress: bool = True,
    max_pooled_samples: int = MAX_POOLED_SAMPLES,
) -> dict[str, Any]:
    """The fingerprint of a canonical data set: geometry of every case, foreground
    intensity statistics (pooled per channel, and per case as percentiles and histograms
    over common edges), voxel label frequencies, and summaries (median spacing, ...).

    Foreground is the mask (> 0) where the case has one with any label, else the region
    of interest (> 0) where there is one, else the whole image. Up to ``samples_per_case``
    foreground voxels are drawn per case (fewer if the data set is so large that all
    samples pooled would pass ``max_pooled_samples`` per channel) with
    ``np.random.default_rng([seed, row index])``: the same data and seed give the same
    fingerprint whatever the order the cases are processed in. Only these samples are
    kept in memory, never whole volumes of more than one case.
    """
    root = Path(dataset_dir)
    manifest = read_manifest(root / "manifest.tsv")
    if manifest.empty:
        raise ValueError(f"{root}: the manifest has no rows")
    meta = read_json(root / "dataset.json")
    k = max(1, min(int(samples_per_case), int(max_pooled_samples) // len(manifest)))
    has_roi_column = "roi" in manifest.columns
    any_mask = bool((manifest["mask"] != "").any())
    counts = np.zeros(256, dtype=np.int64) if any_mask else None
    cases_with = np.zeros(256, dtype=np.int64)
    n_with_mask = 0
    cases: list[dict[str, Any]] = []
    samples: list[np.ndarray] = []
    rows = tqdm(manifest.itertuples(index=False), total=len(manifest), desc=f"fingerprint {root.name}", unit="img", disable=not progress)
    for i, row in enumerate(rows):
        info, case_samples, label_counts = _case(root, row, has_roi_column, k, np.random.default_rng([seed, i]), counts)
        if cases and info["n_channels"] != cases[0]["n_channels"]:
            raise ValueError(f"{row.image_id}: {info['n_channels']} channels, {cases[0]['image_id']} has {cases[0]['n_channels']}")
        if label_counts is not None:
            n_with_mask += 1
            cases_with += label_counts > 0
        cases.append(info)
        samples.append(case_samples)
    n_channels = cases[0]["n_channels"]
    channel_names = [str(c) for c in meta.get("channel_names") or range(n_channels)]
    if len(channel_names) != n_channels:
        raise ValueError(f"{root}: dataset.json names {len(channel_names)} channels, the images have {n_channels}")

    pooled = {str(c): _stats(np.concatenate([s[:, c] for s in samples])) for c in range(n_channels)}
    edges = [_edges(pooled[str(c)], bins) for c in range(n_channels)]
    for info, s in zip(cases, samples):
        info["histogram"] = [_histogram(s[:, c], edges[c]) for c in range(n_channels)]
        info["intensity"] = [
            dict(zip(("percentile_00_5", "median", "percentile_99_5"), map(float, np.percentile(s[:, c], [0.5, 50.0, 99.5]))))
            for c in range(n_channels)
        ]
    del samples

    spacings = np.array([c["spacing"] for c in cases], dtype=np.float64)
    sizes = np.array([c["size"] for c in cases], dtype=np.float64)
    median_spacing = np.median(spacings, axis=0)
    names = {str(key): str(value) for key, value in (meta.get("labels") or {}).items()}
    return {
        "n_cases": len(cases),
        "modality": str(meta.get("modality", "")),
        "spatial_dims": int(meta.get("spatial_dims") or spacings.shape[1]),
        "channel_names": channel_names,
        "median_spacing": [float(s) for s in median_spacing],
        "median_size": [float(s) for s in np.median(sizes, axis=0)],
        "spacing_percentile_10": [float(s) for s in np.percentile(spacings, 10, axis=0)],
        "anisotropy": float(median_spacing.max() / median_spacing.min()),
        "foreground_intensity_properties_per_channel": pooled,
        "histogram_edges": [[float(e) for e in ch] for ch in edges],
        "class_frequencies": _class_frequencies(counts, cases_with, n_with_mask, names) if any_mask else {},
        "n_cases_with_mask": n_with_mask,
        "samples_per_case": k,
        "seed": int(seed),
        "bins": int(bins),
        "cases": cases,
    }


# ------------------------------------------------------------------------------- plan


def _target_spacing(fingerprint: dict[str, Any]) -> tuple[list[float], bool]:
    """nnU-Net's full-resolution target spacing: the median spacing; but when the data
    are anisotropic (the coarsest median spacing more than 3 x the finest), the coarsest
    axis takes the 10th percentile of its spacings instead. Resampling every case to a
    median like 5 mm would throw away the through-plane resolution of the finer scans;
    the 10th percentile keeps most of it without interpolating far beyond most cases.

    (nnU-Net also requires the voxel count along that axis to be small; we apply the
    spacing rule alone.) The percentile is never allowed to go below the other axes'
    spacing, so the coarse axis stays the coarse one, as in nnU-Net.
    """
    target = [float(s) for s in fingerprint["median_spacing"]]
    worst = int(np.argmax(target))
    anisotropic = target[worst] > ANISOTROPY_THRESHOLD * min(target)
    if anisotropic:
        others = [s for i, s in enumerate(target) if i != worst]
        target[worst] = max(float(fingerprint["spacing_percentile_10"][worst]), max(others))
    return target, anisotropic


def _median_size_after(fingerprint: dict[str, Any], spacing: Sequence[float]) -> list[float]:
    """Median over cases of each case's size once resampled (size x spacing / target),
    as nnU-Net computes its ``median_image_size_in_voxels``."""
    new = [[round(n * s / t) for n, s, t in zip(case["size"], case["spacing"], spacing)] for case in fingerprint["cases"]]
    return [float(v) for v in np.median(np.array(new, dtype=np.float64), axis=0)]


def _intensity_plan(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """nnU-Net's normalisation choice. CT intensities are Hounsfield units, comparable
    across scans: clip every image at the foreground 0.5 / 99.5 percentiles of the whole
    data set, then subtract one global foreground mean and divide by one global sd, so
    a value keeps its meaning across images (one entry per channel). Other modalities
    (MRI, photographs) have arbitrary units per scan: z-score each image on its own,
    inside the region of interest (the brain) when the data set has one, so background
    air does not dominate the statistics."""
    if fingerprint["modality"].lower() == "ct":
        props = fingerprint["foreground_intensity_properties_per_channel"]
        channels = [
            {
                "channel": name,
                "clip": [props[str(c)]["percentile_00_5"], props[str(c)]["percentile_99_5"]],
                "mean": props[str(c)]["mean"],
                "std": props[str(c)]["std"],
            }
            for c, name in enumerate(fingerprint["channel_names"])
        ]
        return {"scheme": "ct", "channels": channels}
    use_roi = any(case["foreground_from"] == "roi" or case.get("has_roi", False) for case in fingerprint["cases"])
    return {"scheme": "zscore", "use_roi": bool(use_roi)}


def plan_from_fingerprint(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing plan derived from a fingerprint (see :func:`_target_spacing`
    and :func:`_intensity_plan` for the reasons behind each choice).

    ``intensity`` is ``{"scheme": "ct", "channels": [{"channel", "clip", "mean", "std"},
    ...]}`` for CT, else ``{"scheme": "zscore", "use_roi": bool}``; this is the form
    :func:`casebook.tasks.classification.preprocess.apply_plan` reads.
    """
    spacing, anisotropic = _target_spacing(fingerprint)
    return {
        "spacing": spacing,
        "anisotropic": anisotropic,
        "median_spacing": [float(s) for s in fingerprint["median_spacing"]],
        "intensity": _intensity_plan(fingerprint),
        "median_size_after_resampling": _median_size_after(fingerprint, spacing),
        "modality": fingerprint["modality"],
        "spatial_dims": fingerprint["spatial_dims"],
        "channel_names": list(fingerprint["channel_names"]),
    }


# ----------------------------------------------------------------------------- stages


def geometry_stage(dataset_dir: str | Path, report_out: str | Path) -> dict[str, Any]:
    """The check_geometry rule: write the report, or stop the run with a GeometryError
    (and no report, so the rule fails and nothing downstream runs)."""
    report = check_geometry(dataset_dir)
    write_json(report_out, report)
    log.info("geometry ok: %d images, %d image/mask pairs checked", report["n_images"], report["n_checked"])
    return report


def fingerprint_stage(dataset_dir: str | Path, fingerprint_out: str | Path, plan_out: str | Path) -> tuple[dict, dict]:
    """The fingerprint rule: write fingerprint.json and the plan derived from it."""
    fingerprint = compute_fingerprint(dataset_dir)
    plan = plan_from_fingerprint(fingerprint)
    write_json(fingerprint_out, fingerprint)
    write_json(plan_out, plan)
    log.info("plan: spacing %s, intensity %s", plan["spacing"], plan["intensity"]["scheme"])
    return fingerprint, plan
