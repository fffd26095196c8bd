"""The engine with the real detectors and the shapes dataset: train a few iterations, test with TTA."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import detcli.engine as engine

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]

BACKBONE = {"type": "ResNet", "depth": 18, "num_stages": 4, "out_indices": [0, 1, 2, 3], "frozen_stages": 1,
            "norm_cfg": {"type": "BN", "requires_grad": True}, "norm_eval": True, "style": "pytorch"}
TEST_CFG = {"nms_pre": 100, "min_bbox_size": 0, "score_thr": 0.05, "nms": {"type": "nms", "iou_threshold": 0.5},
            "max_per_img": 50}
MODELS = {
    "RetinaNet": {
        "type": "RetinaNet", "backbone": BACKBONE,
        "neck": {"type": "FPN", "in_channels": [64, 128, 256, 512], "out_channels": 16, "start_level": 1,
                 "add_extra_convs": "on_input", "num_outs": 5},
        "bbox_head": {"type": "RetinaHead", "num_classes": 4, "in_channels": 16, "stacked_convs": 1, "feat_channels": 16},
        "train_cfg": {"assigner": {"type": "MaxIoUAssigner", "pos_iou_thr": 0.5, "neg_iou_thr": 0.4, "min_pos_iou": 0,
                                   "ignore_iof_thr": -1}},
        "test_cfg": TEST_CFG,
    },
    "FCOS": {
        "type": "FCOS", "backbone": BACKBONE,
        "neck": {"type": "FPN", "in_channels": [64, 128, 256, 512], "out_channels": 16, "start_level": 1,
                 "add_extra_convs": "on_output", "num_outs": 5, "relu_before_extra_convs": True},
        "bbox_head": {"type": "FCOSHead", "num_classes": 4, "in_channels": 16, "stacked_convs": 1, "feat_channels": 16,
                      "strides": [8, 16, 32, 64, 128], "norm_cfg": {"type": "GN", "num_groups": 8, "requires_grad": True}},
        "test_cfg": TEST_CFG,
    },
}


def shapes_cfg(model: str) -> dict[str, Any]:
    train_pipeline = [
        {"type": "LoadImageFromFile"}, {"type": "LoadAnnotations", "with_bbox": True},
        {"type": "Resize", "img_scale": [64, 64], "keep_ratio": True}, {"type": "RandomFlip", "flip_ratio": 0.5},
        {"type": "Normalize", "mean": MEAN, "std": STD, "to_rgb": True}, {"type": "Pad", "size_divisor": 32},
        {"type": "DefaultFormatBundle"}, {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels"]},
    ]
    test_pipeline = [
        {"type": "LoadImageFromFile"},
        {"type": "MultiScaleFlipAug", "img_scale": [64, 64], "flip": True, "transforms": [
            {"type": "Resize", "keep_ratio": True}, {"type": "RandomFlip"},
            {"type": "Normalize", "mean": MEAN, "std": STD, "to_rgb": True}, {"type": "Pad", "size_divisor": 32},
            {"type": "DefaultFormatBundle"}, {"type": "Collect", "keys": ["img"]}]},
    ]
    split = {"type": "ShapesDataset", "num_images": 4, "img_size": 64}
    return {
        "model": copy.deepcopy(MODELS[model]),
        "data": {"samples_per_gpu": 2, "workers_per_gpu": 0,
                 "train": {**split, "split": "train", "pipeline": train_pipeline},
                 "val": {**split, "split": "val", "pipeline": test_pipeline},
                 "test": {**split, "split": "val", "pipeline": test_pipeline}},
        "optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001,
                      "paramwise_cfg": {"norm_decay_mult": 0.0, "bias_decay_mult": 0.0}},
        "optimizer_config": {"grad_clip": {"max_norm": 35, "norm_type": 2}},
        "lr_config": {"policy": "step", "warmup": "linear", "warmup_iters": 2, "warmup_ratio": 0.1, "step": [3],
                      "by_epoch": False},
        "runner": {"type": "IterBasedRunner", "max_iters": 2},
        "checkpoint_config": {"interval": 2, "by_epoch": False},
        "log_config": {"interval": 1},
        "evaluation": {"interval": 2, "by_epoch": False, "metric": "bbox", "save_best": "auto"},
    }


@pytest.mark.slow
@pytest.mark.parametrize("model", ["RetinaNet", "FCOS"])
def test_train_then_test_with_flip_tta(tmp_path: Path, model: str) -> None:
    result = engine.train(shapes_cfg(model), work_dir=tmp_path / "run", cfg_source="shapes_tiny.yaml")
    assert result.iters == 2 and (tmp_path / "run" / "iter_2.pth").exists()
    assert set(result.metrics) >= {"bbox_mAP", "bbox_mAP_50"}
    assert result.best_checkpoint is not None and result.best_checkpoint.exists()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["datasets"]["train"]["num_images"] == 4
    out = tmp_path / "res.json"
    tested = engine.tester.test(None, str(result.last_checkpoint), out=str(out), classwise=True)
    assert tested.num_images == 4 and len(tested.classwise) == 4
    for entry in json.loads(out.read_text()):
        x, y, w, h = entry["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 64.01 and y + h <= 64.01  # original image coordinates
        assert entry["category_id"] in (1, 2, 3, 4)
    loaded = engine.load_model(str(result.last_checkpoint))
    assert loaded.classes == ("rectangle", "ellipse", "triangle", "star")
    saved = torch.load(result.last_checkpoint, weights_only=True)["state_dict"]
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, saved[key]), key
