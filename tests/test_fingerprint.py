"""Geometry check, fingerprint, plan and QC figure on tiny canonical data sets (real NIfTI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from casebook.fileio import read_json
from casebook.fingerprint import (
    GeometryError,
    check_geometry,
    compute_fingerprint,
    fingerprint_stage,
    geometry_stage,
    plan_from_fingerprint,
)
from casebook.layout import Record, write_dataset
from casebook.qc import plot_fingerprint

SHAPE = (4, 5, 6)  # array order (z, y, x): size (6, 5, 4)


def _write(tmp_path: Path, records: list[Record], *, modality: str = "MRI", name: str = "data", **kwargs) -> Path:
    out = tmp_path / name
    kwargs.setdefault("class_names", ["neg", "pos"])
    write_dataset(records, out, modality=modality, **kwargs)
    return out


def _good_set(tmp_path: Path, n: int = 3) -> Path:
    records = []
    for i in range(n):
        mask = np.zeros(SHAPE, np.uint8)
        mask[1:3, 1:3, 1:3] = 1
        records.append(
            Record(
                f"c{i}",
                f"p{i}",
                None,
                np.full(SHAPE, 5.0, np.float32),
                spacing=(1.0, 1.0, 2.0),
                mask=mask,
                roi=np.ones(SHAPE, np.uint8),
                origin=(1.0, 2.0, 3.0),
            )
        )
    return _write(tmp_path, records)


def _overwrite(path: Path, *, size=SHAPE, spacing=(1.0, 1.0, 2.0), origin=(1.0, 2.0, 3.0)) -> None:
    image = sitk.GetImageFromArray(np.zeros(size, np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path), True)


# ------------------------------------------------------------------------- geometry


def test_geometry_passes_on_a_good_set(tmp_path):
    report = check_geometry(_good_set(tmp_path))
    assert report == {"status": "ok", "n_images": 3, "n_checked": 6}


def test_geometry_names_every_bad_case(tmp_path):
    root = _good_set(tmp_path)
    _overwrite(root / "masks/c0.nii.gz", spacing=(1.0, 1.0, 2.5))
    _overwrite(root / "masks/c1.nii.gz", origin=(1.0, 2.0, 4.0))
    _overwrite(root / "rois/c2.nii.gz", size=(4, 5, 7))
    with pytest.raises(GeometryError) as err:
        check_geometry(root)
    message = str(err.value)
    assert "3 geometry mismatch" in message
    assert "c0: mask masks/c0.nii.gz spacing (1, 1, 2.5) != image images/c0.nii.gz spacing (1, 1, 2)" in message
    assert "c1: mask masks/c1.nii.gz origin (1, 2, 4)" in message
    assert "c2: roi rois/c2.nii.gz size (7, 5, 4)" in message and "(6, 5, 4)" in message


def test_geometry_tolerates_rounding_and_reports_dimension(tmp_path):
    root = _good_set(tmp_path, n=2)
    _overwrite(root / "masks/c0.nii.gz", spacing=(1.0, 1.0, 2.00005))  # within 1e-4
    image = sitk.GetImageFromArray(np.zeros(SHAPE[1:], np.uint8))
    sitk.WriteImage(image, str(root / "masks/c1.nii.gz"), True)
    with pytest.raises(GeometryError, match=r"c1: mask .* dimension 2 != image .* dimension 3") as err:
        check_geometry(root)
    assert "c0" not in str(err.value)


def test_geometry_stage_writes_report(tmp_path):
    out = tmp_path / "qc/geometry.json"
    geometry_stage(_good_set(tmp_path), out)
    assert read_json(out)["status"] == "ok"


# ---------------------------------------------------------------------- fingerprint


def _exact_set(tmp_path: Path, modality: str = "MRI") -> Path:
    """Two 3D cases with constant foreground (100, 200), 12 foreground voxels each."""
    m0 = np.zeros(SHAPE, np.uint8)
    m0[1:3, 1:3, 1:3] = 1  # 8 voxels of label 1
    m0[3, 0, 0:4] = 2  # 4 voxels of label 2
    m1 = np.zeros(SHAPE, np.uint8)
    m1[0:3, 0:2, 0:2] = 1  # 12 voxels of label 1
    records = []
    for i, (mask, value, z) in enumerate([(m0, 100.0, 2.0), (m1, 200.0, 3.0)]):
        image = np.where(mask > 0, value, -50.0).astype(np.float32)  # -50 must never be sampled
        records.append(Record(f"c{i}", f"p{i}", None, image, spacing=(1.0, 1.0, z), mask=mask))
    labels = {0: "background", 1: "edema", 2: "core", 3: "enhancing"}
    return _write(tmp_path, records, modality=modality, labels=labels)


def test_fingerprint_exact_values(tmp_path):
    fp = compute_fingerprint(_exact_set(tmp_path), bins=10, progress=False)
    assert fp["n_cases"] == 2 and fp["spatial_dims"] == 3 and fp["modality"] == "MRI"
    assert fp["channel_names"] == ["0"]
    assert fp["median_spacing"] == [1.0, 1.0, 2.5]
    assert fp["spacing_percentile_10"] == pytest.approx([1.0, 1.0, 2.1])
    assert fp["median_size"] == [6.0, 5.0, 4.0]
    assert fp["anisotropy"] == 2.5
    props = fp["foreground_intensity_properties_per_channel"]["0"]
    assert props == {
        "mean": 150.0,
        "std": 50.0,
        "median": 150.0,
        "min": 100.0,
        "max": 200.0,
        "percentile_00_5": 100.0,
        "percentile_99_5": 200.0,
    }
    assert fp["histogram_edges"][0] == pytest.approx(np.linspace(100, 200, 11).tolist())
    c0, c1 = fp["cases"]
    assert c0["spacing"] == [1.0, 1.0, 2.0] and c0["size"] == [6, 5, 4] and c0["n_channels"] == 1
    assert c0["foreground_from"] == "mask" and c0["n_foreground"] == 12 and c0["n_samples"] == 12
    assert c0["histogram"] == [[12] + [0] * 9]
    assert c1["histogram"] == [[0] * 9 + [12]]
    assert c0["intensity"] == [{"percentile_00_5": 100.0, "median": 100.0, "percentile_99_5": 100.0}]
    assert fp["n_cases_with_mask"] == 2
    classes = fp["class_frequencies"]
    assert classes["0"] == {
        "name": "background",
        "voxels": 240 - 24,
        "fraction_of_voxels": 216 / 240,
        "fraction_of_foreground": None,
        "fraction_of_cases": 1.0,
    }
    assert classes["1"] == {
        "name": "edema",
        "voxels": 20,
        "fraction_of_voxels": 20 / 240,
        "fraction_of_foreground": 20 / 24,
        "fraction_of_cases": 1.0,
    }
    assert classes["2"]["voxels"] == 4 and classes["2"]["fraction_of_cases"] == 0.5
    assert classes["2"]["fraction_of_foreground"] == 4 / 24
    assert classes["3"] == {
        "name": "enhancing",
        "voxels": 0,
        "fraction_of_voxels": 0.0,
        "fraction_of_foreground": 0.0,
        "fraction_of_cases": 0.0,
    }


def test_fingerprint_is_deterministic_and_samples_are_capped(tmp_path):
    rng = np.random.default_rng(1)
    records = [
        Record(f"c{i}", f"p{i}", i % 2, rng.normal(100, 20, (8, 9, 10)).astype(np.float32), spacing=(1.0, 1.0, 1.0)) for i in range(3)
    ]
    root = _write(tmp_path, records)
    first = compute_fingerprint(root, samples_per_case=50, progress=False)
    second = compute_fingerprint(root, samples_per_case=50, progress=False)
    assert first == second
    assert json.loads(json.dumps(first)) == first  # plain JSON types only
    assert all(c["n_samples"] == 50 and c["n_foreground"] == 720 for c in first["cases"])
    assert all(sum(c["histogram"][0]) == 50 for c in first["cases"])  # tails land in the edge bins
    assert first["class_frequencies"] == {} and first["n_cases_with_mask"] == 0
    capped = compute_fingerprint(root, samples_per_case=50, max_pooled_samples=60, progress=False)
    assert capped["samples_per_case"] == 20 and all(c["n_samples"] == 20 for c in capped["cases"])
    other = compute_fingerprint(root, samples_per_case=50, seed=1, progress=False)
    assert other["foreground_intensity_properties_per_channel"] != first["foreground_intensity_properties_per_channel"]


def test_foreground_falls_back_to_roi_then_image(tmp_path):
    roi = np.zeros(SHAPE, np.uint8)
    roi[:, 1:4, 1:4] = 1
    lesion = np.zeros(SHAPE, np.uint8)
    lesion[2, 2, 2] = 1
    image = np.where(roi > 0, 7.0, 1000.0).astype(np.float32)
    with_lesion = image.copy()
    with_lesion[2, 2, 2] = 9.0
    records = [
        Record("lesion", "p0", 1, with_lesion, spacing=(1.0, 1.0, 1.0), mask=lesion, roi=roi),
        Record("empty_mask", "p1", 0, image, spacing=(1.0, 1.0, 1.0), mask=np.zeros(SHAPE, np.uint8), roi=roi),
        Record("no_mask", "p2", 0, image, spacing=(1.0, 1.0, 1.0), roi=roi),
        Record("nothing", "p3", 0, image, spacing=(1.0, 1.0, 1.0), roi=np.zeros(SHAPE, np.uint8)),
    ]
    fp = compute_fingerprint(_write(tmp_path, records), progress=False)
    by_id = {c["image_id"]: c for c in fp["cases"]}
    assert [by_id[k]["foreground_from"] for k in ("lesion", "empty_mask", "no_mask", "nothing")] == ["mask", "roi", "roi", "image"]
    assert by_id["lesion"]["n_foreground"] == 1 and by_id["lesion"]["intensity"][0]["median"] == 9.0
    assert by_id["empty_mask"]["n_foreground"] == 36 and by_id["empty_mask"]["intensity"][0]["percentile_99_5"] == 7.0
    assert by_id["nothing"]["n_foreground"] == 120
    assert fp["n_cases_with_mask"] == 2
    assert fp["class_frequencies"]["1"]["fraction_of_cases"] == 0.5
    plan = plan_from_fingerprint(fp)
    assert plan["intensity"] == {"scheme": "zscore", "use_roi": True}


def test_multichannel_statistics_per_channel(tmp_path):
    mask = np.zeros(SHAPE, np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    image = np.zeros(SHAPE + (2,), np.float32)
    image[mask > 0] = [10.0, 20.0]
    records = [Record(f"c{i}", f"p{i}", None, image, spacing=(1.0, 1.0, 1.0), mask=mask) for i in range(2)]
    fp = compute_fingerprint(_write(tmp_path, records, channel_names=["t1", "flair"]), bins=5, progress=False)
    assert fp["channel_names"] == ["t1", "flair"]
    assert fp["cases"][0]["n_channels"] == 2
    props = fp["foreground_intensity_properties_per_channel"]
    assert props["0"]["mean"] == 10.0 and props["1"]["mean"] == 20.0 and props["1"]["std"] == 0.0
    # a constant foreground gets a unit-wide histogram range around it
    assert fp["histogram_edges"][1] == pytest.approx(np.linspace(19.5, 20.5, 6).tolist())
    assert fp["cases"][0]["histogram"] == [[0, 0, 8, 0, 0], [0, 0, 8, 0, 0]]
    assert fp["cases"][1]["intensity"][1]["median"] == 20.0
    assert plan_from_fingerprint(fp)["intensity"] == {"scheme": "zscore", "use_roi": False}


def _two_d_set(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    records = [
        Record(f"x{i}", f"p{i}", i % 2, rng.integers(0, 255, (12, 10)).astype(np.uint8), spacing=(0.5, 0.7 + 0.1 * i)) for i in range(5)
    ]
    return _write(tmp_path, records, modality="X-ray", name="xr")


def test_two_d_data(tmp_path):
    fp = compute_fingerprint(_two_d_set(tmp_path), progress=False)
    assert fp["spatial_dims"] == 2 and fp["n_cases"] == 5
    assert fp["median_spacing"] == pytest.approx([0.5, 0.9])
    assert fp["median_size"] == [10.0, 12.0]
    assert {c["foreground_from"] for c in fp["cases"]} == {"image"}
    assert all(c["n_foreground"] == 120 for c in fp["cases"])
    plan = plan_from_fingerprint(fp)
    assert plan["spacing"] == pytest.approx([0.5, 0.9]) and not plan["anisotropic"]
    assert plan["intensity"] == {"scheme": "zscore", "use_roi": False}


# ----------------------------------------------------------------------------- plan


def test_plan_ct_intensity_comes_from_the_fingerprint(tmp_path):
    fp = compute_fingerprint(_exact_set(tmp_path, modality="ct"), progress=False)
    props = fp["foreground_intensity_properties_per_channel"]["0"]
    plan = plan_from_fingerprint(fp)
    assert plan["intensity"] == {
        "scheme": "ct",
        "channels": [
            {"channel": "0", "clip": [props["percentile_00_5"], props["percentile_99_5"]], "mean": props["mean"], "std": props["std"]}
        ],
    }
    assert plan["intensity"]["channels"][0]["clip"] == [100.0, 200.0]


def _spacing_set(tmp_path: Path, spacings: list[tuple[float, float, float]], name: str) -> Path:
    records = [
        Record(f"c{i}", f"p{i}", None, np.ones(SHAPE, np.float32), spacing=s, mask=np.ones(SHAPE, np.uint8)) for i, s in enumerate(spacings)
    ]
    return _write(tmp_path, records, name=name)


def test_plan_anisotropic_takes_10th_percentile(tmp_path):
    root = _spacing_set(tmp_path, [(0.8, 0.8, 2.5), (0.8, 0.8, 3.0), (0.8, 0.8, 5.0)], "aniso")
    plan = plan_from_fingerprint(compute_fingerprint(root, progress=False))
    assert plan["anisotropic"]
    assert plan["spacing"] == pytest.approx([0.8, 0.8, 2.6])  # 2.5 + 0.1 * 2 * 0.5
    # z sizes 4 * 2.5 / 2.6, 4 * 3 / 2.6, 4 * 5 / 2.6 round to 4, 5, 8: median 5
    assert plan["median_size_after_resampling"] == [6.0, 5.0, 5.0]


def test_plan_isotropic_takes_median(tmp_path):
    root = _spacing_set(tmp_path, [(1.0, 1.0, 1.2), (1.0, 1.0, 1.0), (1.0, 1.0, 1.4)], "iso")
    plan = plan_from_fingerprint(compute_fingerprint(root, progress=False))
    assert not plan["anisotropic"]
    assert plan["spacing"] == pytest.approx([1.0, 1.0, 1.2])


def test_fingerprint_stage_writes_both(tmp_path):
    fp_out, plan_out = tmp_path / "qc/fingerprint.json", tmp_path / "qc/plan.json"
    fingerprint_stage(_exact_set(tmp_path), fp_out, plan_out)
    assert read_json(fp_out)["n_cases"] == 2
    assert read_json(plan_out)["spacing"] == [1.0, 1.0, 2.5]


# ------------------------------------------------------------------------------- QC


@pytest.mark.parametrize("make", ["2d", "3d", "multichannel"])
def test_qc_figure_writes_png(tmp_path, make):
    if make == "2d":
        fp = compute_fingerprint(_two_d_set(tmp_path), progress=False)
    elif make == "3d":
        fp = compute_fingerprint(_exact_set(tmp_path), progress=False)
    else:
        image = np.random.default_rng(0).normal(size=SHAPE + (3,)).astype(np.float32)
        records = [Record(f"c{i}", f"p{i}", 0, image + i, spacing=(1.0, 1.0, 3.0)) for i in range(3)]
        fp = compute_fingerprint(_write(tmp_path, records), progress=False)
    out = tmp_path / "figures/fingerprint.png"
    plot_fingerprint(fp, out)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5000
