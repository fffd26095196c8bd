"""ONNX export of Faster R-CNN and Mask R-CNN: graph + checker + parity gate, dynamic sizes and
batches, zero detections / zero proposals, masks, errors and ``det test --backend onnxruntime``."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from detcli import engine
from detcli.cli import app
from detcli.config import load_config
from detcli.engine.builders import build_model
from detcli.engine.checkpoint import atomic_save, make_checkpoint
from detcli.engine.onnx_export import OnnxPredictor, export_onnx
from detcli.errors import ConfigError
from detcli.structures import ImageBatch

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
PRESET = ROOT / "presets" / "mask_rcnn_r18_fpn_shapes.yaml"
TINY = [
    "model.neck.out_channels=16", "model.rpn_head.in_channels=16", "model.rpn_head.feat_channels=16",
    "model.roi_head.bbox_roi_extractor.out_channels=16", "model.roi_head.bbox_head.in_channels=16",
    "model.roi_head.bbox_head.fc_out_channels=32", "model.roi_head.mask_roi_extractor.out_channels=16",
    "model.roi_head.mask_head.num_convs=1", "model.roi_head.mask_head.in_channels=16",
    "model.roi_head.mask_head.conv_out_channels=16", "model.test_cfg.rpn.nms_pre=100",
    "model.test_cfg.rpn.max_per_img=40", "model.test_cfg.rcnn.max_per_img=20",
    "data.test.num_images=2", "data.test.img_size=96", "data.test.pipeline.1.img_scale=[96,96]",
]
CLASSES = ["rectangle", "ellipse", "triangle", "cross"]


def _checkpoint(tmp: Path, kind: str, extra: list[str] | None = None) -> Path:
    cfg = load_config(str(PRESET), TINY + (extra or []))
    if kind == "faster":
        roi = cfg["model"]["roi_head"]
        del roi["mask_head"], roi["mask_roi_extractor"]
        cfg["model"]["type"] = "FasterRCNN"
    torch.manual_seed(0)
    model = build_model(cfg)
    # spread the scores (no near-ties at the cut-offs) and let some RoIs pass score_thr 0.05
    torch.nn.init.normal_(model.rpn_head.rpn_cls.weight, std=0.3)
    torch.nn.init.normal_(model.roi_head.bbox_head.fc_cls.weight, std=0.3)
    path = tmp / f"{kind}.pth"
    atomic_save(make_checkpoint(model, epoch=0, iter=0, config=cfg, classes=CLASSES), path)
    return path


@pytest.fixture(scope="module")
def mask_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("mask"), "mask")


@pytest.fixture(scope="module")
def other_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "other.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (128, 48, 3), dtype=np.uint8))  # 96x36 -> 96x64
    return path


def test_mask_rcnn_dynamic_export_parity_and_masks(mask_ckpt: Path, other_image: Path, tmp_path: Path) -> None:
    import onnx

    out = tmp_path / "mask.onnx"
    result = export_onnx(None, mask_ckpt, output_file=out, dynamic_export=True, test_img=str(other_image))
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert result.model_type == "MaskRCNN" and result.opset_version == 16
    assert result.outputs == ["dets", "labels", "masks"]
    assert {"RoiAlign", "NonMaxSuppression", "TopK", "ScatterND"} <= {n.op_type for n in proto.graph.node}
    report = result.verify
    assert report is not None and report.passed and report.mask_tol == 0.01 and len(report.rows) == 4
    assert report.rows[0].shape == (96, 96) and report.rows[1].shape == (96, 64)  # a size other than the export size
    assert [r.image for r in report.rows[2:]] == ["data.test[0] + 3/4 crop (batch)"] * 2  # two sizes in one batch
    assert all(r.torch_dets > 0 and r.matched == r.torch_dets == r.onnx_dets for r in report.rows)
    assert all(r.max_mask_diff is not None and r.max_mask_diff <= 0.01 for r in report.rows)
    assert "mask diff" in report.table()
    # a batch of 2 at yet another size: the same detections and masks as PyTorch
    model = engine.load_model(mask_ckpt).model
    x = ImageBatch(torch.randn(2, 3, 64, 128), [(64, 128), (50, 100)])
    got = OnnxPredictor(out).predict(x)
    ref = model.predict(ImageBatch(x.tensor, [(64, 128)] * 2))
    assert len(got[0]) == len(ref[0]) > 0 and got[0].masks.dtype == torch.bool
    torch.testing.assert_close(got[0].boxes.tensor, ref[0].boxes.tensor, atol=1e-3, rtol=0)
    assert torch.equal(got[0].labels, ref[0].labels)
    assert float((got[0].masks ^ ref[0].masks).float().mean()) < 1e-3
    assert got[1].masks.shape[1:] == (50, 100) and got[1].boxes.tensor[:, 0::2].max() <= 100


def test_faster_rcnn_static_export_and_zero_detections(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, "faster")
    result = export_onnx(None, ckpt, output_file=tmp_path / "faster.onnx", shape=(64, 96))
    assert result.model_type == "FasterRCNN" and result.outputs == ["dets", "labels"]
    assert result.input_shape == (1, 3, 64, 96) and result.verify.passed and result.verify.mask_tol is None
    assert result.verify.rows[0].torch_dets == result.verify.rows[0].onnx_dets > 0
    # no score passes 0.999: zero rows in both backends
    zero = _checkpoint(tmp_path, "faster", ["model.test_cfg.rcnn.score_thr=0.999"])
    result = export_onnx(None, zero, output_file=tmp_path / "zero.onnx", dynamic_export=True)
    assert result.verify.passed and result.verify.rows[0].torch_dets == result.verify.rows[0].onnx_dets == 0
    dets = OnnxPredictor(tmp_path / "zero.onnx").predict(ImageBatch(torch.randn(1, 3, 64, 96), [(64, 96)]))
    assert len(dets[0]) == 0 and dets[0].masks is None


def test_mask_rcnn_zero_proposals(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, "mask", ["model.test_cfg.rpn.min_bbox_size=1000"])  # every proposal dropped
    out = tmp_path / "none.onnx"
    result = export_onnx(None, ckpt, output_file=out, dynamic_export=True)
    assert result.verify.passed and result.verify.rows[0].torch_dets == result.verify.rows[0].onnx_dets == 0
    dets = OnnxPredictor(out).predict(ImageBatch(torch.randn(2, 3, 64, 64), [(64, 64), (60, 40)]))
    assert [len(d) for d in dets] == [0, 0] and dets[1].masks.shape == (0, 60, 40)


def test_two_stage_errors_before_tracing(mask_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"MaskRCNN graph needs opset >= 16 \(.*RoiAlign"):
        export_onnx(None, mask_ckpt, output_file=tmp_path / "x.onnx", opset_version=11)
    with pytest.raises(ConfigError, match="--skip-postprocess: MaskRCNN"):
        export_onnx(None, mask_ckpt, output_file=tmp_path / "x.onnx", skip_postprocess=True)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_cli_export_and_test_backend_bbox_segm(mask_ckpt: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "m.onnx"
    res = runner.invoke(app, ["export-onnx", str(mask_ckpt), "--output-file", str(out), "--dynamic-export", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["model"] == "MaskRCNN" and summary["opset_version"] == 16 and summary["verify"][0]["ok"]
    assert summary["outputs"] == ["dets", "labels", "masks"] and summary["verify"][0]["max_mask_diff"] is not None
    onnx_res = runner.invoke(app, ["test", str(out), "--backend", "onnxruntime", "--metric", "bbox", "--metric", "segm", "--json"])
    assert onnx_res.exit_code == 0, onnx_res.output
    torch_res = runner.invoke(app, ["test", str(mask_ckpt), "--metric", "bbox", "--metric", "segm", "--json"])
    assert torch_res.exit_code == 0, torch_res.output
    a, b = json.loads(onnx_res.stdout), json.loads(torch_res.stdout)
    assert abs(a["bbox_mAP"] - b["bbox_mAP"]) <= 0.002 and abs(a["segm_mAP"] - b["segm_mAP"]) <= 0.002


def test_float_mask_export_and_mask_diff(tmp_path: Path) -> None:
    from detcli.engine.onnx_export import _mask_diff

    a = torch.zeros(4, 4, dtype=torch.bool)
    b = a.clone()
    assert _mask_diff(a, b) == 0.0  # two empty masks
    a[:2, :2] = True
    b[:2, :3] = True
    assert _mask_diff(a, b) == 2 / 6
    assert _mask_diff(torch.full((2, 2), 0.25), torch.full((2, 2), 0.5)) == 0.25
    ckpt = _checkpoint(tmp_path, "mask", ["model.test_cfg.rcnn.mask_thr_binary=-1"])  # pasted probabilities
    out = tmp_path / "prob.onnx"
    result = export_onnx(None, ckpt, output_file=out)
    assert result.verify.passed and result.verify.rows[0].onnx_dets > 0
    assert result.verify.rows[0].max_mask_diff < 1e-4
    dets = OnnxPredictor(out).predict(ImageBatch(torch.randn(1, 3, 96, 96), [(90, 80)]))
    assert dets[0].masks.dtype == torch.float32 and dets[0].masks.shape[1:] == (90, 80)
    assert 0 <= float(dets[0].masks.min()) and float(dets[0].masks.max()) <= 1


CASCADE_PRESET = ROOT / "presets" / "cascade_mask_rcnn_r18_fpn_shapes.yaml"
CASCADE_TINY = [o for o in TINY if not o.startswith("model.roi_head.bbox_head.")] + [
    f"model.roi_head.bbox_head.{t}.{k}" for t in range(3) for k in ("in_channels=16", "fc_out_channels=32")]


def _cascade_checkpoint(tmp: Path, with_mask: bool) -> Path:
    cfg = load_config(str(CASCADE_PRESET), CASCADE_TINY)
    if not with_mask:
        roi = cfg["model"]["roi_head"]
        del roi["mask_head"], roi["mask_roi_extractor"]
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.nn.init.normal_(model.rpn_head.rpn_cls.weight, std=0.3)
    for stage in model.roi_head.stages:  # spread the averaged scores
        torch.nn.init.normal_(stage.bbox_head.fc_cls.weight, std=0.3)
        torch.nn.init.normal_(stage.bbox_head.fc_reg.weight, std=0.05)
    path = tmp / f"cascade_{'mask' if with_mask else 'box'}.pth"
    atomic_save(make_checkpoint(model, epoch=0, iter=0, config=cfg, classes=CLASSES), path)
    return path


@pytest.mark.parametrize("with_mask", [True, False], ids=["cascade_mask", "cascade"])
def test_cascade_export_parity(with_mask: bool, other_image: Path, tmp_path: Path) -> None:
    """Cascade (Mask) R-CNN: the three stages in the graph, averaged scores (and masks), the parity gate."""
    ckpt = _cascade_checkpoint(tmp_path, with_mask)
    out = tmp_path / "cascade.onnx"
    result = export_onnx(None, ckpt, output_file=out, dynamic_export=True, test_img=str(other_image))
    assert result.model_type == "CascadeRCNN"
    assert result.outputs == (["dets", "labels", "masks"] if with_mask else ["dets", "labels"])
    report = result.verify
    assert report is not None and report.passed and len(report.rows) == 4  # + a batch of two sizes
    assert all(r.torch_dets > 0 and r.matched == r.torch_dets == r.onnx_dets for r in report.rows)
    model = engine.load_model(ckpt).model
    x = ImageBatch(torch.randn(2, 3, 64, 96), [(64, 96)] * 2)
    got = OnnxPredictor(out).predict(x)
    ref = model.predict(x)
    for g, r in zip(got, ref):
        assert len(g) == len(r) > 0 and torch.equal(g.labels, r.labels)
        torch.testing.assert_close(g.boxes.tensor, r.boxes.tensor, atol=1e-3, rtol=0)
        torch.testing.assert_close(g.scores, r.scores, atol=1e-4, rtol=0)
        if with_mask:
            assert float((g.masks ^ r.masks).float().mean()) < 1e-3


@pytest.mark.slow
def test_cli_cascade_export_and_test_backend(tmp_path: Path) -> None:
    ckpt = _cascade_checkpoint(tmp_path, with_mask=True)
    runner = CliRunner()
    out = tmp_path / "c.onnx"
    res = runner.invoke(app, ["export-onnx", str(ckpt), "--output-file", str(out), "--dynamic-export", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["model"] == "CascadeRCNN" and summary["verify"][0]["ok"]
    onnx_res = runner.invoke(app, ["test", str(out), "--backend", "onnxruntime", "--metric", "bbox", "--metric", "segm", "--json"])
    assert onnx_res.exit_code == 0, onnx_res.output
    torch_res = runner.invoke(app, ["test", str(ckpt), "--metric", "bbox", "--metric", "segm", "--json"])
    assert torch_res.exit_code == 0, torch_res.output
    a, b = json.loads(onnx_res.stdout), json.loads(torch_res.stdout)
    assert abs(a["bbox_mAP"] - b["bbox_mAP"]) <= 0.002 and abs(a["segm_mAP"] - b["segm_mAP"]) <= 0.002
