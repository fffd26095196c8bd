"""YOLOX: SimOTA on hand-computed cases, the head's losses on a hand case, the template's one
candidate per prior (inclusive threshold, no clipping, export form = eager), CSPDarknet / PAFPN
shapes and options, presets, mmdet key map and ONNX export parity."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from detcli.config import load_config
from detcli.models.assigners import SimOTAAssigner
from detcli.models.backbones import CSPDarknet
from detcli.models.dense_head import level_candidates
from detcli.models.detector import DenseTestConfig, DenseTrainConfig
from detcli.models.necks import YOLOXPAFPN
from detcli.models.weight_maps import convert_state_dict
from detcli.models.yolox import YOLOX, YOLOXHead, decode_yolox
from detcli.registry import DETECTORS, build
from detcli.structures import Boxes, GroundTruth, ImageBatch

ROOT = Path(__file__).resolve().parents[2]


def points(*xy: tuple[float, float], stride: float = 8.0) -> torch.Tensor:
    """SimOTA priors (x, y, stride_w, stride_h) at the given cell centres."""
    return torch.tensor([[x, y, stride, stride] for x, y in xy], dtype=torch.float64)


# --------------------------------------------------------------------------- SimOTA


def test_simota_dynamic_k_takes_the_two_best_priors() -> None:
    """IoUs 1, 0.9375, 0.25, 1/16 sum to 2.25: k = 2, the two lowest costs (equal scores: by IoU)."""
    priors = points((4, 4), (12, 4), (20, 4), (28, 4), (100, 100))
    gt = torch.tensor([[0.0, 0, 32, 32]], dtype=torch.float64)
    preds = torch.tensor([[0.0, 0, 32, 32], [0, 0, 32, 30], [0, 0, 16, 16], [0, 0, 8, 8], [96, 96, 104, 104]],
                         dtype=torch.float64)
    scores = torch.full((5, 2), 0.5, dtype=torch.float64)
    gt_inds, ious = SimOTAAssigner().assign_single(priors, gt, torch.tensor([0]), preds, scores)
    assert gt_inds.tolist() == [1, 1, 0, 0, 0]
    assert ious.tolist() == [1.0, 0.9375, 0.0, 0.0, 0.0]


def test_simota_prior_taken_by_two_gts_goes_to_the_cheaper() -> None:
    """Both GTs (k = 1 each) pick prior 0 (IoU 7/9 with each); its class scores make GT 0 cheaper."""
    priors = points((16, 16), (24, 16))
    gts = torch.tensor([[0.0, 0, 32, 32], [8, 0, 40, 32]], dtype=torch.float64)
    preds = torch.tensor([[4.0, 0, 36, 32], [20, 20, 28, 28]], dtype=torch.float64)
    scores = torch.tensor([[0.9, 0.1], [0.5, 0.5]], dtype=torch.float64)
    assigner = SimOTAAssigner()
    # the cost by hand: cls BCE summed over classes + 3 * -log(IoU + 1e-7)
    iou = 896 / 1152
    cost_a = -2 * math.log(0.9) + 3 * -math.log(iou + 1e-7)
    cost_b = -2 * math.log(0.1) + 3 * -math.log(iou + 1e-7)
    cost_b_p1 = 2 * math.log(2) + 3 * -math.log(64 / 1024 + 1e-7)
    assert cost_a < cost_b < cost_b_p1  # so GT 1 also wants prior 0, and loses it
    gt_inds, ious = assigner.assign_single(priors, gts, torch.tensor([0, 1]), preds, scores)
    assert gt_inds.tolist() == [1, 0]
    assert ious[0].item() == pytest.approx(iou, abs=1e-12)


def test_simota_empty_gt_and_no_candidate_region() -> None:
    priors = points((4, 4), (12, 4))
    preds = torch.tensor([[0.0, 0, 8, 8], [8, 0, 16, 8]], dtype=torch.float64)
    scores = torch.full((2, 3), 0.5, dtype=torch.float64)
    a = SimOTAAssigner()
    gt_inds, ious = a.assign_single(priors, torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.long),
                                    preds, scores)
    assert gt_inds.tolist() == [0, 0] and ious.tolist() == [0.0, 0.0]
    # a GT far from every prior: outside every box and centre region (radius 2.5 * 8 = 20)
    far = torch.tensor([[100.0, 100, 110, 110]], dtype=torch.float64)
    gt_inds, ious = a.assign_single(priors, far, torch.tensor([1]), preds, scores)
    assert gt_inds.tolist() == [0, 0]
    # centre region edge is strict: a prior exactly 20 px from the GT centre is not a candidate
    edge = torch.tensor([[24.0, -6, 24, 14]], dtype=torch.float64)  # centre (24, 4): prior (4, 4) at 20 px
    valid, _ = a.candidates(points((4, 4), (5, 4)), edge)
    assert valid.tolist() == [False, True]


def test_simota_batch_maps_padded_gt_indices() -> None:
    priors = points((4, 4), (12, 4), (20, 4), (28, 4))
    gt = torch.tensor([[[0.0, 0, 0, 0], [0, 0, 32, 32]]], dtype=torch.float64)  # GT 0 is padding
    valid = torch.tensor([[False, True]])
    preds = torch.tensor([[[0.0, 0, 32, 32], [0, 0, 32, 30], [0, 0, 16, 16], [0, 0, 8, 8]]], dtype=torch.float64)
    scores = torch.full((1, 4, 2), 0.5, dtype=torch.float64)
    gt_inds, ious = SimOTAAssigner().assign_batch(priors, gt, valid, pred_bboxes=preds, pred_scores=scores,
                                                  gt_labels=torch.tensor([[0, 1]]))
    assert gt_inds.tolist() == [[2, 2, 0, 0]]
    with pytest.raises(ValueError, match="needs pred_bboxes"):
        SimOTAAssigner().assign_batch(priors, gt, valid)


# --------------------------------------------------------------------------- head


def constant_head(num_classes: int = 2) -> YOLOXHead:
    """One level (stride 8), no towers, zero weights: every prior predicts logits 0 and a stride-size box."""
    head = YOLOXHead(num_classes, 4, feat_channels=4, stacked_convs=0, strides=(8,))
    for conv in [*head.multi_level_conv_cls, *head.multi_level_conv_reg, *head.multi_level_conv_obj]:
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    return head.double()


def test_head_losses_on_a_hand_case() -> None:
    """4x4 priors at (0, 8, 16, 24)^2, boxes of side 8 centred on them; GT (0, 0, 16, 16) class 1.

    IoUs of the 9 candidates: 0.25 (prior (8, 8)), four 1/9, four 1/19: sum 0.905 -> k = 1: prior (8, 8)
    with IoU 0.25. Per positive / over all: cls 2 log 2 (logit 0 gives log 2 for any target), obj 16 log 2,
    bbox 5 (1 - 0.25^2), l1 |(0, 0, log 2, log 2)| = 2 log 2; one positive.
    """
    head = constant_head()
    feats = (torch.zeros(1, 4, 4, 4, dtype=torch.float64),)
    images = ImageBatch(torch.zeros(1, 3, 32, 32, dtype=torch.float64), [(32, 32)])
    target = GroundTruth((32, 32), Boxes(torch.tensor([[0.0, 0, 16, 16]])), torch.tensor([1]))
    cfg = DenseTrainConfig(assigner=SimOTAAssigner())
    losses = head.loss(feats, images, [target], cfg)
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_obj"}
    assert losses["loss_cls"].item() == pytest.approx(2 * math.log(2), abs=1e-12)
    assert losses["loss_obj"].item() == pytest.approx(16 * math.log(2), abs=1e-12)
    assert losses["loss_bbox"].item() == pytest.approx(5 * (1 - 0.25 ** 2), abs=1e-12)
    head.use_l1 = True
    losses = head.loss(feats, images, [target], cfg)
    assert losses["loss_l1"].item() == pytest.approx(2 * math.log(2 + 1e-8), abs=1e-12)
    # no ground truth: objectness over all priors (normalised by 1), zero but connected cls / bbox / l1
    empty = GroundTruth((32, 32), Boxes(torch.zeros(0, 4)), torch.zeros(0, dtype=torch.long))
    losses = head.loss(feats, images, [empty], cfg)
    assert losses["loss_obj"].item() == pytest.approx(16 * math.log(2), abs=1e-12)
    assert losses["loss_cls"].item() == losses["loss_bbox"].item() == losses["loss_l1"].item() == 0.0
    assert all(v.requires_grad for v in losses.values())


def test_decode_and_one_candidate_per_prior_with_inclusive_threshold() -> None:
    # centre (0.5 * 8 + 8, -0.25 * 8 + 16) = (12, 14), size (8, 2 * 8)
    assert decode_yolox(torch.tensor([[8.0, 16.0]]), torch.tensor([[0.5, -0.25, 0.0, math.log(2)]]), 8.0).tolist() \
        == [[8.0, 6.0, 16.0, 22.0]]
    head = constant_head(num_classes=3)
    # prior 0: class logits (0, 1, -1), objectness 0 -> best class 1, score sigmoid(1) / 2; prior 1: all 0 -> 0.25
    cls = torch.tensor([[[0.0, 1.0, -1.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    reg = torch.zeros(1, 2, 4, dtype=torch.float64)
    obj = torch.zeros(1, 2, 1, dtype=torch.float64)
    priors = torch.tensor([[0.0, 0.0], [8.0, 0.0]], dtype=torch.float64)
    for padded in (False, True):
        c = level_candidates(head, 0, [cls, reg, obj], priors, 0.25, -1, (4, 4), padded)
        order = c.scores[0].argsort(descending=True)
        assert c.labels[0][order].tolist() == [1, 0]  # one candidate per prior, first max on ties
        assert c.scores[0][order].tolist() == [torch.sigmoid(torch.tensor(1.0, dtype=torch.float64)).item() / 2, 0.25]
        # not clipped to max_shape (4, 4): mmdet's YOLOX does not clip
        assert c.boxes[0][order].tolist() == [[-4.0, -4.0, 4.0, 4.0], [4.0, -4.0, 12.0, 4.0]]
        c = level_candidates(head, 0, [cls, reg, obj], priors, 0.2501, -1, None, padded)
        assert (c.scores[0] >= 0).sum().item() == 1


def test_export_form_equals_predict() -> None:
    g = torch.Generator().manual_seed(0)
    head = YOLOXHead(3, 8, feat_channels=8, stacked_convs=0).eval()
    sizes = [(8, 12), (4, 6), (2, 3)]
    outs = ([torch.randn(2, 3, h, w, generator=g) for h, w in sizes],
            [torch.randn(2, 4, h, w, generator=g) * 0.5 for h, w in sizes],
            [torch.randn(2, 1, h, w, generator=g) for h, w in sizes])
    cfg = DenseTestConfig.parse({"nms_pre": -1, "score_thr": 0.2, "max_per_img": 20,
                                 "nms": {"type": "nms", "iou_threshold": 0.65}})
    images = torch.zeros(2, 3, 64, 96)
    dets, labels = head.export(outs, images, cfg, -1, 200)
    expected = head.postprocess(outs, ImageBatch(images, [(64, 96), (64, 96)]), cfg)
    for i, e in enumerate(expected):
        n = len(e)
        assert 0 < n <= 20
        assert torch.equal(labels[i, :n], e.labels) and (labels[i, n:] == -1).all()
        torch.testing.assert_close(dets[i, :n, 4], e.scores, rtol=1.2e-7, atol=0)
        torch.testing.assert_close(dets[i, :n, :4], e.boxes.tensor, rtol=0, atol=0)
    # some boxes reach outside the image: neither form clips them
    assert any((e.boxes.tensor[:, :2] < 0).any() for e in expected)


# --------------------------------------------------------------------------- backbone, neck, detector


def test_csp_darknet_shapes_options_and_mmdet_names() -> None:
    m = CSPDarknet(deepen_factor=0.33, widen_factor=0.25, out_indices=(1, 2, 3, 4), frozen_stages=1, norm_eval=True)
    outs = m(torch.rand(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 16, 24), (1, 64, 8, 12), (1, 128, 4, 6), (1, 256, 2, 3)]
    bn = m.stem.conv.bn
    assert (bn.eps, bn.momentum) == (0.001, 0.03)
    assert not any(p.requires_grad for p in [*m.stem.parameters(), *m.stage1.parameters()])
    assert all(p.requires_grad for p in m.stage2.parameters())
    m.train()
    assert not any(x.training for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d))
    names = set(m.state_dict())
    assert {"stem.conv.conv.weight", "stage1.0.conv.weight", "stage1.1.blocks.0.conv2.bn.running_mean",
            "stage4.1.conv2.conv.weight", "stage4.2.final_conv.bn.weight"} <= names
    assert len(m.stage2[1].blocks) == 3 and len(m.stage1[1].blocks) == 1  # round(9 * 0.33), max(round(3 * .33), 1)
    dw = CSPDarknet(deepen_factor=0.33, widen_factor=0.25, use_depthwise=True)
    assert "stage1.0.depthwise_conv.conv.weight" in dw.state_dict()
    assert [tuple(o.shape) for o in dw(torch.rand(1, 3, 64, 64))] == [(1, 64, 8, 8), (1, 128, 4, 4), (1, 256, 2, 2)]


def test_pafpn_shapes() -> None:
    neck = YOLOXPAFPN([16, 32, 64], 24, num_csp_blocks=1)
    outs = neck([torch.rand(2, 16, 8, 12), torch.rand(2, 32, 4, 6), torch.rand(2, 64, 2, 3)])
    assert [tuple(o.shape) for o in outs] == [(2, 24, 8, 12), (2, 24, 4, 6), (2, 24, 2, 3)]
    assert "reduce_layers.0.conv.weight" in neck.state_dict() and "out_convs.2.bn.weight" in neck.state_dict()


@pytest.mark.parametrize("preset", ["yolox_s_8x8_300e_coco", "yolox_tiny_8x8_300e_coco"])
def test_presets_resolve_and_build(preset: str) -> None:
    cfg = load_config(str(ROOT / "presets" / f"{preset}.yaml"))
    model = build(copy.deepcopy(cfg["model"]), DETECTORS, path="model")
    assert isinstance(model, YOLOX) and isinstance(model.train_settings.assigner, SimOTAAssigner)
    assert model.train_settings.assigner.center_radius == 2.5
    t = model.test_settings
    assert (t.score_thr, t.iou_threshold, t.nms_pre, t.max_per_img) == (0.01, 0.65, -1, 100)
    widen = 0.5 if "_s_" in preset else 0.375
    assert model.backbone.stem.conv.conv.out_channels == int(64 * widen)
    assert model.bbox_head.use_l1 is False
    assert cfg["zoo"]["box_ap"] == (40.5 if "_s_" in preset else 32.0)
    n = sum(p.numel() for p in model.parameters())
    assert (8.9e6 < n < 9.1e6) if "_s_" in preset else (5.0e6 < n < 5.1e6)  # YOLOX-s 8.97M, tiny 5.06M


def test_mmdet_key_map_drops_ema_buffers() -> None:
    model = YOLOX(CSPDarknet(deepen_factor=0.33, widen_factor=0.125), YOLOXPAFPN([32, 64, 128], 16, num_csp_blocks=1),
                  YOLOXHead(2, 16, feat_channels=16))
    sd = model.state_dict()
    with_ema = {**sd, **{"ema_" + k.replace(".", "_"): v for k, v in sd.items() if "running" not in k}}
    converted = convert_state_dict("mmdet", model, with_ema)
    assert set(converted) == set(sd)


# --------------------------------------------------------------------------- ONNX


@pytest.mark.slow
def test_onnx_export_parity(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from detcli.engine.builders import build_model
    from detcli.engine.checkpoint import atomic_save, make_checkpoint
    from detcli.engine.onnx_export import export_onnx

    cfg = load_config(str(ROOT / "presets" / "quickstart.yaml"),
                      ["data.test.num_images=2", "data.test.img_size=64", "data.test.pipeline.1.img_scale=[64,64]"])
    base = load_config(str(ROOT / "presets" / "_base_" / "models" / "yolox_tiny.yaml"))["model"]
    base["backbone"]["widen_factor"] = 0.125
    base["neck"].update(in_channels=[32, 64, 128], out_channels=16)
    base["bbox_head"].update(num_classes=4, in_channels=16, feat_channels=16)
    cfg["model"] = base
    torch.manual_seed(0)
    model = build_model(cfg)
    head = model.bbox_head  # spread the scores and boxes: no near-ties in the parity check
    for conv in [*head.multi_level_conv_cls, *head.multi_level_conv_obj, *head.multi_level_conv_reg]:
        torch.nn.init.normal_(conv.weight, std=3.0)
        torch.nn.init.constant_(conv.bias, 0.5)
    ckpt = tmp_path / "yolox.pth"
    atomic_save(make_checkpoint(model, epoch=0, iter=0, config=cfg, classes=["rectangle", "ellipse", "triangle", "cross"]),
                ckpt)
    result = export_onnx(None, ckpt, output_file=tmp_path / "yolox.onnx", dynamic_export=True)
    report = result.verify
    assert report is not None and report.passed, report.rows
    # boxes are not clipped in the graph (nor eagerly): the gate compares them clipped to the image, where
    # distinct boxes can coincide; all but near-ties match
    assert all(r.torch_dets == r.onnx_dets > 0 and r.matched >= 0.95 * r.torch_dets for r in report.rows), report.rows
