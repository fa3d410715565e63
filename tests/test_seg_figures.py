"""Segmentation figures: each writes a readable, non-blank PNG; the comparison table's text."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from casebook.analysis.stats import bland_altman
from casebook.tasks.segmentation.figures import (
    comparison_table,
    plot_bland_altman,
    plot_case_boxplots,
    plot_comparison_table,
    plot_overlays,
)
from casebook.tasks.segmentation.metrics import summarize_cases

LABELS = {0: "background", 1: "necrosis", 2: "oedema", 3: "unused", 4: "enhancing"}


def read_png(path, min_height: int = 150, min_width: int = 150) -> np.ndarray:
    """The PNG as pixels, after checking it is a real, non-blank image of a sensible size."""
    assert path.exists() and path.stat().st_size > 0
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert pixels.shape[0] >= min_height and pixels.shape[1] >= min_width
    assert pixels[..., :3].var() > 0  # something was drawn
    return pixels


def per_case_table(n_cases: int, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_cases):
        for region, base in (("whole_tumour", 0.85), ("tumour_core", 0.75), ("enhancing_tumour", 0.7)):
            rows.append(
                {
                    "case_id": f"c{i:02d}",
                    "region": region,
                    "dice": float(np.clip(rng.normal(base + shift, 0.08), 0, 1)),
                    "iou": float(rng.uniform(0.4, 0.9)),
                    # HD95 undefined (only one of truth and prediction empty) in every 5th case
                    "hd95": float("nan") if (region == "enhancing_tumour" and i % 5 == 0) else float(rng.gamma(2.0, 2.0)),
                    "nsd": float(rng.uniform(0.5, 1.0)),
                    "volume_true_ml": 10.0,
                    "volume_pred_ml": 11.0,
                    "empty_truth": False,
                    "empty_pred": False,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return {"unet": per_case_table(10, 0.0, seed=0), "segresnet": per_case_table(10, 0.04, seed=1)}


@pytest.fixture(scope="module")
def summaries(tables) -> dict[str, dict]:
    return {name: summarize_cases(t, n_boot=200) for name, t in tables.items()}


def test_bland_altman_figure(tmp_path):
    rng = np.random.default_rng(0)
    true_ml = rng.uniform(5, 120, 15)
    pred_ml = true_ml * 1.05 + rng.normal(0, 3, 15)
    path = tmp_path / "ba.png"
    plot_bland_altman(true_ml, pred_ml, bland_altman(true_ml, pred_ml), "volumes", path, region="whole_tumour")
    pixels = read_png(path, min_height=300, min_width=700)
    assert pixels.shape[1] > pixels.shape[0]  # two panels side by side


def test_bland_altman_figure_with_a_single_case(tmp_path):
    path = tmp_path / "ba1.png"
    plot_bland_altman([10.0], [12.0], bland_altman(np.array([10.0]), np.array([12.0])), "one case", path, region="liver")
    read_png(path)


def phantom(shape=(12, 48, 40)):
    """A BraTS-like phantom: oedema around a necrotic core around an enhancing rim."""
    z, y, x = np.indices(shape)
    c = np.array(shape) / 2
    # Anisotropic voxels (thick slices): the radius in z is in slices of 5 mm, in y/x of 1 mm.
    r = np.sqrt(((z - c[0]) * 5) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
    truth = np.zeros(shape, dtype=np.uint8)
    truth[r < 16] = 2
    truth[r < 10] = 4
    truth[r < 6] = 1
    image = (r < 20).astype(np.float32) + 0.1 * np.random.default_rng(0).normal(size=shape).astype(np.float32)
    return image, truth


def test_overlays_with_anisotropic_spacing_and_an_empty_truth(tmp_path):
    image, truth = phantom()
    pred = np.roll(truth, 3, axis=2)
    empty = np.zeros_like(truth)
    cases = [
        {"image": image, "truth": truth, "pred": pred, "spacing": (5.0, 1.0, 1.0), "caption": "best: Dice 0.91 (brain_p0003)"},
        {"image": image, "truth": empty, "pred": pred, "spacing": (5.0, 1.0, 1.0), "caption": "no tumour, false positive"},
        {"image": image, "truth": empty, "pred": empty, "spacing": (5.0, 1.0, 1.0), "caption": "nothing anywhere"},
    ]
    path = tmp_path / "overlays.png"
    plot_overlays(cases, "overlays", path, label_names=LABELS)
    pixels = read_png(path, min_height=500, min_width=500)
    assert pixels.shape[0] > pixels.shape[1]  # three rows of three views


def test_overlay_aspect_follows_spacing(tmp_path, monkeypatch):
    # Capture each figure's axes just before it is saved (and closed).
    import matplotlib.pyplot as plt

    from casebook.tasks.segmentation import figures

    aspects = []
    save = figures.save_figure

    def spy(fig, path):
        aspects.append([ax.get_aspect() for ax in fig.axes])
        save(fig, path)

    monkeypatch.setattr(figures, "save_figure", spy)
    image, truth = phantom()
    case = {"image": image, "truth": truth, "pred": truth, "caption": "perfect"}
    for spacing in ((5.0, 1.0, 1.0), (1.0, 1.0, 1.0), (2.0, 0.5, 1.0)):
        plot_overlays([{**case, "spacing": spacing}], "aspect", tmp_path / "aspect.png", label_names=LABELS)
        read_png(tmp_path / "aspect.png")
    # axial: y/x, coronal: z/x, sagittal: z/y (height / width of one pixel)
    assert aspects == [pytest.approx([1.0, 5.0, 5.0]), pytest.approx([1.0, 1.0, 1.0]), pytest.approx([0.5, 2.0, 4.0])]
    assert not plt.get_fignums()  # every figure was closed after saving


def test_overlay_legend_skips_unused_labels(monkeypatch, tmp_path):
    from casebook.tasks.segmentation import figures

    legends = []
    save = figures.save_figure
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: (legends.extend(fig.legends), save(fig, path)))
    image, truth = phantom()
    case = {"image": image, "truth": truth, "pred": truth, "spacing": (5.0, 1.0, 1.0), "caption": ""}
    plot_overlays([case], "legend", tmp_path / "legend.png", label_names=LABELS)
    (legend,) = legends
    assert [t.get_text() for t in legend.get_texts()] == ["necrosis", "oedema", "enhancing", "truth", "prediction"]


def test_case_boxplots(tmp_path, tables):
    path = tmp_path / "box.png"
    plot_case_boxplots(tables, "hd95", "HD95 per case (mm)", path)  # with NaN cases
    read_png(path, min_height=300, min_width=400)


def test_comparison_table_rows_and_ci_text(summaries):
    table = comparison_table(summaries)
    assert len(table) == 2 * 3
    assert list(table[["model", "region"]].drop_duplicates().itertuples(index=False, name=None))[:3] == [
        ("unet", "whole_tumour"),
        ("unet", "tumour_core"),
        ("unet", "enhancing_tumour"),
    ]
    row = table.query("model == 'segresnet' and region == 'whole_tumour'").iloc[0]
    s = summaries["segresnet"]["regions"]["whole_tumour"]["dice"]
    assert row["dice"] == f"{s['mean']:.3f} ({s['ci_low']:.3f}-{s['ci_high']:.3f})"
    assert row["dice_mean"] == pytest.approx(s["mean"])
    assert row["dice_ci_low"] < row["dice_mean"] < row["dice_ci_high"]
    assert {"hd95", "hd95_mean", "nsd", "nsd_mean"} <= set(table.columns)
    enhancing = table.query("model == 'unet' and region == 'enhancing_tumour'").iloc[0]
    assert enhancing["hd95_n_nan"] == 2 and enhancing["hd95"].endswith("[2 undefined]")
    assert table.sort_values("dice_mean", ascending=False).iloc[0]["region"] == "whole_tumour"
    assert (table["found"] == "10/10").all()  # every case holds every region, all found


def test_comparison_table_image(tmp_path, summaries):
    path = tmp_path / "table.png"
    plot_comparison_table(comparison_table(summaries), "models on the test set (95% CI)", path)
    pixels = read_png(path, min_height=100, min_width=500)
    assert pixels.shape[1] > pixels.shape[0]  # a wide table: model, region and three metrics
