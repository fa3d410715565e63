"""Tests for casebook.tasks.classification.explain: the explain rule's image choice, settings and the stage
end to end on a tiny trained model and cache (the methods themselves are tested in
test_explainability.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.image import imread

from casebook.tasks.classification.explain import (
    DEFAULTS,
    energy_in_mask,
    explain_stage,
    method_settings,
    pick_examples,
    pick_scored,
    settings_with_defaults,
)
from casebook.tasks.classification.networks import build_network

torch.set_num_threads(1)

METHOD_KEYS = {
    "seconds_per_image",
    "deletion_auc",
    "insertion_auc",
    "deletion_auc_random",
    "insertion_auc_random",
    "pointing_game",
    "energy_in_mask_mean",
    "mask_area_fraction_mean",
    "enrichment",
    "sanity_spearman_mean",
    "sanity_spearman_sd",
    "sanity_pass",
}


def test_pick_examples_per_class_and_seeded() -> None:
    predictions = pd.DataFrame({"image_id": [f"i{k:02d}" for k in range(20)], "label": [0] * 12 + [1] * 6 + [2] * 2})
    picked = pick_examples(predictions, per_class=3, seed=0)
    assert picked["label"].value_counts().sort_index().tolist() == [3, 3, 2]
    assert picked.equals(pick_examples(predictions, per_class=3, seed=0))
    assert set(picked["image_id"]) <= set(predictions["image_id"])


def test_pick_scored_is_a_seeded_class_balanced_sample_sorted_by_id() -> None:
    predictions = pd.DataFrame({"image_id": [f"i{k:02d}" for k in range(20)], "label": [0, 1] * 10})
    scored = pick_scored(predictions, 5, seed=3)
    assert len(scored) == 5 and scored["image_id"].is_monotonic_increasing
    assert scored.equals(pick_scored(predictions, 5, seed=3))
    assert not scored.equals(pick_scored(predictions, 5, seed=4))
    assert len(pick_scored(predictions, 100, seed=0)) == 20  # all, when fewer than the cap
    # a rare class still gets its share: 2 positives in 40 images, 4 scored
    rare = pd.DataFrame({"image_id": [f"r{k:02d}" for k in range(40)], "label": [1, 1] + [0] * 38})
    assert pick_scored(rare, 4, seed=0)["label"].tolist().count(1) == 2


def test_settings_take_the_schema_defaults_under_the_config() -> None:
    cfg = settings_with_defaults({"max_images": 4, "smoothgrad": {"samples": 2}})
    assert cfg["max_images"] == 4 and cfg["methods"] == DEFAULTS["methods"]
    assert cfg["smoothgrad"] == {"samples": 2, "noise_level": 0.15}
    assert method_settings("smoothgrad", cfg, seed=7) == {"samples": 2, "noise_level": 0.15, "seed": 7}
    assert method_settings("gradcam", cfg, seed=7) == {}
    schema = Path(__file__).parents[1] / "workflow/schemas/casestudy.schema.yaml"
    import yaml

    explain = yaml.safe_load(schema.read_text())["properties"]["explain"]["properties"]
    for key, value in DEFAULTS.items():  # the defaults here are the schema's
        if isinstance(value, dict):
            assert value == {k: v["default"] for k, v in explain[key]["properties"].items()}
        else:
            assert value == explain[key]["default"]


def test_energy_in_mask_is_still_exported_here() -> None:
    assert energy_in_mask(np.ones((2, 2)), np.eye(2)) == (0.5, 0.5)


NETWORK = {"name": "densenet", "kwargs": {"init_features": 8, "growth_rate": 8, "block_config": [2, 2]}}


def _write_case(root: Path, n_images: int = 24) -> dict[str, str]:
    """A cache of 32x32 noise images (class 1: a bright 6x6 blob, with its mask), a
    model trained on them for 60 steps, and its predictions.tsv."""
    rng = np.random.default_rng(0)
    labels = np.arange(n_images) % 2
    images = rng.normal(0, 0.3, (n_images, 1, 32, 32)).astype(np.float32)
    masks = np.zeros(images.shape, dtype=np.uint8)
    for i in np.flatnonzero(labels == 1):
        y, x = rng.integers(1, 25, 2)
        images[i, 0, y : y + 6, x : x + 6] += 2.0
        masks[i, 0, y : y + 6, x : x + 6] = 1
    np.save(root / "images.npy", images)
    np.save(root / "masks.npy", masks)
    ids = [f"img{i:03d}" for i in range(n_images)]
    pd.DataFrame({"row": np.arange(n_images), "image_id": ids, "patient_id": ids, "label": labels, "has_mask": labels == 1}).to_csv(
        root / "index.tsv", sep="\t", index=False
    )
    torch.manual_seed(0)
    net = build_network(NETWORK, spatial_dims=2, in_channels=1, num_classes=2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    torch.save({"state_dict": net.state_dict()}, root / "model.pt")
    with torch.no_grad():
        probs = net.eval()(x).softmax(1).numpy()
    predictions = pd.DataFrame({"image_id": ids, "patient_id": ids, "label": labels, "prob_0": probs[:, 0], "prob_1": probs[:, 1]})
    predictions["prediction"] = (predictions["prob_1"] >= 0.5).astype(int)
    predictions.to_csv(root / "predictions.tsv", sep="\t", index=False)
    return {
        name: str(root / f"{name}.{ext}")
        for name, ext in (("model", "pt"), ("predictions", "tsv"), ("images", "npy"), ("masks", "npy"), ("index", "tsv"))
    }


@pytest.mark.parametrize("randomization", ["full", "cascading"])
def test_explain_stage_end_to_end(tmp_path, randomization) -> None:
    inputs = _write_case(tmp_path)
    out = tmp_path / "explain"
    outputs = {name: str(out / f"{name}.png") for name in ("grid", "faithfulness", "sanity")} | {"summary": str(out / "explain.json")}
    cfg = {
        "images_per_class": 2,
        "max_images": 6,
        "deletion_steps": 5,
        "occlusion": {"mask_size": 8},
        "smoothgrad": {"samples": 2},
        "integrated_gradients": {"steps": 4},
        "sanity": {"randomization": randomization},
    }
    summary = explain_stage(
        {"network": NETWORK, "seed": 0, "device": "cpu"},
        cfg,
        inputs=inputs,
        outputs=outputs,
        class_names=["normal", "lesion"],
        title="tiny",
    )
    written = json.loads(Path(outputs["summary"]).read_text())
    assert written == json.loads(json.dumps(summary))
    assert written["layer"] == "class_layers.relu" and written["target_class"] == "lesion"
    assert written["n_images"] == 6 and 0 < written["n_mask_images"] <= 6
    assert set(written["methods"]) == set(DEFAULTS["methods"])
    for name, entry in written["methods"].items():
        assert METHOD_KEYS <= set(entry), name
        assert entry["seconds_per_image"] > 0
        assert 0 <= entry["deletion_auc"] <= 1 and 0 <= entry["insertion_auc"] <= 1
        assert 0 <= entry["pointing_game"] <= 1 and 0 < entry["energy_in_mask_mean"] <= 1
        assert entry["enrichment"] == pytest.approx(entry["energy_in_mask_mean"] / entry["mask_area_fraction_mean"])
        assert isinstance(entry["sanity_pass"], bool)
        assert ("sanity_cascade" in entry) == (randomization == "cascading")
    assert len(written["per_image"]) == 6
    assert {r["image_id"] for r in written["per_image"]} <= set(pd.read_csv(inputs["predictions"], sep="\t")["image_id"])
    for path in (outputs["grid"], outputs["faithfulness"], outputs["sanity"]):
        pixels = imread(path)
        assert pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05  # a real, non-blank figure


def test_explain_stage_without_masks(tmp_path) -> None:
    inputs = _write_case(tmp_path, n_images=8)
    np.save(tmp_path / "masks.npy", np.zeros((0,), dtype=np.uint8))  # the preprocess rule's "no masks"
    outputs = {name: str(tmp_path / f"{name}.png") for name in ("grid", "faithfulness", "sanity")} | {
        "summary": str(tmp_path / "explain.json")
    }
    cfg = {"images_per_class": 1, "max_images": 3, "deletion_steps": 4, "methods": ["gradcam", "saliency"]}
    explain_stage({"network": NETWORK, "seed": 1, "device": "cpu"}, cfg, inputs=inputs, outputs=outputs, class_names=["a", "b"], title="t")
    written = json.loads(Path(outputs["summary"]).read_text())
    assert written["n_mask_images"] == 0 and written["pointing_game_chance"] is None
    assert list(written["methods"]) == ["gradcam", "saliency"]
    for entry in written["methods"].values():
        assert entry["pointing_game"] is None and entry["energy_in_mask_mean"] is None and entry["enrichment"] is None
