"""The torchvision stand-in that keeps MONAI's RetinaNet usable where torchvision does not
import (casebook.tasks.detection.torchvision_standin), and the RetinaNet detector built
on it (casebook.tasks.detection.retina)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets.resnet import ResNet

from casebook.tasks.detection.torchvision_standin import (
    BalancedPositiveNegativeSampler,
    IntermediateLayerGetter,
    Matcher,
    ensure_monai_detection,
    torchvision_imports,
    validate_trainable_layers,
)


def test_matcher_codes_predictions_below_and_between_the_thresholds():
    # 2 ground truths x 5 predictions
    quality = torch.tensor([[0.9, 0.45, 0.1, 0.0, 0.2], [0.1, 0.2, 0.35, 0.0, 0.6]])
    matches = Matcher(0.5, 0.3, allow_low_quality_matches=False)(quality)
    assert matches.tolist() == [0, Matcher.BETWEEN_THRESHOLDS, Matcher.BETWEEN_THRESHOLDS, Matcher.BELOW_LOW_THRESHOLD, 1]


def test_matcher_gives_a_poorly_covered_truth_its_best_predictions_back():
    # the second truth's best overlap (0.35, tied by two predictions) is under both thresholds
    quality = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.0, 0.35, 0.35, 0.1]])
    strict = Matcher(0.5, 0.4, allow_low_quality_matches=False)(quality)
    lenient = Matcher(0.5, 0.4, allow_low_quality_matches=True)(quality)
    assert strict.tolist() == [0, -1, -1, -1] and lenient.tolist() == [0, 1, 1, -1]


def test_matcher_refuses_an_empty_or_inverted_setting():
    with pytest.raises(ValueError, match="no ground truth"):
        Matcher(0.5, 0.4)(torch.zeros((0, 3)))
    with pytest.raises(ValueError, match="above high_threshold"):
        Matcher(0.3, 0.5)


def test_balanced_sampler_keeps_its_positive_fraction_and_never_picks_ignored_elements():
    torch.manual_seed(0)
    labels = torch.tensor([2] * 30 + [0] * 100 + [-1] * 20)
    pos, neg = BalancedPositiveNegativeSampler(40, 0.25)([labels])
    assert pos[0].dtype == torch.uint8 and pos[0].shape == labels.shape
    assert int(pos[0].sum()) == 10 and int(neg[0].sum()) == 30
    assert bool((labels[pos[0].bool()] >= 1).all()) and bool((labels[neg[0].bool()] == 0).all())
    few = torch.tensor([1, 0, 0, -1])  # fewer positives than the fraction allows: negatives fill up
    pos, neg = BalancedPositiveNegativeSampler(8, 0.5)([few])
    assert pos[0].tolist() == [1, 0, 0, 0] and neg[0].tolist() == [0, 1, 1, 0]


def test_intermediate_layer_getter_returns_the_named_stages_of_a_monai_resnet():
    net = ResNet("basic", [1, 1, 1, 1], [4, 8, 16, 32], spatial_dims=2, n_input_channels=1, no_max_pool=True, feed_forward=False).eval()
    getter = IntermediateLayerGetter(net, {"layer1": "0", "layer3": "1"})
    assert list(getter) == ["conv1", "bn1", "act", "maxpool", "layer1", "layer2", "layer3"]  # layer4 on are dropped
    x = torch.randn(2, 1, 32, 32)
    out = getter(x)
    with torch.no_grad():
        first = net.layer1(net.maxpool(net.act(net.bn1(net.conv1(x)))))
        expected = net.layer3(net.layer2(first))
    assert list(out) == ["0", "1"] and torch.allclose(out["0"], first) and torch.allclose(out["1"], expected)
    with pytest.raises(ValueError, match="layer9"):
        IntermediateLayerGetter(net, {"layer9": "0"})


def test_trainable_layers_are_all_for_an_untrained_backbone():
    assert validate_trainable_layers(False, None, 5, 3) == 5
    assert validate_trainable_layers(True, None, 5, 3) == 3 and validate_trainable_layers(True, 1, 5, 3) == 1
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        validate_trainable_layers(True, 7, 5, 3)


@pytest.mark.skipif(torchvision_imports(), reason="torchvision imports here: MONAI keeps its own helpers")
def test_monai_takes_the_stand_ins_where_torchvision_does_not_import():
    from monai.apps.detection.networks import retinanet_detector
    from monai.networks.blocks import backbone_fpn_utils

    assert ensure_monai_detection()
    assert retinanet_detector.Matcher is Matcher and retinanet_detector.BalancedPositiveNegativeSampler is BalancedPositiveNegativeSampler
    assert backbone_fpn_utils.torchvision_models._utils.IntermediateLayerGetter is IntermediateLayerGetter


@pytest.mark.parametrize(("matcher", "sampler"), [("iou", "balanced"), ("atss", "hard_negative")])
def test_monai_retinanet_learns_a_box_with_either_matcher_and_sampler(matcher, sampler):
    """MONAI's RetinaNet on the stand-ins: both matcher branches and both sampler branches
    train, and fitting one 2D image with one bright square brings the square's box first."""
    from casebook.tasks.detection.retina import build_retinanet, retina_candidates, retina_loss

    torch.manual_seed(0)
    detector = build_retinanet({"name": "retinanet", "kwargs": {"matcher": matcher, "sampler": sampler}}, 2)
    image = np.zeros((32, 32), np.float32)
    image[8:18, 14:24] = 1.0
    target = [{"boxes": torch.tensor([[8.0, 14.0, 18.0, 24.0]]), "labels": torch.zeros(1, dtype=torch.long)}]
    optimizer = torch.optim.Adam(detector.parameters(), lr=0.01)
    losses = []
    for _ in range(40):
        detector.train()
        optimizer.zero_grad()
        loss = retina_loss(detector, torch.from_numpy(image)[None, None], target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    settings = {"min_score": 0.05, "nms_iou": 0.1, "max_candidates": 5}
    score, centre, size = retina_candidates(detector, image, settings)[0]
    assert np.allclose(centre, [13.0, 19.0], atol=2.0) and np.allclose(size, [10.0, 10.0], atol=4.0), (score, centre, size)


def test_retinanet_validation_loss_leaves_batch_norm_statistics_alone():
    from casebook.tasks.detection.retina import build_retinanet, retina_loss

    detector = build_retinanet({"name": "retinanet"}, 2).eval()
    before = {k: v.clone() for k, v in detector.state_dict().items() if "running" in k}
    target = [{"boxes": torch.tensor([[4.0, 4.0, 12.0, 12.0]]), "labels": torch.zeros(1, dtype=torch.long)}]
    with torch.no_grad():
        loss = retina_loss(detector, torch.rand(1, 1, 16, 16), target, validation=True)
    assert torch.isfinite(loss) and not detector.training and not detector.network.training
    assert all(torch.equal(before[k], v) for k, v in detector.state_dict().items() if k in before)


def test_flipped_boxes_hold_their_flipped_finding_to_the_voxel():
    """The family's boxes centre voxels on whole numbers, MONAI's put edges there: the box
    of a block, flipped, still frames exactly that block."""
    from casebook.tasks.detection.retina import flip_boxes, retina_item

    image = np.zeros((10, 20), np.float32)
    image[2:4, 5:9] = 1.0  # centre (2.5, 6.5) in voxel-centre coordinates, size 2 x 4
    item = retina_item(image, np.array([[2.5, 6.5, 2.0, 4.0, 0.0], [5.0, 5.0, 2.0, 2.0, 1.0]]), np.array([0, 0]), np.array([10, 20]))
    assert item["boxes"].tolist() == [[2.0, 5.0, 4.0, 9.0]]  # MONAI's corners; the excluded finding left out
    for axes in [(0,), (1,), (0, 1)]:
        lo, hi = np.rint(flip_boxes(item["boxes"], image.shape, axes)[0].reshape(2, 2)).astype(int)
        flipped = np.flip(image, axes)
        assert flipped[lo[0] : hi[0], lo[1] : hi[1]].sum() == flipped.sum() == (hi - lo).prod(), axes


def test_the_coarsest_feature_map_has_the_stride_inputs_are_padded_to():
    from casebook.tasks.detection.retina import build_retinanet, divisor

    for kwargs in ({}, {"conv1_stride": 2}, {"returned_layers": [1, 2, 3]}):
        network = {"name": "retinanet", "kwargs": kwargs}
        features = build_retinanet(network, 2).network.feature_extractor(torch.zeros(1, 1, 64, 64))
        assert [tuple(f.shape[-2:]) for f in features.values()][-1] == (64 // divisor(network),) * 2, kwargs
