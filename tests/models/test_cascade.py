"""Cascade R-CNN: refined RoIs between stages, per-stage targets, loss weights, test-time score averaging,
configuration errors and the presets (hand-computed cases)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import detcli.models  # noqa: F401  (registers the components)
from detcli.config import load_config
from detcli.errors import ConfigError
from detcli.models.cascade import CascadeRCNN, CascadeRoIHead, CascadeTrainConfig
from detcli.models.roi_head import SampledRoIs
from detcli.registry import DETECTORS, HEADS, build
from detcli.resources import list_presets
from detcli.structures import Boxes, GroundTruth, ImageBatch

STDS = ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])


def _head_node(stds, agnostic=True, num_classes=2):
    return {"type": "Shared2FCBBoxHead", "in_channels": 4, "fc_out_channels": 8, "roi_feat_size": 2,
            "num_classes": num_classes, "reg_class_agnostic": agnostic,
            "bbox_coder": {"type": "DeltaXYWHBBoxCoder", "target_means": [0.0] * 4, "target_stds": stds}}


def _cascade(agnostic=True, weights=(1, 0.5, 0.25), mask=False) -> CascadeRoIHead:
    node = {"type": "CascadeRoIHead", "num_stages": 3, "stage_loss_weights": list(weights),
            "bbox_roi_extractor": {"type": "SingleRoIExtractor", "out_channels": 4, "featmap_strides": [4],
                                   "roi_layer": {"type": "RoIAlign", "output_size": 2, "sampling_ratio": 0}},
            "bbox_head": [_head_node(s, agnostic) for s in STDS]}
    if mask:
        node["mask_head"] = {"type": "FCNMaskHead", "num_convs": 1, "roi_feat_size": 2, "in_channels": 4,
                             "conv_out_channels": 4, "num_classes": 2}
    torch.manual_seed(0)
    return build(node, HEADS, path="model.roi_head")


def _train_cfg(thrs=(0.5, 0.6, 0.7), num=2048, pos_fraction=0.5):
    stages = [{"assigner": build({"type": "MaxIoUAssigner", "pos_iou_thr": t, "neg_iou_thr": t, "min_pos_iou": t,
                                  "match_low_quality": False}, detcli.registry.MATCHERS),
               "sampler": build({"type": "RandomSampler", "num": num, "pos_fraction": pos_fraction,
                                 "add_gt_as_proposals": True}, detcli.registry.SAMPLERS)} for t in thrs]
    return CascadeTrainConfig.parse(stages, "model.train_cfg.rcnn", 3)


def _gt(size, boxes, labels):
    return GroundTruth(size, Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
                       torch.tensor(labels, dtype=torch.long))


def test_refined_rois_use_target_class_or_argmax_foreground_and_drop_gt():
    head = _cascade(agnostic=False)
    # image 0: a GT-derived positive (dropped), a proposal positive of class 1, a negative; image 1: one negative
    rois = torch.tensor([[0, 10.0, 10, 30, 30], [0, 0, 0, 20, 20], [0, 40, 40, 60, 80], [1, 5, 5, 15, 25]])
    sampled = SampledRoIs(rois, torch.tensor([0, 1, 2, 2]), torch.zeros(4, 4), torch.tensor([0, 0, -1, -1]),
                          torch.tensor([True, False, False, False]))
    # negatives: the background logit (last) is highest, the arg-max foreground class is 1 then 0
    cls_score = torch.tensor([[0.0, 0, 0], [0, 0, 0], [0, 1, 5], [2, 1, 5]])
    deltas = torch.zeros(4, 2, 4)
    deltas[:, 1] = torch.tensor([1.0, 0, 0, 0])  # class 1: dx = 1 -> shift by 0.1 * width
    deltas[:, 0] = torch.tensor([0, 0, 0, 1.0])  # class 0: dh = 1 -> height * exp(0.2)
    images = ImageBatch(torch.zeros(2, 3, 64, 64), [(64, 64), (40, 40)])
    out = head.refine_training_rois(0, sampled, cls_score, deltas.reshape(4, 8), images)
    assert [o.shape[0] for o in out] == [2, 1]
    # RoI 1 (class 1): [0, 0, 20, 20] moved 2 px right
    assert out[0][0].tolist() == pytest.approx([2.0, 0, 22, 20])
    # RoI 2 (negative, class 1): [40, 40, 60, 80] moved 2 px right; y stays, nothing to clip in 64x64
    assert out[0][1].tolist() == pytest.approx([42.0, 40, 62, 64])
    # image 1 RoI (negative, class 0): height 20 -> 20 * exp(0.2) about its centre y = 15, clipped to 40 x 40
    half = 10 * math.exp(0.2)
    assert out[1][0].tolist() == pytest.approx([5.0, 15 - half, 15, 15 + half], abs=1e-5)


def test_refined_rois_class_agnostic_and_empty_image():
    head = _cascade(agnostic=True)
    rois = torch.tensor([[1, 0.0, 0, 10, 10]])
    sampled = SampledRoIs(rois, torch.tensor([1]), torch.zeros(1, 4), torch.tensor([0]), torch.tensor([False]))
    deltas = torch.tensor([[0.0, 1.0, 0, 0]])  # stage 1 (stds 0.05): dy -> 0.05 * 10 = 0.5 px down
    images = ImageBatch(torch.zeros(2, 3, 32, 32), [(32, 32), (32, 32)])
    out = head.refine_training_rois(1, sampled, torch.zeros(1, 3), deltas, images)
    assert out[0].shape == (0, 4)
    assert out[1].tolist() == [pytest.approx([0.0, 0.5, 10, 10.5])]


def test_stage_targets_follow_each_stage_iou_threshold():
    head = _cascade()
    cfg = _train_cfg()
    gt = [_gt((64, 64), [[0, 0, 10, 10]], [1])]
    # IoU with the GT: 100 / 120 = 0.83, 100 / 160 = 0.625, 100 / 190 = 0.53, 0 (far away)
    props = [torch.tensor([[0.0, 0, 10, 12], [0, 0, 10, 16], [0, 0, 10, 19], [30, 30, 40, 40]])]
    # label 1 (positive) or 2 (background): GT first, then the proposals
    expected = {0: [1, 1, 1, 1, 2], 1: [1, 1, 1, 2, 2], 2: [1, 1, 2, 2, 2]}
    for t, stage in enumerate(head.stages):
        sampled = stage.sample(props, gt, cfg.stages[t])
        order = sampled.rois[:, 1:].tolist()
        want_boxes = [[0.0, 0, 10, 10]] + props[0].tolist()
        assert order == want_boxes
        assert sampled.labels.tolist() == expected[t], t
        assert sampled.from_gt.tolist() == [True, False, False, False, False]


def test_stage_losses_are_weighted_and_named_per_stage():
    head = _cascade(weights=(1, 0.5, 0.25))
    plain = copy.deepcopy(head)
    plain.stage_loss_weights = (1.0, 1.0, 1.0)
    feats = (torch.randn(1, 4, 16, 16),)
    images = ImageBatch(torch.zeros(1, 3, 64, 64), [(64, 64)])
    gt = [_gt((64, 64), [[4, 4, 30, 30], [34, 20, 60, 50]], [0, 1])]
    props = [torch.tensor([[4.0, 4, 28, 32], [30, 18, 60, 52], [0, 40, 20, 60], [10, 10, 40, 40]])]
    cfg = _train_cfg()
    weighted = head.loss(feats, props, images, gt, cfg)
    unweighted = plain.loss(feats, props, images, gt, cfg)
    assert set(weighted) == {f"s{t}.{k}" for t in range(3) for k in ("loss_cls", "loss_bbox", "acc")}
    for t, w in enumerate((1, 0.5, 0.25)):
        for k in ("loss_cls", "loss_bbox"):
            assert float(weighted[f"s{t}.{k}"].detach()) == pytest.approx(w * float(unweighted[f"s{t}.{k}"].detach()),
                                                                   rel=1e-6)
        assert float(weighted[f"s{t}.acc"]) == float(unweighted[f"s{t}.acc"])  # logged, not weighted
    total = sum(v for k, v in weighted.items() if "loss" in k)
    total.backward()
    assert all(p.grad is not None for s in head.stages for p in s.bbox_head.parameters())


def test_empty_gt_trains_on_negatives_only():
    head = _cascade(mask=True)
    feats = (torch.randn(1, 4, 16, 16),)
    images = ImageBatch(torch.zeros(1, 3, 64, 64), [(64, 64)])
    gt = [GroundTruth((64, 64), Boxes(torch.zeros(0, 4)), torch.zeros(0, dtype=torch.long))]
    props = [torch.tensor([[4.0, 4, 28, 32], [30, 18, 60, 52]])]
    losses = head.loss(feats, props, images, gt, _train_cfg())
    for t in range(3):
        assert float(losses[f"s{t}.loss_bbox"]) == 0.0 and float(losses[f"s{t}.loss_mask"]) == 0.0
        assert float(losses[f"s{t}.loss_cls"]) > 0


def test_predict_averages_stage_logits_and_uses_last_stage_boxes():
    head = _cascade().eval()
    feats = (torch.randn(1, 4, 16, 16),)
    rois = torch.tensor([[0, 4.0, 4, 28, 32], [0, 30, 18, 60, 52]])
    final_rois, mean_logits, last_pred = head.forward_boxes(feats, rois, [(64, 64)])
    # by hand: run the stages one after the other
    r = rois.clone()
    logits = []
    for t, stage in enumerate(head.stages):
        cls, reg = stage.bbox_head(stage.bbox_roi_extractor(feats, r))
        logits.append(cls)
        if t < 2:
            r = torch.cat([r[:, :1], stage.bbox_head.bbox_coder.decode(r[:, 1:], reg, max_shape=(64, 64))], dim=1)
    assert torch.equal(final_rois, r)
    assert torch.allclose(mean_logits, (logits[0] + logits[1] + logits[2]) / 3)
    assert torch.equal(last_pred, reg)


def test_predict_masks_average_stage_probabilities():
    head = _cascade(mask=True).eval()
    feats = (torch.randn(1, 4, 16, 16),)
    rois = torch.tensor([[0, 4.0, 4, 28, 32]])
    probs = head.mask_probs(feats, rois)
    by_hand = sum(s.mask_head(s.mask_roi_extractor(feats, rois)).sigmoid() for s in head.stages) / 3
    assert torch.allclose(probs, by_hand)
    # one mask head given: three copies with their own weights
    w = [s.mask_head.conv_logits.weight for s in head.stages]
    assert w[0].data_ptr() != w[1].data_ptr() and not torch.equal(w[0], w[1])


def test_config_errors():
    with pytest.raises(ConfigError, match="list of 3"):
        CascadeTrainConfig.parse({"assigner": None}, "model.train_cfg.rcnn", 3)
    with pytest.raises(ConfigError, match="list of 3"):
        CascadeTrainConfig.parse([{}, {}], "model.train_cfg.rcnn", 3)
    with pytest.raises(ConfigError, match="stage_loss_weights"):
        _cascade(weights=(1, 0.5))
    node = {"type": "CascadeRoIHead", "num_stages": 3, "stage_loss_weights": [1, 1, 1],
            "bbox_roi_extractor": {"type": "SingleRoIExtractor", "out_channels": 4, "featmap_strides": [4],
                                   "roi_layer": {"type": "RoIAlign", "output_size": 2, "sampling_ratio": 0}},
            "bbox_head": [_head_node(s) for s in STDS[:2]]}
    with pytest.raises(ConfigError, match="2 entries for num_stages 3"):
        build(node, HEADS, path="model.roi_head")


CASCADE_PRESETS = sorted(p for p in list_presets() if p.stem.startswith("cascade"))


@pytest.mark.parametrize("path", CASCADE_PRESETS, ids=lambda p: p.stem)
def test_presets_build_with_mmdet_stage_settings(path):
    cfg = load_config(path)["model"]
    roi, rcnn = cfg["roi_head"], cfg["train_cfg"]["rcnn"]
    assert cfg["type"] == "CascadeRCNN" and roi["num_stages"] == 3 and roi["stage_loss_weights"] == [1, 0.5, 0.25]
    assert [h["bbox_coder"]["target_stds"] for h in roi["bbox_head"]] == list(STDS)
    assert all(h["reg_class_agnostic"] for h in roi["bbox_head"])
    assert [s["assigner"]["pos_iou_thr"] for s in rcnn] == [0.5, 0.6, 0.7]
    if "shapes" in path.stem:
        cfg["backbone"]["depth"] = 18
    else:  # no download in tests
        cfg["backbone"]["init_cfg"] = None
    model = build(cfg, DETECTORS, path="model")
    assert isinstance(model, CascadeRCNN) and len(model.roi_head.stages) == 3
    assert model.roi_head.with_mask == ("mask" in path.stem)
    assert len(model.rcnn_train.stages) == 3


def test_mmdet_key_map_round_trip_and_names():
    from detcli.models.weight_maps import convert_state_dict, describe_checkpoint
    from detcli.models.weight_maps.mmdet import to_mmdet_names

    cfg = load_config([p for p in CASCADE_PRESETS if p.stem == "cascade_mask_rcnn_r18_fpn_shapes"][0])["model"]
    model = build(cfg, DETECTORS, path="model")
    own = model.state_dict()
    mmdet = to_mmdet_names(own)
    # mmdet's layout: per-stage lists under roi_head.bbox_head.<t> / roi_head.mask_head.<t>
    assert "roi_head.bbox_head.2.shared_fcs.1.weight" in mmdet and "roi_head.mask_head.1.convs.0.conv.weight" in mmdet
    assert "roi_head.mask_head.0.conv_logits.bias" in mmdet and not any(".stages." in k for k in mmdet)
    back = convert_state_dict("mmdet", model, mmdet)
    assert set(back) == set(own) and all(torch.equal(back[k], own[k]) for k in own)
    assert "Cascade Mask R-CNN" in describe_checkpoint(mmdet)


def test_no_roi_at_all_gives_first_stage_zero_losses_and_stops():
    head = _cascade()
    feats = (torch.randn(1, 4, 16, 16),)
    images = ImageBatch(torch.zeros(1, 3, 64, 64), [(64, 64)])
    gt = [GroundTruth((64, 64), Boxes(torch.zeros(0, 4)), torch.zeros(0, dtype=torch.long))]
    losses = head.loss(feats, [torch.zeros(0, 4)], images, gt, _train_cfg())
    assert set(losses) == {"s0.loss_cls", "s0.loss_bbox", "s0.acc"}
    assert float(losses["s0.loss_cls"]) == 0.0 and float(losses["s0.loss_bbox"]) == 0.0
