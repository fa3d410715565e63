"""The LUNA16 evaluation protocol, in world millimetres.

A candidate hits a finding when its centre lies within the finding's radius (half its
largest size) of the finding's centre. Of the candidates hitting one nodule only the
best-scored counts, as a true positive; the others are neither true nor false. A
candidate that hits only excluded findings is ignored; any other candidate is a false
positive. The FROC curve (sensitivity against false positives per scan) and its score
come from MONAI (``compute_froc_curve_data``, ``compute_froc_score``); the CPM is the
mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per scan. Intervals
resample patients (a patient's scans together).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from monai.metrics import compute_froc_curve_data, compute_froc_score

from casebook.analysis.stats import group_members, resample_groups
from casebook.boxes import Box

#: the false-positive rates (per scan) the CPM averages the sensitivity over (LUNA16)
FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class ScanResult:
    """One scan's outcome: false positives' scores, each nodule's best hit score (0: missed)
    and diameter (mm)."""

    image_id: str
    patient: str
    fp_scores: np.ndarray
    finding_scores: np.ndarray
    diameters: np.ndarray


def match_scan(image_id: str, patient: str, candidates: Sequence[tuple[float, np.ndarray]], boxes: Sequence[Box]) -> ScanResult:
    """Candidates (score, centre mm) of one scan against its boxes, by the LUNA16 rules."""
    nodules = [b for b in boxes if not b.excluded]
    excluded = [b for b in boxes if b.excluded]
    best = np.zeros(len(nodules))
    fps = []

    def hits(found: list[Box], centre: np.ndarray) -> list[int]:
        return [j for j, b in enumerate(found) if np.linalg.norm(centre - np.asarray(b.centre)) <= b.diameter / 2.0]

    for score, centre in candidates:
        centre = np.asarray(centre, float)
        hit = hits(nodules, centre)
        for j in hit:
            best[j] = max(best[j], float(score))
        if not hit and not hits(excluded, centre):
            fps.append(float(score))
    return ScanResult(image_id, patient, np.array(fps), best, np.array([b.diameter for b in nodules]))


def outcomes(cands: Sequence[tuple], boxes: Sequence[Box]) -> list[str]:
    """Each candidate's outcome: hit (within a nodule's radius), ignored (within only an
    excluded finding's) or false positive."""
    out = []
    for _, centre, _ in cands:
        inside = [b for b in boxes if np.linalg.norm(np.asarray(centre) - np.asarray(b.centre)) <= b.diameter / 2.0]
        out.append("hit" if any(not b.excluded for b in inside) else "ignored" if inside else "false positive")
    return out


def froc_curve(scans: Sequence[ScanResult]) -> tuple[np.ndarray, np.ndarray]:
    """False positives per scan and sensitivity at every score threshold (MONAI), the
    most permissive threshold first."""
    fp = np.concatenate([s.fp_scores for s in scans] + [np.zeros(1)])
    # the 0 appended: MONAI's thresholds skip the lowest score seen, which must be below
    # every real one so that the most permissive operating point is kept
    tp = np.concatenate([s.finding_scores for s in scans])
    n_nodules = len(tp)
    if n_nodules == 0:
        raise ValueError("no findings in the scans scored: the FROC is undefined")
    return compute_froc_curve_data(fp, tp, n_nodules, len(scans))


def sensitivities(scans: Sequence[ScanResult], rates: Sequence[float] = FP_RATES) -> np.ndarray:
    fps, sens = froc_curve(scans)
    return np.interp(rates, fps[::-1], sens[::-1])


def cpm(scans: Sequence[ScanResult]) -> float:
    """The competition performance metric: mean sensitivity at :data:`FP_RATES`."""
    fps, sens = froc_curve(scans)
    return float(compute_froc_score(fps, sens, eval_thresholds=FP_RATES))


def bootstrap_cpm(scans: Sequence[ScanResult], *, n_boot: int, level: float, seed: int) -> dict[str, float | list]:
    """The CPM and the sensitivity at each rate, with percentile intervals over patients
    (draws without any nodule are skipped)."""
    rng = np.random.default_rng(seed)
    members = group_members([s.patient for s in scans])
    draws, curves = [], []
    for _ in range(n_boot):
        picked = [scans[i] for i in resample_groups(members, rng)]
        if sum(len(s.finding_scores) for s in picked) == 0:
            continue
        curves.append(sensitivities(picked))
        draws.append(float(np.mean(curves[-1])))
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail]) if draws else (np.nan, np.nan)
    band = np.percentile(np.array(curves), [tail, 100.0 - tail], axis=0) if curves else np.full((2, len(FP_RATES)), np.nan)
    return {
        "cpm": cpm(scans),
        "ci_low": float(low),
        "ci_high": float(high),
        "sensitivity": [float(v) for v in sensitivities(scans)],
        "sensitivity_ci_low": [float(v) for v in band[0]],
        "sensitivity_ci_high": [float(v) for v in band[1]],
    }


def operating_threshold(scans: Sequence[ScanResult], fps_per_scan: float) -> float:
    """The lowest score threshold with at most ``fps_per_scan`` false positives per scan."""
    fp = np.sort(np.concatenate([s.fp_scores for s in scans]))[::-1]
    allowed = int(np.floor(fps_per_scan * len(scans)))
    # keeping every candidate above the (allowed+1)-th best false positive
    return float(fp[allowed]) + 1e-9 if allowed < len(fp) else 0.0


def sensitivity_by_size(scans: Sequence[ScanResult], bins_mm: Sequence[float], threshold: float) -> list[dict[str, float]]:
    """Per diameter bin [lo, hi): nodules, hits at ``threshold`` and sensitivity."""
    scores = np.concatenate([s.finding_scores for s in scans])
    diameters = np.concatenate([s.diameters for s in scans])
    hit = (scores >= threshold) & (scores > 0)
    rows = []
    for lo, hi in zip(bins_mm[:-1], bins_mm[1:]):
        inside = (diameters >= lo) & (diameters < hi)
        n = int(inside.sum())
        rows.append(
            {
                "from_mm": float(lo),
                "to_mm": float(hi),
                "findings": n,
                "hits": int(hit[inside].sum()),
                "sensitivity": float(hit[inside].mean()) if n else float("nan"),
            }
        )
    return rows
