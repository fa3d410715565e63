"""Config helpers: override merging and readable schema errors."""

from __future__ import annotations

from pathlib import Path

import yaml

from casebook.config import deep_merge, schema_problems

SCHEMAS = Path(__file__).resolve().parents[1] / "workflow" / "schemas"
CASESTUDIES = Path(__file__).resolve().parents[1] / "config" / "casestudies"


def test_deep_merge_merges_nested_keys_and_leaves_inputs_alone():
    base = {"dataset": {"name": "x", "size": 28}, "train": {"lr": 0.1}}
    update = {"dataset": {"source": "path"}, "train": {"lr": 0.2}, "folds": [0, 1]}
    merged = deep_merge(base, update)
    assert merged == {"dataset": {"name": "x", "size": 28, "source": "path"}, "train": {"lr": 0.2}, "folds": [0, 1]}
    assert base == {"dataset": {"name": "x", "size": 28}, "train": {"lr": 0.1}}


def test_every_shipped_case_study_is_valid():
    for path in CASESTUDIES.glob("*.yaml"):
        assert schema_problems(yaml.safe_load(path.read_text()), SCHEMAS / "casestudy.schema.yaml") == [], path


def test_schema_problems_name_the_key_path():
    cs = yaml.safe_load((CASESTUDIES / "pneumonia_cxr.yaml").read_text())
    cs["train"]["epochs"] = "ten"
    cs["augment"]["flip"] = {"axes": [0], "probability": 0.5}
    problems = schema_problems(cs, SCHEMAS / "casestudy.schema.yaml")
    assert any(p.startswith("at train.epochs:") and "'ten'" in p for p in problems)
    assert any(p.startswith("at augment.flip:") and "'probability'" in p for p in problems)


def test_every_schema_property_has_a_description():
    def walk(node, where):
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                assert "description" in sub, f"{where}.{name}"
            for key, sub in node.items():
                walk(sub, f"{where}.{key}")
        elif isinstance(node, list):
            for sub in node:
                walk(sub, where)

    for name in ("config.schema.yaml", "casestudy.schema.yaml", "datasets.schema.yaml"):
        walk(yaml.safe_load((SCHEMAS / name).read_text()), name)
