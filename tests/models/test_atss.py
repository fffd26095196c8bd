"""ATSSHead / ATSS: centerness targets, loss reductions (mmdet 2.x), empty ground truth, config errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import detcli.models  # noqa: F401  (registers the components)
from detcli.config import load_config
from detcli.errors import ConfigError
from detcli.models.assigners import ATSSAssigner
from detcli.models.atss import ATSS, ATSSHead, anchor_centerness
from detcli.registry import DETECTORS, build
from detcli.structures import Boxes, GroundTruth, ImageBatch, box_overlaps

ROOT = Path(__file__).resolve().parents[2]


def tiny_model() -> ATSS:
    cfg = load_config(str(ROOT / "presets" / "atss_r18_fpn_shapes.yaml"))["model"]
    cfg["neck"]["out_channels"] = 16
    cfg["bbox_head"].update(in_channels=16, feat_channels=16, stacked_convs=1,
                            norm_cfg={"type": "GN", "num_groups": 4, "requires_grad": True})
    torch.manual_seed(0)
    return build(cfg, DETECTORS, path="model")


def batch(with_gt: bool = True) -> tuple[ImageBatch, list[GroundTruth]]:
    images = ImageBatch(torch.randn(2, 3, 64, 64), [(64, 64), (64, 48)])
    if with_gt:
        boxes = [torch.tensor([[4.0, 6, 30, 40], [20, 20, 60, 50]]), torch.tensor([[10.0, 10, 40, 34]])]
        labels = [torch.tensor([0, 3]), torch.tensor([2])]
    else:
        boxes, labels = [torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2
    targets = [GroundTruth(s, Boxes(b), lab) for s, b, lab in zip(images.image_sizes, boxes, labels)]
    return images, targets


def test_anchor_centerness_hand_values():
    anchors = torch.tensor([[0.0, 0, 8, 8], [8, 8, 24, 24]])  # centres (4, 4), (16, 16)
    gts = torch.tensor([[0.0, 0, 16, 8], [0, 0, 32, 32]])
    # (l, t, r, b) = (4, 4, 12, 4): sqrt(4/12 * 4/4); (16, 16, 16, 16): 1
    torch.testing.assert_close(anchor_centerness(anchors, gts), torch.tensor([math.sqrt(1 / 3), 1.0]))


def test_defaults_match_mmdet_config():
    head = ATSSHead(num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
                    norm_cfg={"type": "GN", "num_groups": 4})
    gen = head.anchor_generator
    assert gen.num_base_priors == [1] * 5 and head.num_anchors == 1
    assert head.bbox_coder.stds == (0.1, 0.1, 0.2, 0.2) and head.loss_bbox.loss_weight == 2.0
    assert head.cls_convs[0][0].bias is None  # GN tower: no conv bias
    assert abs(float(head.atss_cls.bias[0].detach()) - math.log(0.01 / 0.99)) < 1e-6
    assert isinstance(ATSS.default_assigner, ATSSAssigner) and ATSS.default_assigner.topk == 9
    feats = tuple(torch.randn(1, 8, s, s) for s in (8, 4, 2, 1, 1))
    cls, reg, ctr = head(feats)
    assert [c.shape[1] for c in cls] == [3] * 5 and reg[0].shape[1] == 4 and ctr[0].shape[1] == 1


def test_loss_reductions_follow_mmdet_2x():
    model = tiny_model()
    model.train()
    images, targets = batch()
    losses = model(images, targets)
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_centerness"}
    # recompute loss_bbox and loss_centerness from the head's own targets and outputs
    head = model.bbox_head
    feats = model.extract_feat(images.tensor)
    cls, reg, ctr = head(feats)
    sizes = [tuple(c.shape[-2:]) for c in cls]
    anchors = head.level_priors(sizes, reg[0].dtype, reg[0].device, images)
    anchors = torch.cat(anchors)
    labels, _, pos_b, pos_n, pos_gt, num_total = head.get_targets(anchors, sizes, images, targets, model.train_settings)
    assert len(pos_n) > 0
    per_image = [int((pos_b == i).sum()) for i in range(2)]
    assert num_total == sum(max(k, 1) for k in per_image)
    reg_flat = torch.cat([r.permute(0, 2, 3, 1).reshape(2, -1, 4) for r in reg], 1)
    ctr_flat = torch.cat([c.permute(0, 2, 3, 1).reshape(2, -1) for c in ctr], 1)
    w = anchor_centerness(anchors[pos_n], pos_gt)
    decoded = head.bbox_coder.decode(anchors[pos_n], reg_flat[pos_b, pos_n])
    giou = box_overlaps(decoded, pos_gt, mode="giou", is_aligned=True)
    want_bbox = 2.0 * (w * (1 - giou)).sum() / max(float(w.sum()), 1.0)
    want_ctr = F.binary_cross_entropy_with_logits(ctr_flat[pos_b, pos_n], w, reduction="sum") / num_total
    torch.testing.assert_close(losses["loss_bbox"], want_bbox, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["loss_centerness"], want_ctr, rtol=1e-5, atol=1e-6)
    # the second image is 64x48 in a 64x64 batch: anchors right of x=48 are left out (label weight 0)
    assert labels.shape == (2, anchors.shape[0])


def test_empty_ground_truth_zero_box_losses_with_gradient():
    model = tiny_model()
    model.train()
    images, targets = batch(with_gt=False)
    losses = model(images, targets)
    assert float(losses["loss_bbox"]) == 0.0 and float(losses["loss_centerness"]) == 0.0
    assert torch.isfinite(losses["loss_cls"]) and float(losses["loss_cls"]) > 0
    sum(losses.values()).backward()
    assert model.bbox_head.atss_reg.weight.grad is not None
    assert model.bbox_head.atss_centerness.weight.grad is not None


def test_predict_scores_are_class_times_centerness():
    model = tiny_model().eval()
    images, _ = batch()
    torch.nn.init.constant_(model.bbox_head.atss_cls.bias, 2.0)  # every (anchor, class) above score_thr
    dets = model(images)
    assert len(dets) == 2 and all(len(d) > 0 for d in dets)
    with torch.no_grad():
        cls, _, ctr = model.bbox_head(model.extract_feat(images.tensor))
    scores = torch.cat([(c[0].sigmoid() * t[0].sigmoid()).flatten() for c, t in zip(cls, ctr)])
    assert float(dets[0].scores[0]) == pytest.approx(float(scores.max()), rel=1e-5)


def test_config_errors():
    with pytest.raises(ConfigError, match="reg_decoded_bbox"):
        ATSSHead(num_classes=2, in_channels=8, reg_decoded_bbox=False)
    with pytest.raises(ConfigError, match="conv_cfg"):
        ATSSHead(num_classes=2, in_channels=8, conv_cfg={"type": "Conv2d"})
    cfg = load_config(str(ROOT / "presets" / "atss_r18_fpn_shapes.yaml"))["model"]
    cfg["bbox_head"] = {"type": "RetinaHead", "num_classes": 4, "in_channels": 64}
    with pytest.raises(ConfigError, match="ATSS needs a head of type ATSSHead"):
        build(cfg, DETECTORS, path="model")


def test_mmdet_atss_file_guesses_the_atss_preset():
    from detcli.tools.conversion import guess_preset

    sd = {"bbox_head.atss_centerness.weight": torch.zeros(1), "bbox_head.atss_cls.weight": torch.zeros(1)}
    assert guess_preset(sd, "mmdet") == "atss_r50_fpn_1x_coco"
