"""A caffe-style preset end to end: the FCOS-tricks R50-caffe preset, slimmed, trains and tests on shapes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import detcli.engine as engine
from detcli.config import load_config
from detcli.models.backbones.resnet import ResNet
from detcli.resources import find_preset

pytestmark = pytest.mark.slow

PRESET = "fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_1x_coco"


def caffe_shapes_cfg(backbone_checkpoint: Path) -> dict[str, Any]:
    """The preset's model (R50 caffe backbone, narrow neck and head), optimizer and caffe Normalize on shapes."""
    preset_path = find_preset(PRESET)
    assert preset_path is not None
    cfg = load_config(preset_path)
    model = copy.deepcopy(cfg["model"])
    model["backbone"]["init_cfg"] = {"type": "Pretrained", "checkpoint": str(backbone_checkpoint)}
    model["neck"]["out_channels"] = 16
    model["bbox_head"].update(num_classes=4, in_channels=16, feat_channels=16, stacked_convs=1,
                              norm_cfg={"type": "GN", "num_groups": 8, "requires_grad": True})
    model["test_cfg"].update(nms_pre=100, max_per_img=50)
    normalize = cfg["data"]["train"]["pipeline"][4]
    assert normalize["type"] == "Normalize" and normalize["to_rgb"] is False and normalize["std"] == [1.0, 1.0, 1.0]
    train_pipeline = [
        {"type": "LoadImageFromFile"}, {"type": "LoadAnnotations", "with_bbox": True},
        {"type": "Resize", "img_scale": [64, 64], "keep_ratio": True}, {"type": "RandomFlip", "flip_ratio": 0.5},
        normalize, {"type": "Pad", "size_divisor": 32},
        {"type": "DefaultFormatBundle"}, {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels"]},
    ]
    test_pipeline = [
        {"type": "LoadImageFromFile"},
        {"type": "MultiScaleFlipAug", "img_scale": [64, 64], "flip": False, "transforms": [
            {"type": "Resize", "keep_ratio": True}, {"type": "RandomFlip"}, normalize,
            {"type": "Pad", "size_divisor": 32}, {"type": "DefaultFormatBundle"}, {"type": "Collect", "keys": ["img"]}]},
    ]
    split = {"type": "ShapesDataset", "num_images": 4, "img_size": 64}
    return {
        "model": model,
        "data": {"samples_per_gpu": 2, "workers_per_gpu": 0,
                 "train": {**split, "split": "train", "pipeline": train_pipeline},
                 "val": {**split, "split": "val", "pipeline": test_pipeline},
                 "test": {**split, "split": "val", "pipeline": test_pipeline}},
        "optimizer": cfg["optimizer"],
        "optimizer_config": cfg["optimizer_config"],
        "lr_config": {**cfg["lr_config"], "warmup_iters": 2, "step": [3], "by_epoch": False},
        "runner": {"type": "IterBasedRunner", "max_iters": 2},
        "checkpoint_config": {"interval": 2, "by_epoch": False},
        "log_config": {"interval": 1},
        "evaluation": {"interval": 2, "by_epoch": False, "metric": "bbox"},
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[engine.TrainResult, dict[str, torch.Tensor]]:
    tmp = tmp_path_factory.mktemp("caffe")
    torch.manual_seed(0)
    pretrained = ResNet(depth=50, style="caffe").state_dict()  # stands in for the Detectron2 weights
    checkpoint = tmp / "resnet50_caffe.pth"
    torch.save(pretrained, checkpoint)
    result = engine.train(caffe_shapes_cfg(checkpoint), work_dir=tmp / "run", cfg_source=f"{PRESET}.yaml")
    return result, pretrained


def test_caffe_preset_trains_and_tests_on_shapes(trained: tuple[engine.TrainResult, dict[str, torch.Tensor]]) -> None:
    result, pretrained = trained
    assert result.iters == 2 and result.last_checkpoint is not None
    assert set(result.metrics) >= {"bbox_mAP", "bbox_mAP_50"}
    saved = torch.load(result.last_checkpoint, weights_only=True)
    config = saved["meta"]["config"]
    assert config["model"]["backbone"]["style"] == "caffe"
    assert config["data"]["test"]["pipeline"][1]["transforms"][2]["mean"] == [103.53, 116.28, 123.675]
    state = saved["state_dict"]
    # the pretrained file was loaded; the frozen stem and stage 1 (frozen_stages: 1) and the BN affine
    # terms (requires_grad: false) kept its values, stage 2's convs trained
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer3.0.bn1.weight", "layer4.2.bn3.bias"):
        assert torch.equal(state[f"backbone.{key}"], pretrained[key]), key
    assert not torch.equal(state["backbone.layer2.0.conv1.weight"], pretrained["layer2.0.conv1.weight"])
    loaded = engine.load_model(str(result.last_checkpoint))
    first = loaded.model.backbone.layer2[0]
    assert (first.conv1.stride, first.conv2.stride) == ((2, 2), (1, 1))
    tested = engine.tester.test(None, str(result.last_checkpoint))
    assert tested.num_images == 4 and np.isfinite(tested.metrics["bbox_mAP"])


def test_caffe_preset_exports_to_onnx_with_parity(trained: tuple[engine.TrainResult, dict[str, torch.Tensor]],
                                                  tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from detcli.engine.onnx_export import export_onnx

    result, _ = trained
    assert result.last_checkpoint is not None
    raw = export_onnx(None, result.last_checkpoint, output_file=tmp_path / "raw.onnx", skip_postprocess=True)
    assert raw.input_shape == (1, 3, 64, 64) and len(raw.outputs) == 15  # cls, bbox, centerness x 5 levels
    assert raw.verify is not None and raw.verify.passed
