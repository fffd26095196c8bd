"""GFL: Quality / Distribution Focal Loss and the integral on hand-computed values, GFLHead's targets
and losses on a small case (a scripted assigner), empty ground truth, decoding and the export form."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

from detcli.config import load_config
from detcli.errors import ConfigError
from detcli.models.assigners import IGNORE, ATSSAssigner
from detcli.models.detector import DenseTestConfig, DenseTrainConfig
from detcli.models.gfl import GFL, GFLHead, Integral
from detcli.models.losses import DistributionFocalLoss, GIoULoss, QualityFocalLoss, quality_focal_loss
from detcli.models.priors import AnchorGenerator
from detcli.registry import DETECTORS, build
from detcli.structures import Boxes, GroundTruth, ImageBatch

ROOT = Path(__file__).resolve().parents[2]
LN2 = math.log(2)


def bce(p: float, t: float) -> float:
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


# --------------------------------------------------------------------------- Quality Focal Loss


def test_qfl_target_one_zero_and_fraction_at_logit_zero() -> None:
    """p = 0.5 everywhere: a negative pair costs ln2 * 0.25; a positive ln2 * |t - 0.5|^2 (BCE at logit 0 is ln2)."""
    qfl = QualityFocalLoss()
    pred = torch.zeros(4, 2, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2])  # 2 = background
    scores = torch.tensor([1.0, 0.0, 0.5, 0.0], dtype=torch.float64)
    per_prior = qfl(pred, (labels, scores), reduction_override="none")
    assert per_prior.tolist() == pytest.approx([0.5 * LN2, 0.5 * LN2, 0.25 * LN2, 0.5 * LN2], abs=1e-15)
    assert float(qfl(pred, (labels, scores))) == pytest.approx(1.75 * LN2 / 4, abs=1e-15)
    assert float(qfl(pred, (labels, scores), avg_factor=2.0)) == pytest.approx(1.75 * LN2 / 2, abs=1e-15)
    weight = torch.tensor([1.0, 0.0, 2.0, 0.0], dtype=torch.float64)
    assert float(qfl(pred, (labels, scores), weight, avg_factor=1.0)) == pytest.approx(LN2, abs=1e-15)


def test_qfl_modulating_factor_beta_and_activated_form() -> None:
    # p = 0.75 on the positive's class with IoU target 0.25; the other class p = 0.2
    pred = torch.tensor([[math.log(3), math.log(0.25)]], dtype=torch.float64)
    target = (torch.tensor([0]), torch.tensor([0.25], dtype=torch.float64))
    pos = bce(0.75, 0.25) * 0.5 ** 2
    neg = bce(0.2, 0.0) * 0.2 ** 2
    assert float(QualityFocalLoss()(pred, target)) == pytest.approx(pos + neg, abs=1e-14)
    assert float(QualityFocalLoss(beta=1.0)(pred, target)) == pytest.approx(bce(0.75, 0.25) * 0.5 + neg / 0.2, abs=1e-14)
    prob = QualityFocalLoss(activated=True, loss_weight=2.0)(pred.sigmoid(), target)
    assert float(prob) == pytest.approx(2 * (pos + neg), abs=1e-12)


def test_qfl_gradient_vanishes_when_the_prediction_equals_its_target() -> None:
    pred = torch.tensor([[0.0]], dtype=torch.float64, requires_grad=True)
    quality_focal_loss(pred, torch.tensor([0]), torch.tensor([0.5], dtype=torch.float64)).sum().backward()
    assert float(pred.grad.abs().max()) == 0.0


def test_qfl_rejects_softmax() -> None:
    with pytest.raises(ValueError, match="use_sigmoid"):
        QualityFocalLoss(use_sigmoid=False)


# --------------------------------------------------------------------------- Distribution Focal Loss


def test_dfl_integer_and_fractional_targets() -> None:
    # logits (0, ln3, 0): softmax (1/5, 3/5, 1/5)
    pred = torch.tensor([[0.0, math.log(3), 0.0]] * 4, dtype=torch.float64)
    target = torch.tensor([1.0, 0.0, 0.25, 1.5], dtype=torch.float64)
    got = DistributionFocalLoss()(pred, target, reduction_override="none")
    ce = [math.log(5), math.log(5 / 3), math.log(5)]  # CE at bins 0, 1, 2
    assert got.tolist() == pytest.approx([ce[1], ce[0], 0.75 * ce[0] + 0.25 * ce[1], 0.5 * ce[1] + 0.5 * ce[2]],
                                         abs=1e-14)
    weight = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    loss = DistributionFocalLoss(loss_weight=0.25)(pred, target, weight, avg_factor=4.0)
    assert float(loss) == pytest.approx(0.25 * (ce[1] + ce[0]) / 4, abs=1e-14)


# --------------------------------------------------------------------------- Integral


def test_integral_is_the_expectation_over_the_bins() -> None:
    integral = Integral(4)
    assert integral.project.tolist() == [0, 1, 2, 3, 4]
    assert integral(torch.zeros(3, 20)).tolist() == [[2.0] * 4] * 3  # uniform: the mean bin
    x = torch.full((1, 4, 5), -1e4)
    x[0, 0, 3] = 0  # all mass on bin 3
    x[0, 1, 0] = x[0, 1, 1] = 0  # half on 0, half on 1
    x[0, 2, 4] = 0
    x[0, 3, 1] = x[0, 3, 3] = 0
    assert integral(x.reshape(1, 20)).tolist() == [[3.0, 0.5, 4.0, 2.0]]
    assert integral(torch.zeros(2, 7, 20)).shape == (2, 7, 4)  # leading dims kept


# --------------------------------------------------------------------------- the head on a small case


class ScriptedAssigner:
    """Returns fixed codes and records what the head passes (the assigner interface)."""

    needs_predictions = False

    def __init__(self, gt_inds: Tensor) -> None:
        self.gt_inds = gt_inds
        self.calls: list[dict] = []

    def assign_batch(self, priors, gt_bboxes, gt_valid, gt_bboxes_ignore=None, ignore_valid=None, prior_valid=None,
                     *, num_level_priors=None, pred_bboxes=None, pred_scores=None):
        self.calls.append({"priors": priors, "num_level_priors": list(num_level_priors)})
        return self.gt_inds.clone(), torch.zeros(self.gt_inds.shape, dtype=priors.dtype)


def small_head(reg_max: int = 4) -> GFLHead:
    """2 classes, no tower, strides 8 and 16 (image 32x32: 4x4 + 2x2 = 20 anchors); zero regression
    (uniform bins: every distance reg_max / 2 strides) and the class-bias prior (p = 0.01)."""
    head = GFLHead(2, 4, stacked_convs=0, norm_cfg=None, reg_max=reg_max,
                   anchor_generator=AnchorGenerator(strides=(8, 16), ratios=(1.0,), octave_base_scale=8,
                                                    scales_per_octave=1)).double()
    torch.nn.init.zeros_(head.gfl_cls.weight)
    torch.nn.init.constant_(head.gfl_cls.bias, -math.log(99))  # p = 0.01 exactly in float64
    torch.nn.init.zeros_(head.gfl_reg.weight)
    torch.nn.init.zeros_(head.gfl_reg.bias)
    return head


def feats(b: int = 1) -> tuple[Tensor, ...]:
    return (torch.randn(b, 4, 4, 4, dtype=torch.float64), torch.randn(b, 4, 2, 2, dtype=torch.float64))


def test_defaults_follow_mmdet() -> None:
    head = GFLHead(80, 256)
    gen = head.anchor_generator
    assert gen.num_base_priors == [1] * 5 and head.strides == (8.0, 16.0, 32.0, 64.0, 128.0)
    assert head.reg_max == 16 and head.gfl_reg.out_channels == 68 and head.output_channels == (80, 68)
    assert isinstance(head.loss_cls, QualityFocalLoss) and head.loss_cls.beta == 2.0 and head.loss_cls.loss_weight == 1.0
    assert isinstance(head.loss_dfl, DistributionFocalLoss) and head.loss_dfl.loss_weight == 0.25
    assert isinstance(head.loss_bbox, GIoULoss) and head.loss_bbox.loss_weight == 2.0
    assert isinstance(head.cls_convs[0][1], torch.nn.GroupNorm) and head.cls_convs[0][0].bias is None
    assert float(head.gfl_cls.bias[0].detach()) == pytest.approx(-math.log(99))
    # base anchor 8 * stride wide, centred on the location
    assert head.level_priors([(1, 1)] * 5, torch.float32, torch.device("cpu"),
                             ImageBatch(torch.zeros(1, 3, 8, 8), [(8, 8)]))[0].tolist() == [[-32, -32, 32, 32]]


def test_head_rejects_what_it_cannot_do() -> None:
    with pytest.raises(ConfigError, match="one anchor per location"):
        GFLHead(2, 4, anchor_generator=AnchorGenerator(strides=(8,), ratios=(0.5, 1.0), octave_base_scale=8,
                                                       scales_per_octave=1))
    with pytest.raises(ConfigError, match="reg_decoded_bbox"):
        GFLHead(2, 4, reg_decoded_bbox=False)
    with pytest.raises(ConfigError, match="conv_cfg"):
        GFLHead(2, 4, conv_cfg={"type": "DCNv2"})


def test_targets_and_losses_on_a_small_case() -> None:
    """One GT [0, 0, 32, 32] (class 1) on the 32x32 image, positive at level 0, location (2, 2) (anchor
    centre (16, 16)): the uniform bins decode to 2 strides each side = exactly the GT, so the IoU
    target is 1, GIoU 0 and every DFL target the integer bin 2. Prior 5 is ignored."""
    head = small_head()
    gt_inds = torch.zeros(1, 20, dtype=torch.long)
    gt_inds[0, 10] = 1
    gt_inds[0, 5] = IGNORE
    assigner = ScriptedAssigner(gt_inds)
    images = ImageBatch(torch.zeros(1, 3, 32, 32, dtype=torch.float64), [(32, 32)])
    target = GroundTruth((32, 32), Boxes(torch.tensor([[0.0, 0, 32, 32]])), torch.tensor([1]))
    cfg = DenseTrainConfig(assigner=assigner)
    losses = head.loss(feats(), images, [target], cfg)
    assert assigner.calls[0]["num_level_priors"] == [16, 4]
    assert assigner.calls[0]["priors"][10].tolist() == [-16, -16, 48, 48]
    # get_targets directly
    anchors = torch.cat(head.level_priors([(4, 4), (2, 2)], torch.float64, torch.device("cpu"), images))
    strides = torch.tensor([8.0] * 16 + [16.0] * 4, dtype=torch.float64)
    cls_flat = torch.full((1, 20, 2), -math.log(99), dtype=torch.float64)
    labels, label_weights, pos_b, pos_n, pos_gt, num_pos = head.get_targets(
        anchors, strides, [(4, 4), (2, 2)], images, [target], cfg, cls_flat, torch.zeros(1, 20, 20))
    assert pos_n.tolist() == [10] and pos_b.tolist() == [0] and pos_gt.tolist() == [[0, 0, 32, 32]]
    assert labels[0, 10] == 1 and int((labels == 2).sum()) == 19
    assert label_weights[0, 5] == 0 and float(label_weights.sum()) == 19 and num_pos == 1.0
    # losses by hand: p = 0.01 everywhere
    p = 0.01
    neg_pair = bce(p, 0) * p ** 2
    # 18 negatives x 2 classes, the positive's other class, the positive (prior 5 has weight 0)
    want_cls = 18 * 2 * neg_pair + (neg_pair + bce(p, 1) * (1 - p) ** 2)
    assert float(losses["loss_cls"].detach()) == pytest.approx(want_cls, rel=1e-12)
    assert float(losses["loss_bbox"].detach()) == pytest.approx(0.0, abs=1e-14)
    # DFL: 4 distances x CE(uniform over 5 bins) x weight p, / 4, / max(sum of weights, 1) = 1, x 0.25
    assert float(losses["loss_dfl"].detach()) == pytest.approx(0.25 * p * math.log(5), rel=1e-12)


def test_bbox_and_dfl_are_divided_by_the_weight_sum_once_it_exceeds_one() -> None:
    """Class bias logit 3 (p = sigmoid(3)): two positives, weights sum 2p > 1, so the per-positive
    weights cancel out: loss_dfl = 0.25 * ln5 (mean of the two), loss_bbox = 2 * GIoU-loss mean."""
    head = small_head()
    torch.nn.init.constant_(head.gfl_cls.bias, 3.0)
    gt_inds = torch.zeros(1, 20, dtype=torch.long)
    gt_inds[0, 10] = 1
    gt_inds[0, 16] = 2  # level 1, location (0, 0): anchor centre (0, 0), decoded box [-32, -32, 32, 32]
    images = ImageBatch(torch.zeros(1, 3, 32, 32, dtype=torch.float64), [(32, 32)])
    target = GroundTruth((32, 32), Boxes(torch.tensor([[0.0, 0, 32, 32], [0.0, 0, 32, 32]])), torch.tensor([1, 0]))
    losses = head.loss(feats(), images, [target], DenseTrainConfig(assigner=ScriptedAssigner(gt_inds)))
    # second positive in stride-16 units: pred [-2, -2, 2, 2], GT [0, 0, 2, 2]: IoU 1/4 = GIoU (enclosing = pred)
    assert float(losses["loss_bbox"].detach()) == pytest.approx(2.0 * (0 + 0.75) / 2, rel=1e-12)
    # DFL targets: positive 1 all bin 2; positive 2 (centre (0, 0), GT (0, 0, 2, 2)) left/top 0, right/bottom 2.
    # All integer bins, and uniform bins have CE ln5 at every bin
    ce0 = math.log(5)
    assert float(losses["loss_dfl"].detach()) == pytest.approx(0.25 * ce0, rel=1e-12)


def test_empty_ground_truth_gives_only_negative_classification() -> None:
    head = small_head()
    images = ImageBatch(torch.zeros(2, 3, 32, 32, dtype=torch.float64), [(32, 32)] * 2)
    empty = GroundTruth((32, 32), Boxes(torch.zeros(0, 4)), torch.zeros(0, dtype=torch.long))
    f = tuple(x.requires_grad_() for x in feats(2))
    losses = head.loss(f, images, [empty, empty], DenseTrainConfig(assigner=ATSSAssigner(topk=9)))
    p = 0.01
    # 2 images x 20 priors x 2 classes, / num_pos = sum_i max(0, 1) = 2
    assert float(losses["loss_cls"].detach()) == pytest.approx(2 * 20 * 2 * bce(p, 0) * p ** 2 / 2, rel=1e-12)
    assert float(losses["loss_bbox"].detach()) == 0.0 and float(losses["loss_dfl"].detach()) == 0.0
    total = sum(losses.values())
    total.backward()  # the box branch keeps a gradient path
    assert head.gfl_reg.weight.grad is not None


def test_no_assigner_is_a_config_error() -> None:
    head = small_head()
    images = ImageBatch(torch.zeros(1, 3, 32, 32, dtype=torch.float64), [(32, 32)])
    target = GroundTruth((32, 32), Boxes(torch.tensor([[0.0, 0, 32, 32]])), torch.tensor([1]))
    with pytest.raises(ConfigError, match="ATSSAssigner"):
        head.loss(feats(), images, [target], DenseTrainConfig(assigner=None))


# --------------------------------------------------------------------------- test time


def test_decode_level_integral_times_stride_from_the_anchor_centre() -> None:
    head = small_head()
    priors = torch.tensor([[[-24.0, -24, 40, 40]]], dtype=torch.float64)  # centre (8, 8)
    reg = torch.zeros(1, 1, 20, dtype=torch.float64)  # every distance 2 bins
    assert head.decode_level(0, priors, [reg], None).tolist() == [[[-8, -8, 24, 24]]]  # 2 x stride 8
    assert head.decode_level(1, priors, [reg], None).tolist() == [[[-24, -24, 40, 40]]]  # 2 x stride 16
    assert head.decode_level(0, priors, [reg], (20, 30)).tolist() == [[[0, 0, 24, 20]]]  # clipped


def test_scores_are_the_sigmoid_of_the_quality_logits_and_export_equals_predict() -> None:
    torch.manual_seed(0)
    head = GFLHead(3, 8, stacked_convs=0, reg_max=6, anchor_generator=AnchorGenerator(
        strides=(8, 16, 32), ratios=(1.0,), octave_base_scale=8, scales_per_octave=1)).eval()
    g = torch.Generator().manual_seed(1)
    sizes = [(8, 12), (4, 6), (2, 3)]
    outs = ([torch.randn(2, 3, h, w, generator=g) * 2 - 1 for h, w in sizes],
            [torch.randn(2, 28, h, w, generator=g) for h, w in sizes])
    cfg = DenseTestConfig.parse({"nms_pre": 50, "score_thr": 0.3, "max_per_img": 25})
    images = torch.zeros(2, 3, 64, 96)
    dets = head.postprocess(outs, ImageBatch(images, [(64, 96)] * 2), cfg)
    all_probs = torch.cat([c[0].permute(1, 2, 0).reshape(-1) for c in outs[0]]).sigmoid()
    assert len(dets[0]) == 25 and float(dets[0].scores[0]) == pytest.approx(float(all_probs.max()))
    assert all(float(s) > 0.3 for s in dets[0].scores)
    boxes, labels = head.export(outs, images, cfg, cfg.nms_pre, 200)
    for i, e in enumerate(dets):
        assert torch.equal(labels[i], e.labels)
        torch.testing.assert_close(boxes[i, :, 4], e.scores, rtol=1.2e-7, atol=0)
        torch.testing.assert_close(boxes[i, :, :4], e.boxes.tensor, rtol=1e-6, atol=1e-4)


# --------------------------------------------------------------------------- presets


def test_preset_equals_mmdet_config_and_builds() -> None:
    cfg = load_config(str(ROOT / "presets" / "gfl_r50_fpn_1x_coco.yaml"))
    model_cfg = cfg["model"]
    head = model_cfg["bbox_head"]
    assert head["anchor_generator"] == {"type": "AnchorGenerator", "ratios": [1.0], "octave_base_scale": 8,
                                        "scales_per_octave": 1, "strides": [8, 16, 32, 64, 128]}
    assert head["loss_cls"] == {"type": "QualityFocalLoss", "use_sigmoid": True, "beta": 2.0, "loss_weight": 1.0}
    assert head["loss_dfl"] == {"type": "DistributionFocalLoss", "loss_weight": 0.25}
    assert head["loss_bbox"] == {"type": "GIoULoss", "loss_weight": 2.0} and head["reg_max"] == 16
    assert model_cfg["train_cfg"]["assigner"] == {"type": "ATSSAssigner", "topk": 9}
    assert model_cfg["neck"]["add_extra_convs"] == "on_output" and model_cfg["test_cfg"]["nms"]["iou_threshold"] == 0.6
    assert model_cfg["backbone"]["init_cfg"] == {"type": "Pretrained", "checkpoint": "torchvision://resnet50"}
    assert cfg["optimizer"]["lr"] == 0.01
    model_cfg["backbone"]["init_cfg"] = None
    model = build(model_cfg, DETECTORS, path="model")
    assert isinstance(model, GFL) and isinstance(model.train_settings.assigner, ATSSAssigner)
    assert model.train_settings.assigner.topk == 9
    assert sum(p.numel() for p in model.bbox_head.parameters()) == 4 * 2 * (256 * 256 * 9 + 2 * 256) \
        + (256 * 80 * 9 + 80) + (256 * 68 * 9 + 68) + 5


@pytest.mark.parametrize("preset", ["gfl_r50_fpn_1x_coco", str(ROOT / "tests" / "engine" / "gfl_r18_fpn_shapes.yaml")])
def test_det_config_check_builds_the_presets(preset: str) -> None:
    from typer.testing import CliRunner

    from detcli.cli import app

    result = CliRunner().invoke(app, ["config", "check", preset])
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_tiny_gfl_overfits_one_image() -> None:
    """ResNet-18, 32-channel FPN and head from the preset, one synthetic image with three boxes: the
    losses fall and the top detections find every box with its class (as RetinaNet / FCOS in test_overfit)."""
    from detcli.structures import box_iou

    torch.manual_seed(0)
    cfg = load_config(str(ROOT / "presets" / "gfl_r50_fpn_1x_coco.yaml"))["model"]
    cfg["backbone"].update(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None)
    cfg["neck"].update(in_channels=[64, 128, 256, 512], out_channels=32)
    cfg["bbox_head"].update(num_classes=4, in_channels=32, feat_channels=32, stacked_convs=2)
    cfg["bbox_head"]["norm_cfg"]["num_groups"] = 8
    model = build(cfg, DETECTORS, path="model")
    boxes = torch.tensor([[10.0, 12, 60, 50], [70, 30, 118, 110], [20, 70, 55, 120]])
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 128, 128, generator=g) * 0.3
    for b, c in zip(boxes.int(), torch.tensor([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.2, 1.0]])):
        img[:, b[1]:b[3], b[0]:b[2]] = c[:, None, None]
    images = ImageBatch(((img - 0.45) / 0.25)[None], [(128, 128)])
    targets = [GroundTruth((128, 128), Boxes(boxes), torch.tensor([0, 1, 2]))]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    model.train()
    first = None
    for _ in range(60):
        losses = model(images, targets)
        loss = sum(losses.values())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 35)
        opt.step()
    assert loss.item() < 0.4 * first
    dets = model.eval()(images)[0]
    top = dets[torch.arange(min(len(dets), 10))]
    ious = box_iou(targets[0].boxes, top.boxes)  # (3, k)
    for k, label in enumerate(targets[0].labels.tolist()):
        same_class = top.labels == label
        assert same_class.any(), f"no detection of class {label} in the top 10"
        assert ious[k][same_class].max() > 0.5, f"box {k} not found: IoUs {ious[k]}"
