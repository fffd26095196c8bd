"""Config factories for detector tests (mmdet 2.x shaped nodes)."""

import copy

import pytest

RETINANET_R50 = {
    "type": "RetinaNet",
    "backbone": {"type": "ResNet", "depth": 50, "num_stages": 4, "out_indices": [0, 1, 2, 3], "frozen_stages": 1,
                 "norm_cfg": {"type": "BN", "requires_grad": True}, "norm_eval": True, "style": "pytorch"},
    "neck": {"type": "FPN", "in_channels": [256, 512, 1024, 2048], "out_channels": 256, "start_level": 1,
             "add_extra_convs": "on_input", "num_outs": 5},
    "bbox_head": {
        "type": "RetinaHead", "num_classes": 80, "in_channels": 256, "stacked_convs": 4, "feat_channels": 256,
        "anchor_generator": {"type": "AnchorGenerator", "octave_base_scale": 4, "scales_per_octave": 3,
                             "ratios": [0.5, 1.0, 2.0], "strides": [8, 16, 32, 64, 128]},
        "bbox_coder": {"type": "DeltaXYWHBBoxCoder", "target_means": [0.0] * 4, "target_stds": [1.0] * 4},
        "loss_cls": {"type": "FocalLoss", "use_sigmoid": True, "gamma": 2.0, "alpha": 0.25, "loss_weight": 1.0},
        "loss_bbox": {"type": "L1Loss", "loss_weight": 1.0}},
    "train_cfg": {"assigner": {"type": "MaxIoUAssigner", "pos_iou_thr": 0.5, "neg_iou_thr": 0.4, "min_pos_iou": 0,
                               "ignore_iof_thr": -1},
                  "allowed_border": -1, "pos_weight": -1, "debug": False},
    "test_cfg": {"nms_pre": 1000, "min_bbox_size": 0, "score_thr": 0.05, "nms": {"type": "nms", "iou_threshold": 0.5},
                 "max_per_img": 100},
}

FCOS_R50 = {
    "type": "FCOS",
    "backbone": copy.deepcopy(RETINANET_R50["backbone"]),
    "neck": {"type": "FPN", "in_channels": [256, 512, 1024, 2048], "out_channels": 256, "start_level": 1,
             "add_extra_convs": "on_output", "num_outs": 5, "relu_before_extra_convs": True},
    "bbox_head": {
        "type": "FCOSHead", "num_classes": 80, "in_channels": 256, "stacked_convs": 4, "feat_channels": 256,
        "strides": [8, 16, 32, 64, 128], "norm_on_bbox": True, "centerness_on_reg": True, "dcn_on_last_conv": False,
        "center_sampling": True, "center_sample_radius": 1.5, "conv_bias": True,
        "norm_cfg": {"type": "GN", "num_groups": 32, "requires_grad": True},
        "loss_cls": {"type": "FocalLoss", "use_sigmoid": True, "gamma": 2.0, "alpha": 0.25, "loss_weight": 1.0},
        "loss_bbox": {"type": "GIoULoss", "loss_weight": 1.0},
        "loss_centerness": {"type": "CrossEntropyLoss", "use_sigmoid": True, "loss_weight": 1.0}},
    "train_cfg": {"assigner": None, "allowed_border": -1, "pos_weight": -1, "debug": False},
    "test_cfg": {"nms_pre": 1000, "min_bbox_size": 0, "score_thr": 0.05, "nms": {"type": "nms", "iou_threshold": 0.5},
                 "max_per_img": 100},
}


def _load_preset_model(name: str) -> dict:
    from pathlib import Path

    from detcli.config import load_config

    return load_config(str(Path(__file__).resolve().parents[2] / "presets" / name))["model"]


def tiny_two_stage(preset: str, num_classes: int = 4, channels: int = 32) -> dict:
    """ResNet-18 + ``channels``-wide version of a two-stage preset's model, with small RoI budgets."""
    cfg = copy.deepcopy(_load_preset_model(preset))
    cfg["backbone"].update(depth=18)
    cfg["neck"].update(in_channels=[64, 128, 256, 512], out_channels=channels)
    cfg["rpn_head"].update(in_channels=channels, feat_channels=channels)
    roi = cfg["roi_head"]
    roi["bbox_roi_extractor"]["out_channels"] = channels
    roi["bbox_head"].update(in_channels=channels, fc_out_channels=64, num_classes=num_classes)
    if "mask_head" in roi:
        roi["mask_roi_extractor"]["out_channels"] = channels
        roi["mask_head"].update(num_convs=1, in_channels=channels, conv_out_channels=channels, num_classes=num_classes)
    cfg["train_cfg"]["rpn_proposal"].update(nms_pre=200, max_per_img=100)
    cfg["train_cfg"]["rcnn"]["sampler"]["num"] = 64
    cfg["test_cfg"]["rpn"].update(nms_pre=200, max_per_img=100)
    return cfg


def tiny(cfg: dict, num_classes: int = 4, channels: int = 32) -> dict:
    """ResNet-18 + ``channels``-wide FPN/head version of a config."""
    cfg = copy.deepcopy(cfg)
    cfg["backbone"]["depth"] = 18
    cfg["neck"]["in_channels"] = [64, 128, 256, 512]
    cfg["neck"]["out_channels"] = channels
    head = cfg["bbox_head"]
    head.update(num_classes=num_classes, in_channels=channels, feat_channels=channels, stacked_convs=2)
    if head.get("norm_cfg"):
        head["norm_cfg"]["num_groups"] = 8
    return cfg


@pytest.fixture
def retinanet_cfg():
    return lambda **kw: tiny(RETINANET_R50, **kw)


@pytest.fixture
def fcos_cfg():
    return lambda **kw: tiny(FCOS_R50, **kw)


@pytest.fixture
def faster_rcnn_cfg():
    return lambda **kw: tiny_two_stage("faster_rcnn_r50_fpn_1x_coco.yaml", **kw)


@pytest.fixture
def mask_rcnn_cfg():
    return lambda **kw: tiny_two_stage("mask_rcnn_r50_fpn_1x_coco.yaml", **kw)
