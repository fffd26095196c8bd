import math

import pytest
import torch

from detcli.errors import ConfigError
from detcli.models.dense_utils import (
    flatten_levels,
    level_of_image,
    logit_threshold,
    nms_detections,
    pad_ground_truth,
    select_candidates,
)
from detcli.models.detector import DenseTestConfig
from detcli.models.roi_head import RCNNTestConfig
from detcli.models.rpn import ProposalConfig
from detcli.structures import GroundTruth


def test_logit_threshold_is_strict_inverse_sigmoid():
    t = logit_threshold(0.05)
    assert torch.sigmoid(torch.tensor(t)).item() == pytest.approx(0.05)
    assert logit_threshold(0.0) == -math.inf and logit_threshold(1.0) == math.inf


def test_select_candidates_threshold_topk_and_order():
    logits = torch.tensor([[0.0, 3.0], [2.0, -5.0], [1.0, 1.0]])  # (N=3 priors, C=2)
    prior, labels, vals = select_candidates(logits, 0.5, nms_pre=3)
    assert vals.tolist() == [3.0, 2.0, 1.0] and prior.tolist()[:2] == [0, 1] and labels.tolist()[:2] == [1, 0]
    assert prior.tolist()[2] == 2 and labels.tolist()[2] in (0, 1)  # tie: either class
    prior, labels, vals = select_candidates(logits, 0.5, nms_pre=1)
    assert prior.tolist() == [0] and labels.tolist() == [1]
    prior, _, _ = select_candidates(logits, 1.0, nms_pre=10)  # strictly greater: the 1.0 entries are dropped
    assert prior.tolist() == [0, 1]
    prior, _, _ = select_candidates(logits, 10.0, nms_pre=10)
    assert prior.numel() == 0


def test_level_of_image_prior_order_matches_flatten():
    maps = torch.randn(2, 3 * 4, 5, 6)  # A = 3 anchors, k = 4
    flat = flatten_levels([maps], 4)
    torch.testing.assert_close(level_of_image(maps, 1, 4), flat[1])
    cl = maps.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(level_of_image(cl, 1, 4), flat[1])


def test_nms_detections_min_size_empty_and_cap():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 21, 30], [40, 40, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 1, 1])
    dets = nms_detections(boxes, scores, labels, (64, 64), 0.5, False, 10, min_bbox_size=2)
    assert dets.scores.tolist() == pytest.approx([0.9, 0.6]) and dets.labels.tolist() == [0, 1]
    dets = nms_detections(boxes, scores, torch.tensor([0, 1, 1, 1]), (64, 64), 0.5, False, 10, 0)
    assert len(dets) == 4  # different classes do not suppress each other
    dets = nms_detections(boxes, scores, torch.tensor([0, 1, 1, 1]), (64, 64), 0.5, True, 2, 0)
    assert dets.scores.tolist() == pytest.approx([0.9, 0.7])
    empty = nms_detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), (8, 8), 0.5, False, 10, 0)
    assert len(empty) == 0 and empty.image_size == (8, 8)


def test_nms_detections_drop_empty_boxes_is_mmdet3():
    # a box clipped flat at the border (x1 == x2 == 64) and a normal one
    boxes = torch.tensor([[64.0, 10, 64, 30], [10, 10, 30, 30]])
    scores, labels = torch.tensor([0.9, 0.8]), torch.tensor([0, 0])
    kept = nms_detections(boxes, scores, labels, (64, 64), 0.5, False, 10, 0)  # mmdet 2.x: kept
    assert kept.scores.tolist() == pytest.approx([0.9, 0.8])
    dropped = nms_detections(boxes, scores, labels, (64, 64), 0.5, False, 10, 0, drop_empty=True)  # 3.x
    assert dropped.scores.tolist() == pytest.approx([0.8])
    off = nms_detections(boxes, scores, labels, (64, 64), 0.5, False, 10, -1, drop_empty=True)  # < 0: no filter
    assert len(off) == 2


def test_drop_empty_boxes_config_key():
    from detcli.errors import ConfigError
    from detcli.models.detector import DenseTestConfig

    assert DenseTestConfig.parse({}).drop_empty_boxes is False
    assert DenseTestConfig.parse({"drop_empty_boxes": True}).drop_empty_boxes is True
    with pytest.raises(ConfigError, match="drop_empty_boxes"):
        DenseTestConfig.parse({"drop_empty_box": True})


def test_pad_ground_truth():
    gts = [GroundTruth((8, 8), torch.tensor([[0.0, 0, 4, 4]]), [2]), GroundTruth((8, 8), torch.zeros(0, 4), [])]
    boxes, labels, valid = pad_ground_truth(gts, torch.device("cpu"))
    assert boxes.shape == (2, 1, 4) and labels.tolist() == [[2], [0]] and valid.tolist() == [[True], [False]]
    boxes, _, valid = pad_ground_truth(gts[1:], torch.device("cpu"))
    assert boxes.shape == (1, 0, 4) and valid.shape == (1, 0)


@pytest.mark.parametrize(
    ("parse", "cfg", "message"),
    [
        (lambda c: DenseTestConfig.parse(c), {"nms": {"type": "nms", "iou_threshold": None}},
         r"model\.test_cfg\.nms\.iou_threshold: expected a finite number, got None"),
        (lambda c: DenseTestConfig.parse(c), {"max_per_img": "abc"}, r"model\.test_cfg\.max_per_img: expected an integer"),
        (lambda c: DenseTestConfig.parse(c), {"max_per_img": 2.5}, r"max_per_img: expected an integer, got 2\.5"),
        (lambda c: DenseTestConfig.parse(c), {"score_thr": float("nan")}, r"score_thr: expected a finite number"),
        (lambda c: DenseTestConfig.parse(c), {"drop_empty_boxes": 1}, r"drop_empty_boxes: expected true or false"),
        (lambda c: RCNNTestConfig.parse(c, "model.test_cfg.rcnn"), {"score_thr": None},
         r"model\.test_cfg\.rcnn\.score_thr: expected a finite number, got None \(e\.g\. score_thr: 0\.05\)"),
        (lambda c: ProposalConfig.parse(c, "model.test_cfg.rpn"), {"nms": {"iou_thr": "x"}},
         r"model\.test_cfg\.rpn\.nms\.iou_thr: expected a finite number"),
    ],
)
def test_test_cfg_values_name_the_key(parse, cfg, message) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=message):
        parse(cfg)


def test_test_cfg_numbers_are_converted() -> None:
    cfg = DenseTestConfig.parse({"max_per_img": 50.0, "score_thr": 0, "nms": {"iou_thr": 0.6}})
    assert (cfg.max_per_img, cfg.score_thr, cfg.iou_threshold) == (50, 0.0, 0.6)
    assert isinstance(cfg.max_per_img, int) and isinstance(cfg.score_thr, float)
    assert RCNNTestConfig.parse({}, "p").nms == {"type": "nms", "iou_threshold": 0.5, "class_agnostic": False}
