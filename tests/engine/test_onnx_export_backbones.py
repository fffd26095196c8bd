"""ONNX export of detectors on the ResNetV1d / ResNeXt backbones (deep stem, ceil-mode average pools in the
shortcuts, grouped convs): the graph passes onnx's checker and the parity gate on two image sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detcli.config import load_config
from detcli.engine.builders import build_model
from detcli.engine.checkpoint import atomic_save, make_checkpoint
from detcli.engine.onnx_export import export_onnx

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
SMALL = [
    "model.neck.out_channels=16", "model.bbox_head.in_channels=16", "model.bbox_head.feat_channels=16",
    "model.bbox_head.stacked_convs=1", "data.test.num_images=2", "data.test.img_size=64",
    "data.test.pipeline.1.img_scale=[64,64]",
]
BACKBONES = {
    "resnetv1d18": ["model.backbone.type=ResNetV1d"],
    "resnext50_4x4d_v1d": ["model.backbone.type=ResNeXt", "model.backbone.depth=50", "model.backbone.groups=4",
                           "model.backbone.base_width=4", "model.backbone.deep_stem=true", "model.backbone.avg_down=true",
                           "model.neck.in_channels=[256,512,1024,2048]"],
}


@pytest.mark.slow
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_retinanet_on_new_backbones_exports_with_parity(backbone: str, tmp_path: Path) -> None:
    import onnx

    cfg = load_config(str(ROOT / "presets" / "retinanet_r18_fpn_shapes.yaml"), SMALL + BACKBONES[backbone])
    torch.manual_seed(0)
    model = build_model(cfg)
    assert type(model.backbone).__name__ == cfg["model"]["backbone"]["type"] and model.backbone.deep_stem
    torch.nn.init.normal_(model.bbox_head.retina_cls.weight, std=0.3)  # spread the scores: no near-ties
    torch.nn.init.constant_(model.bbox_head.retina_cls.bias, -1.0)
    ckpt = tmp_path / "model.pth"
    atomic_save(make_checkpoint(model, epoch=0, iter=0, config=cfg, classes=["rectangle", "ellipse", "triangle", "cross"]), ckpt)
    out = tmp_path / "model.onnx"
    result = export_onnx(None, ckpt, output_file=out, dynamic_export=True)
    onnx.checker.check_model(onnx.load(str(out)))
    report = result.verify
    assert report is not None and report.passed
    assert all(r.torch_dets > 0 and r.matched == r.torch_dets == r.onnx_dets for r in report.rows)
