"""Unit tests of the detection family and of boxes in the layout: the LUNA16 FROC and CPM
against a hand-worked example (excluded findings and double hits included), the
operating point and sensitivity by size, boxes written, read and refused naming the file
and row, the synthetic chest CT's boxes on its nodules, centre-point targets decoded
back, MONAI's COCO AP on perfect and on shifted boxes, and a detector trained here that
finds the planted nodules far better than the same network untrained."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from casebook.boxes import BOXES_FILE, Box, BoxError, box_problems, boxes_of, read_boxes
from casebook.fingerprint import GeometryError, check_geometry
from casebook.layout import write_dataset
from casebook.synthetic.chest_ct import CLASS_NAMES, generate_chest_ct
from casebook.tasks.detection.evaluate import mean_average_precision
from casebook.tasks.detection.froc import cpm, froc_curve, match_scan, operating_threshold, outcomes, sensitivities, sensitivity_by_size
from casebook.tasks.detection.heatmap import box_masks, decode, targets
from casebook.tasks.detection.train import fit, scan_candidates
from casebook.tasks.detection.volumes import load_volumes, prepare_volumes

# two scans, hand-worked (world mm): scan a has nodules of 10 and 6 mm and an excluded
# 2 mm finding, scan b one 8 mm nodule
SCAN_A = [
    Box("a", "nodule", (0, 0, 0), (10, 10, 10)),
    Box("a", "nodule", (30, 0, 0), (6, 6, 6)),
    Box("a", "nodule", (60, 0, 0), (2, 2, 2), True),
]
SCAN_B = [Box("b", "nodule", (0, 0, 0), (8, 8, 8))]
CANDS_A = [
    (0.9, (1, 1, 0)),  # hits the 10 mm nodule
    (0.8, (2, 0, 0)),  # hits it again: neither a hit nor a false positive
    (0.7, (60.5, 0, 0)),  # within the excluded finding only: ignored
    (0.6, (100, 0, 0)),  # a false positive
    (0.3, (30, 2, 0)),  # 2 mm from the 6 mm nodule's centre: within its 3 mm radius
]
CANDS_B = [(0.5, (50, 50, 0)), (0.2, (0, 0, 3.9))]  # a false positive; a hit 3.9 mm off (radius 4)


def _scans():
    return [match_scan("a", "pa", CANDS_A, SCAN_A), match_scan("b", "pb", CANDS_B, SCAN_B)]


def test_luna16_matching_counts_one_hit_per_nodule_and_ignores_excluded_findings():
    a, b = _scans()
    assert list(a.finding_scores) == [0.9, 0.3] and list(a.fp_scores) == [0.6]
    assert list(b.finding_scores) == [0.2] and list(b.fp_scores) == [0.5]
    assert match_scan("b", "pb", [(0.4, (0, 0, 4.1))], SCAN_B).finding_scores[0] == 0.0  # just outside the radius


def test_froc_and_cpm_match_the_hand_worked_example():
    # thresholds 0.9, 0.6, 0.5, 0.3, 0.2: (FP per scan, sensitivity) = (0, 1/3), (0.5, 1/3),
    # (1, 1/3), (1, 2/3), (1, 1); at 1/8..1/2 FP per scan 1/3, from 1 FP per scan on 1
    fps, sens = froc_curve(_scans())
    assert np.allclose(fps, [1, 1, 1, 0.5, 0, 0]) and np.allclose(sens, [1, 2 / 3, 1 / 3, 1 / 3, 1 / 3, 0])
    assert np.allclose(sensitivities(_scans()), [1 / 3, 1 / 3, 1 / 3, 1, 1, 1, 1])
    assert cpm(_scans()) == pytest.approx(5 / 7)


def test_operating_point_and_sensitivity_by_size():
    scans = _scans()
    # at most 0.5 FP per scan: the best false positive (0.6) may stay, the next (0.5) not
    threshold = operating_threshold(scans, 0.5)
    assert 0.5 < threshold <= 0.6
    rows = sensitivity_by_size(scans, [3, 7, 12], threshold)
    assert rows == [
        {"from_mm": 3.0, "to_mm": 7.0, "findings": 1, "hits": 0, "sensitivity": 0.0},  # the 6 mm one scored 0.3
        {"from_mm": 7.0, "to_mm": 12.0, "findings": 2, "hits": 1, "sensitivity": 0.5},
    ]
    assert operating_threshold(scans, 8.0) == 0.0  # every candidate kept


def test_candidate_outcomes_name_hits_ignored_and_false_positives():
    found = [(s, c, (1, 1, 1)) for s, c in CANDS_A]
    assert outcomes(found, SCAN_A) == ["hit", "hit", "ignored", "false positive", "hit"]


def test_coco_ap_is_one_for_perfect_boxes_and_drops_for_shifted_ones():
    truth = [[b for b in SCAN_A], [b for b in SCAN_B]]
    perfect = [[(0.9, np.array(b.centre, float), np.array(b.size, float)) for b in v if not b.excluded] for v in truth]
    assert mean_average_precision(perfect, truth, 0.5, 3) == pytest.approx(1.0)
    shifted = [[(s, c + np.array([0.7 * z[0], 0, 0]), z) for s, c, z in v] for v in perfect]
    assert mean_average_precision(shifted, truth, 0.5, 3) < 0.5


def test_centre_point_targets_decode_back_to_their_findings():
    centres, sizes = np.array([[5.0, 6.0, 7.0], [12.0, 20.0, 9.0]]), np.array([[4.0, 6.0, 6.0], [3.0, 3.0, 3.0]])
    t = targets((16, 24, 24), np.vstack([centres, [[2, 2, 2]]]), np.vstack([sizes, [[1, 1, 1]]]), np.array([False, False, True]))
    assert t["heatmap"].max() == 1.0 and t["centres"].sum() == 2
    assert t["weight"][0, 2, 2, 2] == 0.0 and t["weight"][0, 10, 10, 10] == 1.0  # excluded finding: ignored
    logits = torch.logit(torch.from_numpy(t["heatmap"]).clamp(1e-4, 1 - 1e-4))
    found = decode(logits, torch.from_numpy(t["size"]), min_score=0.5, max_candidates=10)
    assert [tuple(c) for _, c, _ in found] == [(5.0, 6.0, 7.0), (12.0, 20.0, 9.0)]
    assert np.allclose([s for _, _, s in found], sizes)
    masks = box_masks((16, 24, 24), centres, sizes, np.array([False, False]))
    assert masks["label"][0, 5, 6, 7] == 1 and masks["label"][0, 0, 0, 0] == 0


# ----------------------------------------------------------------------- boxes in the layout


@pytest.fixture(scope="module")
def chest_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("detection") / "data"
    write_dataset(generate_chest_ct(n_patients=4, seed=2), out, class_names=CLASS_NAMES, modality="CT")
    return out


def test_the_synthetic_boxes_sit_on_their_nodules(chest_data):
    boxes = read_boxes(chest_data / BOXES_FILE)
    assert len(boxes) >= 4 and {b.image_id for b in boxes} <= {f"chest_p{i:04d}" for i in range(4)}
    for box in boxes:
        image = sitk.ReadImage(str(chest_data / f"images/{box.image_id}.nii.gz"))
        label = sitk.ReadImage(str(chest_data / f"masks/{box.image_id}.nii.gz"))
        index = image.TransformPhysicalPointToIndex(box.centre)
        if not box.excluded:
            assert label[index] == 1 and image[index] > -700, box  # the nodule's label and density at its centre
            assert 5.0 <= box.diameter <= 20.0 * 1.3
        else:
            assert box.diameter < 3.0 * 1.3
    assert check_geometry(chest_data)["n_boxes"] == len(boxes)


def test_synthetic_mammograms_box_their_masses_and_clusters_and_label_malignancy(tmp_path):
    from casebook.synthetic.mammogram import CLASS_NAMES as MG_CLASSES
    from casebook.synthetic.mammogram import generate_mammogram

    out = tmp_path / "mg"
    manifest = write_dataset(generate_mammogram(n_patients=16, seed=4), out, class_names=MG_CLASSES, modality="MG")
    boxes = read_boxes(out / BOXES_FILE)
    assert {b.cls for b in boxes} == {"mass", "calcification"} and check_geometry(out)["n_boxes"] == len(boxes)
    for box in boxes:  # each box holds its finding's labelled pixels, of its class
        label = sitk.ReadImage(str(out / f"masks/{box.image_id}.nii.gz"))
        lo = label.TransformPhysicalPointToIndex(tuple(c - z / 2 + 0.5 for c, z in zip(box.centre, box.size)))
        hi = label.TransformPhysicalPointToIndex(tuple(c + z / 2 - 0.5 for c, z in zip(box.centre, box.size)))
        inside = sitk.GetArrayFromImage(label)[lo[1] : hi[1] + 1, lo[0] : hi[0] + 1]
        assert (inside == (1 if box.cls == "mass" else 2)).sum() > 0, box
    malignant = {b.image_id for b in boxes if b.finding.endswith(" malignant")}
    labels = dict(zip(manifest["image_id"], manifest["label"]))
    assert {i for i, y in labels.items() if y == 1} == malignant and 0 < len(malignant) < 16


def test_a_box_outside_its_image_or_of_a_missing_image_is_refused(chest_data, tmp_path):
    image = sitk.ReadImage(str(chest_data / "images/chest_p0000.nii.gz"))
    problems = box_problems(
        [Box("chest_p0000", "nodule", (500.0, 0.0, 0.0), (5, 5, 5)), Box("nobody", "nodule", (0, 0, 0), (5, 5, 5))],
        {"chest_p0000": image},
        "boxes.tsv",
    )
    assert "box 1 (nodule) of image chest_p0000 has its centre" in problems[0] and "outside the image" in problems[0]
    assert "image 'nobody', which the data set lacks" in problems[1]
    bad = tmp_path / "data"
    import shutil

    shutil.copytree(chest_data, bad)
    table = (bad / BOXES_FILE).read_text().splitlines()
    table[1] = table[1].replace("chest_p", "ghost_p", 1)
    (bad / BOXES_FILE).write_text("\n".join(table) + "\n")
    with pytest.raises(GeometryError, match="ghost_p"):
        check_geometry(bad)
    records = list(generate_chest_ct(n_patients=1, seed=2))
    records[0].boxes = [Box(records[0].image_id, "nodule", (0.0, 900.0, 0.0), (4, 4, 4))]
    with pytest.raises(ValueError, match="outside the image"):
        write_dataset(records, tmp_path / "refused", class_names=CLASS_NAMES, modality="CT")
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda row: row.replace("\tnodule\t", "\tnodule\tx\t", 1)[: -len(row.split("\t")[-1]) - 1], "row 2"),
        (lambda row: "\t".join(v if i != 5 else "-3" for i, v in enumerate(row.split("\t"))), "sizes must be positive"),
        (lambda row: "\t".join(v if i != 8 else "yes" for i, v in enumerate(row.split("\t"))), "'excluded' must be 0 or 1"),
    ],
    ids=["not-a-number", "negative-size", "bad-excluded"],
)
def test_a_malformed_boxes_table_is_refused_naming_file_and_row(chest_data, tmp_path, edit, message):
    lines = (chest_data / BOXES_FILE).read_text().splitlines()
    lines[1] = edit(lines[1])
    path = tmp_path / BOXES_FILE
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BoxError, match=message) as err:
        read_boxes(path)
    assert str(path) in str(err.value) and "row 2" in str(err.value)


def test_prepared_volumes_keep_their_boxes_in_voxels_and_their_world_grid(chest_data, tmp_path):
    n_boxes = prepare_volumes(chest_data, {"window": [-1000, 400], "pad_to": 16, "spacing": [4.0, 4.0, 5.0]}, tmp_path / "volumes")
    volumes = load_volumes(tmp_path / "volumes", ["chest_p0001"])
    assert volumes.images[0].shape == (16, 32, 32) and 0.0 <= volumes.images[0].min() and volumes.images[0].max() <= 1.0
    boxes = boxes_of(read_boxes(chest_data / BOXES_FILE))["chest_p0001"]
    assert len(volumes.boxes[0]) == len(boxes) and n_boxes == len(read_boxes(chest_data / BOXES_FILE))
    for row, box in zip(volumes.boxes[0], boxes):
        assert np.allclose(volumes.to_world(0, row[:3]), box.centre, atol=1e-3)
        assert np.allclose(volumes.size_to_world(0, row[3:6]), box.size, atol=1e-3)


# ----------------------------------------------------------------------- a detector trained here

SETTINGS = {
    "window": [-1000, 400],
    "pad_to": 8,
    "patch": None,
    "positive_fraction": 0.7,
    "min_score": 0.05,
    "max_candidates": 20,
    "nms_iou": 0.1,
}


#: RetinaNet's anchors (z, y, x voxels) for nodules of 8 to 14 mm on a 5 x 3 x 3 mm grid
TEST_ANCHORS = [[2, 3, 3], [3, 4, 4]]


@pytest.mark.parametrize(
    ("network", "training"),
    [
        ({"name": "centre_point"}, {"epochs": 12, "batch_size": 4, "lr": 0.005}),
        # sparse anchor supervision: more, smaller steps at a lower rate
        ({"name": "retinanet", "kwargs": {"anchor_shapes": TEST_ANCHORS}}, {"epochs": 30, "batch_size": 2, "lr": 0.002}),
    ],
    ids=["centre_point", "retinanet"],
)
def test_a_detector_trained_here_finds_most_nodules(tmp_path, network, training):
    data = tmp_path / "data"
    write_dataset(
        generate_chest_ct(n_patients=20, size=(32, 32, 16), spacing=(3.0, 3.0, 5.0), seed=4, diameter_mm=(8.0, 14.0), subtle_fraction=0.0),
        data, class_names=CLASS_NAMES, modality="CT",
    )  # fmt: skip
    prepare_volumes(data, SETTINGS, tmp_path / "volumes")
    ids = load_volumes(tmp_path / "volumes").ids
    train, test = load_volumes(tmp_path / "volumes", ids[:16]), load_volumes(tmp_path / "volumes", ids[16:])
    boxes = boxes_of(read_boxes(data / BOXES_FILE))
    cfg = {
        "network": network,
        "train": {**training, "optimizer": "adam", "schedule": {"name": "none"}},
        "seed": 0,
        "device": "cpu",
    }
    summary = fit(cfg, train, test, boxes, SETTINGS, tmp_path / "model")

    def test_cpm(model) -> float:
        found = scan_candidates(model, network["name"], test, SETTINGS)
        return cpm([match_scan(v, p, [(s, c) for s, c, _ in f], boxes.get(v, [])) for v, p, f in zip(test.ids, test.patients, found)])

    from casebook.tasks.detection.networks import build_detector
    from casebook.tasks.detection.train import load_detector

    trained = test_cpm(load_detector(tmp_path / "model/model.pt", cfg["network"]))
    untrained = test_cpm(build_detector(cfg["network"], 3).eval())
    assert trained == pytest.approx(summary["best_val_cpm"])  # the selected epoch's weights
    assert trained > 0.5 and trained > untrained + 0.4, (trained, untrained)


def test_local_maxima_by_neighbours_match_a_max_pool():
    from casebook.tasks.detection.heatmap import _local_maxima

    heat = torch.from_numpy(np.random.default_rng(0).normal(-4.0, 1.5, (12, 20, 20)).astype(np.float32))
    pool = torch.nn.functional.max_pool3d(heat[None, None], 3, 1, 1)[0, 0]
    for floor in (-1.0, -2.5):  # a few hundred voxels over the floor: the neighbour path
        expected = {tuple(v) for v in torch.nonzero((heat == pool) & (heat >= floor)).tolist()}
        assert {tuple(v) for v in _local_maxima(heat, floor).tolist()} == expected and expected


def test_a_2d_boxes_table_reads_back_its_boxes(tmp_path):
    from casebook.boxes import boxes_frame

    boxes = [Box("xr1", "fracture", (10.5, 20.0), (4.0, 6.0), False, "displaced"), Box("xr2", "fracture", (1.0, 2.0), (3.0, 3.0), True)]
    boxes_frame(boxes).to_csv(tmp_path / BOXES_FILE, sep="\t", index=False)
    assert read_boxes(tmp_path / BOXES_FILE) == boxes
