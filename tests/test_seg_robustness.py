"""Robustness sweep of a segmentation model (casebook.tasks.segmentation.robustness) on a tiny
synthetic brain MRI data set, on the CPU: a U-Net that segments loses Dice under strong
noise, each perturbation's curve starts at the clean cases, the rule's outputs are all
written and the summary is strict JSON.

The data set and the network are those of test_seg_train (10 subjects of 32 x 32 x 24
voxels, a three-level 8-16-32 U-Net trained for 4 epochs); the sweep is cut to noise,
blur and one motion level. The module runs in about 30 s on two cores.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from seg_cases import preprocessed_brain

import casebook.tasks.segmentation.robustness as seg_robustness
from casebook.analysis.robustness.perturbations import IDENTITY, PERTURBATIONS
from casebook.fileio import write_json
from casebook.tasks.segmentation.robustness import columns, region_dice, robustness_seg_stage
from casebook.tasks.segmentation.train import fit

UNET = {"name": "unet", "kwargs": {"channels": [8, 16, 32], "strides": [2, 2]}}
REGIONS = {"whole_tumour": [1, 2, 4], "tumour_core": [1, 4], "enhancing_tumour": [4]}
# every other perturbation skipped (an empty list), so the sweep stays small
# noise is relative to the sd of the whole cropped volume (background included): this
# U-Net loses 0.05 Dice at 2 sd, 0.4 at 8
SWEPT = {"noise": [1.0, 8.0], "blur": [2.0], "motion": [20.0]}
PERTURBATIONS_CFG = {name: SWEPT.get(name, []) for name in PERTURBATIONS}


pytestmark = pytest.mark.usefixtures("torch_two_threads")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """10 preprocessed synthetic subjects (3 test, 5 train, 2 validation) and a U-Net
    trained on them, as the rules leave them: model.pt, cases, seg_plan.json, splits.json."""
    root = tmp_path_factory.mktemp("seg_robustness")
    brain = preprocessed_brain(root)
    seg_plan, splits = brain["seg_plan"], brain["splits"]
    write_json(root / "splits.json", splits)
    model_cfg = {
        "network": UNET,
        "train": {"epochs": 4, "batch_size": 4, "optimizer": "adamw", "lr": 0.01, "amp": False},
        "segmentation": {"patch_size": "auto", "max_patch_voxels": 6000, "samples_per_volume": 4, "foreground_probability": 0.6},
        "seed": 0,
        "device": "cpu",
    }
    fit(model_cfg, cases_dir=root / "cases", seg_plan=seg_plan, splits=splits, fold=0, out_dir=root / "model")
    inputs = {
        "model": str(root / "model" / "model.pt"),
        "cases": str(root / "cases"),
        "plan": str(root / "seg_plan.json"),
        "splits": str(root / "splits.json"),
    }
    return {"root": root, "model_cfg": model_cfg, "inputs": inputs}


def _outputs(folder) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = {"table": "robustness.tsv", "summary": "robustness.json", "curves": "robustness.png", "examples": "robustness_examples.png"}
    return {key: str(folder / name) for key, name in names.items()}


def _strict_json(path) -> dict:
    def refuse(constant):
        raise ValueError(f"{path}: non-standard JSON constant {constant}")

    with open(path) as fh:
        return json.loads(fh.read(), parse_constant=refuse)


@pytest.fixture(scope="module")
def swept(run) -> dict:
    outputs = _outputs(run["root"] / "robustness")
    cfg = {"metric": "auc", "margin": 0.05, "max_images": None, "perturbations": PERTURBATIONS_CFG}
    summary = robustness_seg_stage(
        run["model_cfg"],
        cfg,
        inputs=run["inputs"],
        outputs=outputs,
        title="tiny brain",
        wildcards={"cs": "t", "model": "unet", "fold": "0"},
        regions=REGIONS,
    )
    return {"summary": summary, "outputs": outputs, "table": pd.read_csv(outputs["table"], sep="\t")}


def test_region_dice_scores_label_values_with_the_empty_conventions():
    truth = np.array([[0, 1, 2, 4]])
    pred = np.array([[0, 1, 2, 2]])
    dice = region_dice(pred, truth, {**REGIONS, "absent": [3]})
    assert dice == {"whole_tumour": 1.0, "tumour_core": pytest.approx(2 / 3), "enhancing_tumour": 0.0, "absent": 1.0}


def test_each_curve_starts_at_the_clean_cases_and_strong_noise_costs_dice(swept):
    table = swept["table"]
    assert (
        list(table.columns)
        == columns(REGIONS)
        == ["perturbation", "severity", "dice", "dice_whole_tumour", "dice_tumour_core", "dice_enhancing_tumour", "n_images"]
    )
    assert list(table["perturbation"]) == ["noise"] * 3 + ["blur"] * 2 + ["motion"] * 2
    assert (table["n_images"] == 3).all()
    clean = table.iloc[0]
    for name, part in table.groupby("perturbation", sort=False):
        assert list(part["severity"]) == [IDENTITY[name], *SWEPT[name]]
        # the clean point, computed once: the same numbers at the head of every curve
        pd.testing.assert_series_equal(
            part.iloc[0].drop(["perturbation", "severity"]), clean.drop(["perturbation", "severity"]), check_names=False
        )
    # the mean over cases of each case's mean over regions: with every region scored,
    # the mean of the regions' means (whole tumour alone would be higher)
    regional = clean[[f"dice_{r}" for r in REGIONS]].astype(float)
    assert clean["dice"] == pytest.approx(regional.mean(), abs=2e-6)
    assert clean["dice_whole_tumour"] > clean["dice"] + 0.01
    noise = table[table["perturbation"] == "noise"].set_index("severity")["dice"]
    print(f"Dice: clean {clean['dice']:.3f} (whole tumour {clean['dice_whole_tumour']:.3f}); noise 1 {noise[1.0]:.3f}, 8 {noise[8.0]:.3f}")
    assert clean["dice_whole_tumour"] > 0.6 and clean["dice"] > 0.4  # a model that segments
    assert noise[8.0] < clean["dice"] - 0.2
    assert swept["summary"]["breakdown"]["noise"] == 8.0


def test_stage_writes_every_output_and_a_strict_json_summary(swept):
    for path in swept["outputs"].values():
        with open(path, "rb") as fh:
            head = fh.read(8)
        assert head, path
        if path.endswith(".png"):
            assert head == b"\x89PNG\r\n\x1a\n", path
    summary = _strict_json(swept["outputs"]["summary"])
    assert summary["metric"] == "dice" and summary["n_images"] == 3 and summary["space"] == "preprocessed"
    assert summary["severities"] == {name: SWEPT[name] for name in SWEPT}
    assert set(summary["breakdown"]) == set(summary["units"]) == set(SWEPT)
    assert summary["regions"] == REGIONS
    assert summary["clean"] == pytest.approx(swept["table"]["dice"].iloc[0], abs=1e-5)


def test_max_images_caps_the_cases_and_nan_never_reaches_the_json(run, monkeypatch, tmp_path):
    def nan_core(pred, truth, regions):  # a region without a score (NaN)
        return {**region_dice(pred, truth, regions), "tumour_core": float("nan")}

    monkeypatch.setattr(seg_robustness, "region_dice", nan_core)
    outputs = _outputs(tmp_path)
    cfg = {"max_images": 1, "perturbations": {name: [2.0] if name == "noise" else [] for name in PERTURBATIONS}}
    summary = robustness_seg_stage(run["model_cfg"], cfg, inputs=run["inputs"], outputs=outputs, title="tiny brain", regions=REGIONS)
    table = pd.read_csv(outputs["table"], sep="\t")
    assert list(table["severity"]) == [0.0, 2.0] and (table["n_images"] == 1).all()
    assert table["dice_tumour_core"].isna().all() and table["dice"].notna().all()
    assert math.isnan(summary["clean_by_region"]["tumour_core"])
    written = _strict_json(outputs["summary"])
    assert written["clean_by_region"]["tumour_core"] is None and written["n_images"] == 1
