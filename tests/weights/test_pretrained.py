"""init_cfg Pretrained by URI on backbones and whole detectors: exact loads, tables, the partial-load rule."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from detcli.config import load_config
from detcli.errors import CheckpointError, ConfigError
from detcli.models import ResNet
from detcli.models.pretrained import parse_init_cfg
from detcli.registry import DETECTORS, build
from detcli.weights import torchvision_weights_url


def test_backbone_from_torchvision_uri_uses_torchs_cache(torch_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    ref = resnet18()
    name = torchvision_weights_url("resnet18").rsplit("/", 1)[1]
    torch.save(ref.state_dict(), torch_home / name)  # as torchvision's own download would have left it
    backbone = ResNet(depth=18, init_cfg={"type": "Pretrained", "checkpoint": "torchvision://resnet18"})
    with caplog.at_level(logging.INFO, logger="detcli"):
        reports = backbone.init_weights()
    assert torch.equal(backbone.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    assert torch.equal(backbone.bn1.running_var, ref.bn1.running_var)
    (report,) = reports
    assert report.missing == [] and report.mismatched == [] and report.unexpected == []  # fc.* dropped
    assert len(report.loaded) == len(ref.state_dict()) - 2
    assert "weights torchvision://resnet18 -> backbone" in caplog.text


def _retinanet_cfg() -> dict:
    cfg = load_config("retinanet_r18_fpn_shapes")
    return cfg["model"]


def test_detector_init_cfg_with_mmdet_file_and_the_partial_rule(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = build(_retinanet_cfg(), DETECTORS, path="model")
    sd = src.state_dict()
    mm = {k.replace(".0.weight", ".conv.weight").replace(".0.bias", ".conv.bias") if k.startswith(("neck.", "bbox_head.cls_convs", "bbox_head.reg_convs")) else k: v
          for k, v in sd.items()}
    path = tmp_path / "retina_mm.pth"
    torch.save({"meta": {"mmdet_version": "2.28.2"}, "state_dict": mm}, path)
    node = dict(_retinanet_cfg(), init_cfg={"type": "Pretrained", "checkpoint": str(path)})
    dst = build(node, DETECTORS, path="model")
    (report,) = dst.init_weights()
    assert report.complete
    for key, value in dst.state_dict().items():
        assert torch.equal(value, sd[key]), key

    # fine-tuning to 2 classes: only the classifier stays random -> allowed
    node2 = dict(node, bbox_head=dict(node["bbox_head"], num_classes=2))
    (report,) = build(node2, DETECTORS, path="model").init_weights()
    assert report.class_layers == ["bbox_head.retina_cls.weight", "bbox_head.retina_cls.bias"]

    # the FPN missing from the file: an error, unless strict: false / allow_partial
    partial = tmp_path / "no_fpn.pth"
    torch.save({"meta": {"mmdet_version": "2.28.2"}, "state_dict": {k: v for k, v in mm.items() if not k.startswith("neck.")}}, partial)
    node3 = dict(node, init_cfg={"type": "Pretrained", "checkpoint": str(partial)})
    with pytest.raises(CheckpointError, match=r"no_fpn.pth: the weights do not fit the model: .* missing \(e.g. neck\."):
        build(node3, DETECTORS, path="model").init_weights()
    (report,) = build(node3, DETECTORS, path="model").init_weights(allow_partial=True)
    assert all(k.startswith("neck.") for k in report.missing) and report.missing
    node4 = dict(node, init_cfg={"type": "Pretrained", "checkpoint": str(partial), "strict": False})
    assert build(node4, DETECTORS, path="model").init_weights()[0].missing == report.missing


@pytest.mark.parametrize("node,match", [
    ({"type": "Kaiming"}, "only {type: Pretrained"),
    ({"type": "Pretrained"}, "'checkpoint' is required"),
    ({"type": "Pretrained", "checkpoint": "x", "strict": "yes"}, "strict: expected true or false"),
    ({"type": "Pretrained", "checkpoint": "x", "map": 1}, r"unknown keys \['map'\]"),
])
def test_init_cfg_errors(node: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_init_cfg(node, "backbone")


def test_backbone_prefix_selects_part_of_a_detector_file(tmp_path: Path) -> None:
    ref = resnet18()
    path = tmp_path / "det_like.pth"
    torch.save({"state_dict": {f"teacher.backbone.{k}": v for k, v in ref.state_dict().items()}}, path)
    backbone = ResNet(depth=18, init_cfg={"type": "Pretrained", "checkpoint": str(path), "prefix": "teacher.backbone."})
    backbone.init_weights()
    assert torch.equal(backbone.conv1.weight, ref.conv1.weight)
    wrong = ResNet(depth=18, init_cfg={"type": "Pretrained", "checkpoint": str(path), "prefix": "student."})
    with pytest.raises(CheckpointError, match=r"no weights start with init_cfg.prefix 'student.'"):
        wrong.init_weights()


def test_load_from_a_backbone_file_fills_the_backbone_and_needs_allow_partial(torch_home: Path) -> None:
    from detcli.models.pretrained import load_detector_weights

    ref = resnet18()
    name = torchvision_weights_url("resnet18").rsplit("/", 1)[1]
    torch.save(ref.state_dict(), torch_home / name)
    model = build(_retinanet_cfg(), DETECTORS, path="model")
    with pytest.raises(CheckpointError, match=r"missing \(e.g. neck\..*looks like an ImageNet classification .*backbone.init_cfg"):
        load_detector_weights(model, "torchvision://resnet18")
    report = load_detector_weights(model, "torchvision://resnet18", allow_partial=True)
    assert torch.equal(model.backbone.layer2[0].conv1.weight, ref.layer2[0].conv1.weight)
    assert report.unexpected == [] and all(k.startswith(("neck.", "bbox_head.")) for k in report.missing)
