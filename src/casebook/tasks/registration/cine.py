"""The ejection fraction of a tracked cine (rule cine_ejection_fraction).

Each method's fields warp the end-diastolic (ED) labels of every slice to every frame
(:func:`pairs.cine_pairs`); the left-ventricular blood pool's volume per frame is the
sum over slices of its area times the slice thickness (Simpson's method of discs, as
short-axis cine MRI is read). EDV is the ED frame's, ESV the smallest tracked one, and
EF = (EDV - ESV) / EDV. The reference is the same computation on the generator's own
labels of every frame (what a perfect tracker gives); where the data carry the EF a
generator drew (the whole ventricle's), every method and the reference are also compared
with it. Agreement is shown as Bland and Altman did (mean difference and limits of
agreement, 1.96 SD), and the mean absolute error carries a bootstrap CI over patients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from casebook import provenance
from casebook.analysis.stats import bland_altman, mean_ci
from casebook.fileio import atomic_path, json_safe, read_json, write_json
from casebook.layout import read_manifest
from casebook.tasks.registration import figures
from casebook.tasks.registration.fields import warp
from casebook.tasks.registration.pairs import Pairs, load_pairs

#: Label value of the LV blood pool in the cine generator's maps.
BLOOD_POOL = 1
REFERENCE = "reference labels"


def frame_volumes(pairs: Pairs, labels: np.ndarray, value: int = BLOOD_POOL) -> pd.DataFrame:
    """Blood-pool volume (ml) per patient and frame from one label map per pair (frame
    0, end diastole, from the moving labels)."""
    voxel_ml = pairs.spacing[:, 0] * pairs.spacing[:, 1] * pairs.thickness / 1000.0
    area = (labels == value).reshape(len(pairs), -1).sum(axis=1) * voxel_ml
    ed = (pairs.moving_label == value).reshape(len(pairs), -1).sum(axis=1) * voxel_ml
    rows = pd.DataFrame({"patient_id": pairs.patient, "frame": pairs.frame, "slice": pairs.slice, "ml": area})
    ed_rows = pd.DataFrame({"patient_id": pairs.patient, "frame": 0, "slice": pairs.slice, "ml": ed}).drop_duplicates(
        ["patient_id", "slice"]
    )
    return pd.concat([ed_rows, rows]).groupby(["patient_id", "frame"], as_index=False)["ml"].sum()


def ejection_fractions(volumes: pd.DataFrame) -> pd.DataFrame:
    """EDV (frame 0), ESV (the smallest volume), EF (%) and the ES frame per patient."""
    rows = []
    for patient, cine in volumes.groupby("patient_id"):
        edv = float(cine.loc[cine["frame"] == 0, "ml"].iloc[0])
        es = cine.loc[cine["ml"].idxmin()]
        rows.append(
            {
                "patient_id": patient,
                "edv_ml": edv,
                "esv_ml": float(es["ml"]),
                "es_frame": int(es["frame"]),
                "ef_percent": 100.0 * (edv - float(es["ml"])) / edv,
            }
        )
    return pd.DataFrame(rows)


def agreement(ef: np.ndarray, reference: np.ndarray, patients: np.ndarray, *, n_boot: int, level: float, seed: int) -> dict[str, Any]:
    """Bland-Altman statistics of EF against the reference (points; no limits for one
    patient), and the mean absolute error with its bootstrap CI over patients."""
    stats = bland_altman(np.asarray(reference, dtype=float), np.asarray(ef, dtype=float))
    return {
        "bias": stats["bias"],
        "limits_of_agreement": [stats["loa_low"], stats["loa_high"]],
        "mae": mean_ci(np.abs(np.asarray(ef) - np.asarray(reference)), patients, n_boot, level, seed),
    }


def drawn_ef(data_dir: str | Path) -> pd.Series | None:
    """The EF (%) a generator drew per patient (the manifest's ``ef_percent`` column of
    the end-diastolic frames), None when the data have no such column."""
    manifest = read_manifest(Path(data_dir) / "manifest.tsv", check_files=False)
    if "ef_percent" not in manifest.columns or "frame" not in manifest.columns:
        return None
    ed = manifest[manifest["frame"].astype(str) == "0"]
    return pd.to_numeric(ed.set_index("patient_id")["ef_percent"], errors="coerce").dropna()


def ejection_fraction_stage(
    inputs: dict[str, str], outputs: dict[str, str], settings: dict[str, Any], title: str, seed: int, wildcards=None
) -> dict[str, Any]:
    """The rule: every method's EF on the test cines against the reference labels', and
    against the EF the generator drew where the data have it (the whole ventricle's,
    where the reference covers only the slices registered)."""
    started, code = provenance.now(), provenance.code_state()
    test = load_pairs(inputs["pairs"], read_json(inputs["splits"])["test"])
    drawn = drawn_ef(inputs["data"])
    with np.load(inputs["fields"]) as data:
        fields = {name: data[name] for name in data.files}
    reference = ejection_fractions(frame_volumes(test, test.fixed_label)).set_index("patient_id")
    tables, tracked = [], {}
    for method, ddf in fields.items():
        warped = warp(torch.from_numpy(test.moving_label[:, None]), torch.from_numpy(ddf), labels=True)[:, 0].numpy()
        tracked[method] = warped
        ef = ejection_fractions(frame_volumes(test, warped)).set_index("patient_id")
        tables.append(ef.assign(method=method, reference_ef_percent=reference["ef_percent"]).reset_index())
    table = pd.concat(tables + [reference.assign(method=REFERENCE, reference_ef_percent=reference["ef_percent"]).reset_index()])
    if drawn is not None:
        table["drawn_ef_percent"] = table["patient_id"].map(drawn)
    with atomic_path(outputs["table"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4g")
    n_boot, level = int(settings.get("n_bootstrap", 1000)), float(settings.get("ci_level", 0.95))
    methods, against_drawn = {}, {}
    for method, rows in table.groupby("method", sort=False):
        ef, patients = rows["ef_percent"].to_numpy(), rows["patient_id"].to_numpy()
        if method != REFERENCE:
            methods[method] = agreement(ef, rows["reference_ef_percent"].to_numpy(), patients, n_boot=n_boot, level=level, seed=seed)
        if drawn is not None:
            against_drawn[method] = agreement(ef, rows["drawn_ef_percent"].to_numpy(), patients, n_boot=n_boot, level=level, seed=seed)
    metrics = {
        "methods": methods,
        "n_patients": int(len(reference)),
        "ci_level": level,
        "reference": "EF of the generator's labels of every frame, same slices",
    }
    if drawn is not None:
        metrics["against_drawn_ef"] = against_drawn
    write_json(outputs["metrics"], json_safe(metrics))
    figures.plot_ef_agreement(table, methods, f"{title}: ejection fraction of {len(reference)} test cines", outputs["agreement"])
    figures.plot_cine(test, tracked, f"{title}: tracked blood pool", outputs["strip"])
    provenance.write_record(
        outputs["provenance"],
        rule="cine_ejection_fraction",
        inputs=[inputs["pairs"], inputs["splits"], inputs["fields"], inputs["data"]],
        outputs=[outputs[k] for k in ("table", "metrics", "agreement", "strip")],
        params={"registration": settings},
        seed=seed,
        started=started,
        code=code,
        wildcards=wildcards,
    )
    return metrics
