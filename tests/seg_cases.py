"""Preprocessed synthetic brain cases and a split, as the segmentation rules leave them,
for the segmentation training and robustness tests."""

from __future__ import annotations

from pathlib import Path

from casebook.fingerprint import fingerprint_stage
from casebook.layout import write_dataset
from casebook.synthetic import CLASS_NAMES, GENERATORS, brain_mri
from casebook.tasks.segmentation.preprocess import preprocess_stage


def preprocessed_brain(root: Path) -> dict:
    """10 preprocessed synthetic subjects under ``root`` and a split: 3 test, 5 train,
    2 validation. Returns root, cases folder, segmentation plan and splits."""
    records = GENERATORS["brain_mri"](n_patients=10, size=(32, 32, 24), spacing=(6.0, 6.0, 7.0), seed=0)
    write_dataset(
        records, root / "data", class_names=CLASS_NAMES["brain_mri"], modality="MRI",
        channel_names=brain_mri.CHANNEL_NAMES, labels=brain_mri.LABEL_NAMES,
    )  # fmt: skip
    fingerprint_stage(root / "data", root / "fingerprint.json", root / "plan.json")
    seg_plan = preprocess_stage(
        root / "data", root / "plan.json", {"spacing": "auto"}, class_names=CLASS_NAMES["brain_mri"],
        cases_out=root / "cases", plan_out=root / "seg_plan.json",
    )  # fmt: skip
    ids = sorted(seg_plan["cases"])
    splits = {"test": ids[:3], "folds": [{"train": ids[3:8], "val": ids[8:]}]}
    return {"root": root, "cases": root / "cases", "seg_plan": seg_plan, "splits": splits}
