"""Shared2FCBBoxHead / ConvFCBBoxHead: shapes, loss values, empty inputs and post-processing."""

import math

import pytest
import torch

from detcli.errors import ConfigError
from detcli.models.bbox_heads import ConvFCBBoxHead, Shared2FCBBoxHead
from detcli.models.losses import L1Loss

NMS = {"type": "nms", "iou_threshold": 0.5}


def _head(**kw):
    return Shared2FCBBoxHead(in_channels=4, fc_out_channels=16, roi_feat_size=7, num_classes=3, loss_bbox=L1Loss(), **kw)


def test_output_shapes():
    head = _head()
    cls, reg = head(torch.randn(5, 4, 7, 7))
    assert cls.shape == (5, 4) and reg.shape == (5, 12)  # C + 1 classes (background last), 4 C deltas
    assert _head(reg_class_agnostic=True)(torch.randn(2, 4, 7, 7))[1].shape == (2, 4)
    conv = ConvFCBBoxHead(num_shared_convs=1, num_cls_fcs=1, num_reg_convs=1, conv_out_channels=6,
                          fc_out_channels=8, in_channels=4, num_classes=2, with_avg_pool=True)
    cls, reg = conv(torch.randn(3, 4, 7, 7))
    assert cls.shape == (3, 3) and reg.shape == (3, 8)


def test_loss_values():
    head = _head()
    rois = torch.tensor([[0.0, 0, 0, 10, 10], [0, 0, 0, 20, 20], [1, 5, 5, 15, 15]])
    labels = torch.tensor([2, 3, 0])  # positive of class 2, background, positive of class 0
    gt = torch.tensor([[1.0, 0, 11, 10], [0, 0, 0, 0], [5, 5, 15, 15]])
    cls = torch.zeros(3, 4, requires_grad=True)
    reg = torch.zeros(3, 12, requires_grad=True)
    losses = head.loss(cls, reg, rois, labels, gt)
    assert losses["loss_cls"].item() == pytest.approx(math.log(4))
    # roi 0: dx = 1 / 10 / 0.1 = 1.0, the rest 0; the sum is divided by the 3 sampled RoIs (mmdet 2.x)
    assert losses["loss_bbox"].item() == pytest.approx(1.0 / 3)
    assert losses["acc"].item() == pytest.approx(100 / 3)  # argmax of zeros is class 0: one hit
    (losses["loss_cls"] + losses["loss_bbox"]).backward()
    assert reg.grad[0, 8] != 0 and reg.grad[0, :8].abs().sum() == 0  # only the label's deltas get gradient


def test_loss_without_rois_or_positives():
    head = _head()
    cls, reg = head(torch.randn(0, 4, 7, 7))
    losses = head.loss(cls, reg, torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4))
    assert losses["loss_cls"].item() == 0 and losses["loss_bbox"].item() == 0 and losses["acc"].item() == 0
    (losses["loss_cls"] + losses["loss_bbox"]).backward()
    cls, reg = head(torch.randn(2, 4, 7, 7))
    losses = head.loss(cls, reg, torch.zeros(2, 5), torch.tensor([3, 3]), torch.zeros(2, 4))
    assert losses["loss_bbox"].item() == 0 and losses["loss_cls"].item() > 0


def test_predict_threshold_clip_sort_and_cap():
    head = _head()
    rois = torch.tensor([[0.0, 0, 0, 10, 10], [0, 50, 50, 70, 70], [0, 80, 80, 99, 99], [1, 0, 0, 10, 10]])
    # softmax scores: roi 0 -> class 1 high, roi 1 -> class 2, roi 2 -> background, roi 3 -> class 0
    cls = torch.tensor([[0.0, 5, 0, 0], [0, 0, 3, 0], [0, 0, 0, 9], [4, 0, 0, 0]])
    reg = torch.zeros(4, 12)
    reg[1, 8:10] = 10.0  # shift roi 1's class-2 box far right/down: clipped to the image
    dets = head.predict(rois, cls, reg, [(64, 64), (32, 32)], 0.05, NMS, 100)
    assert [len(d) for d in dets] == [2, 1]
    assert dets[0].labels.tolist() == [1, 2] and bool((dets[0].scores[:-1] >= dets[0].scores[1:]).all())
    assert dets[0].boxes.tensor[1].tolist() == [64.0, 64.0, 64.0, 64.0]
    assert dets[1].labels.tolist() == [0] and dets[1].image_size == (32, 32)
    assert [len(d) for d in head.predict(rois, cls, reg, [(64, 64), (32, 32)], 0.05, NMS, 1)] == [1, 1]
    strict = head.predict(rois[:1], torch.zeros(1, 4), reg[:1], [(64, 64)], 0.25, NMS, 100)[0]
    assert len(strict) == 0 and strict.boxes.tensor.shape == (0, 4)  # scores of exactly 0.25 fail "> 0.25"
    empty = head.predict(rois[3:], cls[3:], reg[3:], [(64, 64), (32, 32)], 0.05, NMS, 100)[0]
    assert empty.boxes.tensor.shape == (0, 4) and empty.scores.shape == (0,) and empty.labels.shape == (0,)


def test_config_errors():
    with pytest.raises(ConfigError, match="softmax"):
        Shared2FCBBoxHead(loss_cls=_sigmoid_ce())
    with pytest.raises(ConfigError, match="num_classes"):
        Shared2FCBBoxHead(num_classes=0)


def _sigmoid_ce():
    from detcli.models.losses import CrossEntropyLoss

    return CrossEntropyLoss(use_sigmoid=True)
