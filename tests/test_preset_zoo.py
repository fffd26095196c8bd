"""Shipped presets: ``zoo`` entries of the published MMDetection 2.x counterparts, and the FCOS presets
equal to the mmdet configs they are named after."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from detcli.config import load_config
from detcli.resources import list_presets

PRESETS = {p.stem: p for p in list_presets()}
#: preset -> (published COCO val box AP, mask AP); the VOC preset's box_ap is its VOC2007 test mAP
PUBLISHED = {
    "retinanet_r50_fpn_1x_coco": (36.5, None),
    "faster_rcnn_r50_fpn_1x_coco": (37.4, None),
    "mask_rcnn_r50_fpn_1x_coco": (38.2, 34.7),
    "fcos_r50_caffe_fpn_gn-head_1x_coco": (36.6, None),
    "fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_1x_coco": (38.7, None),
    "fcos_r50_fpn_gn-head_1x_coco": (38.7, None),  # former name of the one above
    "retinanet_r50_fpn_1x_voc0712": (77.3, None),
    "yolox_s_8x8_300e_coco": (40.5, None),
    "yolox_tiny_8x8_300e_coco": (32.0, None),
}
#: torchvision's COCO_V1 detection weights (their meta ``_metrics``)
TORCHVISION = {
    "retinanet_r50_fpn_coco_tv": (36.4, None),
    "fcos_r50_fpn_coco_tv": (39.2, None),
    "faster_rcnn_r50_fpn_coco_tv": (37.0, None),
    "mask_rcnn_r50_fpn_coco_tv": (37.9, 34.6),
}
FCOS_TRICKS = "fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_1x_coco"


def load(name: str) -> dict:
    return load_config(PRESETS[name])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_zoo_entry_is_a_hashed_https_url_with_positive_ap(name: str) -> None:
    zoo = load(name).get("zoo")
    if zoo is None:
        assert name not in PUBLISHED and name not in TORCHVISION
        return
    url = zoo["url"]
    assert url.startswith("https://") and re.search(r"-[0-9a-f]{8}\.pth$", url), url
    if name in TORCHVISION:
        assert zoo["source"] == "torchvision" and url.startswith("https://download.pytorch.org/models/")
        assert (zoo["box_ap"], zoo.get("mask_ap")) == TORCHVISION[name]
        return
    assert zoo["source"] == "mmdet"
    # the file is named after the preset's mmdet config (the alias aside)
    assert url.rsplit("/", 1)[1].startswith(name) or name == "fcos_r50_fpn_gn-head_1x_coco"
    box_ap, mask_ap = PUBLISHED[name]
    assert zoo["box_ap"] == box_ap and box_ap > 0
    assert zoo.get("mask_ap") == mask_ap


def test_mmdet_style_coco_presets_all_carry_zoo_entries() -> None:
    assert set(PUBLISHED) <= set(PRESETS)
    with_zoo = {name for name in PRESETS if "zoo" in load(name)}
    assert with_zoo == set(PUBLISHED) | (set(TORCHVISION) & set(PRESETS))


def test_fcos_plain_preset_equals_mmdet_config() -> None:
    cfg = load("fcos_r50_caffe_fpn_gn-head_1x_coco")
    backbone, head = cfg["model"]["backbone"], cfg["model"]["bbox_head"]
    assert backbone["style"] == "caffe" and backbone["norm_cfg"] == {"type": "BN", "requires_grad": False}
    assert backbone["init_cfg"] == {"type": "Pretrained", "checkpoint": "open-mmlab://detectron/resnet50_caffe"}
    assert head["loss_bbox"] == {"type": "IoULoss", "loss_weight": 1.0}
    assert not any(head.get(k, False) for k in ("center_sampling", "norm_on_bbox", "centerness_on_reg"))
    assert cfg["model"]["test_cfg"]["nms"]["iou_threshold"] == 0.5
    assert cfg["optimizer"] == {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001,
                                "paramwise_cfg": {"bias_lr_mult": 2.0, "bias_decay_mult": 0.0}}
    assert cfg["optimizer_config"] == {"grad_clip": {"max_norm": 35, "norm_type": 2}}
    assert cfg["lr_config"] == {"policy": "step", "warmup": "constant", "warmup_iters": 500,
                                "warmup_ratio": pytest.approx(1 / 3), "step": [8, 11]}
    norm = {"type": "Normalize", "mean": [102.9801, 115.9465, 122.7717], "std": [1.0, 1.0, 1.0], "to_rgb": False}
    assert cfg["data"]["train"]["pipeline"][4] == norm
    assert cfg["data"]["test"]["pipeline"][1]["transforms"][2] == norm


def test_fcos_tricks_preset_equals_mmdet_config() -> None:
    cfg = load(FCOS_TRICKS)
    model = cfg["model"]
    assert model["backbone"]["init_cfg"] == {"type": "Pretrained", "checkpoint": "open-mmlab://detectron2/resnet50_caffe"}
    assert model["backbone"]["style"] == "caffe" and model["backbone"]["frozen_stages"] == 1
    assert model["neck"]["add_extra_convs"] == "on_output" and model["neck"]["relu_before_extra_convs"] is True
    head = model["bbox_head"]
    assert {k: head[k] for k in ("norm_on_bbox", "centerness_on_reg", "center_sampling", "conv_bias",
                                 "dcn_on_last_conv")} == {"norm_on_bbox": True, "centerness_on_reg": True,
                                                          "center_sampling": True, "conv_bias": True,
                                                          "dcn_on_last_conv": False}
    assert head["loss_bbox"] == {"type": "GIoULoss", "loss_weight": 1.0}
    assert head["norm_cfg"] == {"type": "GN", "num_groups": 32, "requires_grad": True}
    assert model["test_cfg"]["nms"] == {"type": "nms", "iou_threshold": 0.6}
    assert cfg["optimizer"]["lr"] == 0.01 and cfg["optimizer"]["paramwise_cfg"]["bias_lr_mult"] == 2.0
    assert cfg["optimizer_config"] == {"grad_clip": None}
    assert cfg["lr_config"]["warmup"] == "linear" and cfg["lr_config"]["warmup_ratio"] == pytest.approx(1 / 3)
    assert cfg["runner"] == {"type": "EpochBasedRunner", "max_epochs": 12}
    norm = {"type": "Normalize", "mean": [103.53, 116.28, 123.675], "std": [1.0, 1.0, 1.0], "to_rgb": False}
    for split in ("val", "test"):
        assert cfg["data"][split]["pipeline"][1]["transforms"][2] == norm
        assert cfg["data"][split]["ann_file"] == "annotations/instances_val2017.json"
    assert cfg["data"]["train"]["pipeline"][4] == norm


def test_old_fcos_name_is_an_alias_of_the_mmdet_name() -> None:
    assert load("fcos_r50_fpn_gn-head_1x_coco") == load(FCOS_TRICKS)
    text = Path(PRESETS["fcos_r50_fpn_gn-head_1x_coco"]).read_text()
    assert f"_base_: {FCOS_TRICKS}.yaml" in text
