"""ONNX export: graph + checker + parity gate (RetinaNet, FCOS, ATSS, GFL), dynamic shapes, zero detections,
errors, ``det test --backend onnxruntime`` and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import detcli.engine as engine
from detcli.cli import app
from detcli.config import load_config
from detcli.engine.builders import build_model
from detcli.engine.checkpoint import atomic_save, make_checkpoint
from detcli.engine.onnx_export import OnnxPredictor, ParityError, export_onnx
from detcli.errors import ConfigError

from engine_helpers import tiny_cfg

pytest.importorskip("onnxruntime")

PRESETS = {"fcos": "presets/quickstart.yaml", "retinanet": "presets/retinanet_r18_fpn_shapes.yaml",
           "atss": "presets/atss_r18_fpn_shapes.yaml",
           "gfl": "tests/engine/gfl_r18_fpn_shapes.yaml"}  # test-only config (no shipped shapes preset)
ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "model.neck.out_channels=16", "model.bbox_head.in_channels=16", "model.bbox_head.feat_channels=16",
    "model.bbox_head.stacked_convs=1", "data.test.num_images=2", "data.test.img_size=64",
    "data.test.pipeline.1.img_scale=[64,64]",
]


def _checkpoint(tmp: Path, name: str, extra: list[str] | None = None) -> Path:
    overrides = TINY + (["model.bbox_head.norm_cfg.num_groups=4"] if name in ("fcos", "atss", "gfl") else []) + (extra or [])
    cfg = load_config(str(ROOT / PRESETS[name]), overrides)
    torch.manual_seed(0)
    model = build_model(cfg)
    head = model.bbox_head
    cls_conv = getattr(head, {"fcos": "conv_cls", "retinanet": "retina_cls", "atss": "atss_cls", "gfl": "gfl_cls"}[name])
    torch.nn.init.normal_(cls_conv.weight, std=0.3)  # spread the scores: no near-ties in the parity check
    torch.nn.init.constant_(cls_conv.bias, -1.0)
    if name == "fcos":  # positive distances: no zero-area boxes (ONNX Runtime's NMS drops those)
        torch.nn.init.constant_(head.conv_reg.bias, 1.0)
    path = tmp / f"{name}.pth"
    atomic_save(make_checkpoint(model, epoch=0, iter=0, config=cfg, classes=["rectangle", "ellipse", "triangle", "cross"]), path)
    return path


@pytest.fixture(scope="module", params=["fcos", "retinanet", "atss", "gfl"])
def ckpt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def other_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "other.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path), rng.integers(0, 255, (128, 32, 3), dtype=np.uint8))  # 64x16, padded to 64x32
    return path


@pytest.mark.slow
def test_dynamic_export_checker_and_parity(ckpt: Path, other_image: Path, tmp_path: Path) -> None:
    import onnx

    out = tmp_path / "model.onnx"
    result = export_onnx(None, ckpt, output_file=out, dynamic_export=True, test_img=str(other_image))
    onnx.checker.check_model(onnx.load(str(out)))
    assert result.opset_version == 11 and result.outputs == ["dets", "labels"]
    report = result.verify
    assert report is not None and report.passed and len(report.rows) == 4  # + the mixed-size batch of 2
    assert report.rows[0].shape == (64, 64) and report.rows[1].shape == (64, 32)  # a size other than the export size
    assert all(r.torch_dets > 0 and r.matched == r.torch_dets == r.onnx_dets for r in report.rows[:2])
    assert report.rows[2].image == report.rows[3].image == "data.test[0] + 3/4 crop (batch)"
    # batch of 2 at yet another size: same detections as PyTorch
    predictor = OnnxPredictor(out)
    from detcli.structures import ImageBatch

    model = engine.load_model(ckpt).model
    x = ImageBatch(torch.randn(2, 3, 96, 64), [(96, 64), (80, 60)])
    got, ref = predictor.predict(x), model.predict(x)  # each image clipped to its own size, in both
    for g, r in zip(got, ref):
        assert len(g) == len(r) > 0
        torch.testing.assert_close(g.boxes.tensor, r.boxes.tensor, atol=1e-3, rtol=0)
    assert got[1].boxes.tensor[:, 0::2].max() <= 60 and got[1].boxes.tensor[:, 1::2].max() <= 80


@pytest.mark.slow
def test_static_export_default_name_and_skip_postprocess(ckpt: Path, tmp_path: Path) -> None:
    local = tmp_path / ckpt.name
    local.write_bytes(ckpt.read_bytes())
    result = export_onnx(None, local, shape=(96, 128), simplify=True)
    assert result.simplified and result.output_file == local.with_suffix(".onnx") and result.input_shape == (1, 3, 96, 128)
    assert result.verify is not None and result.verify.passed
    raw = export_onnx(None, local, output_file=tmp_path / "raw.onnx", skip_postprocess=True, opset_version=13)
    assert raw.outputs[0] == "cls_score_0" and len(raw.outputs) in (10, 15) and raw.verify.passed


@pytest.mark.slow
def test_zero_detections(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, "retinanet", ["model.test_cfg.score_thr=0.999"])
    result = export_onnx(None, ckpt, output_file=tmp_path / "zero.onnx", dynamic_export=True)
    assert result.verify.passed and result.verify.rows[0].torch_dets == result.verify.rows[0].onnx_dets == 0
    dets = OnnxPredictor(tmp_path / "zero.onnx").predict(
        __import__("detcli.structures", fromlist=["ImageBatch"]).ImageBatch(torch.randn(1, 3, 64, 96), [(64, 96)]))
    assert len(dets[0]) == 0


@pytest.mark.slow
def test_parity_failure_keeps_no_file(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, "fcos")
    out = tmp_path / "bad.onnx"
    with pytest.raises(ParityError, match="disagree") as info:
        export_onnx(None, ckpt, output_file=out, score_tol=-1.0)
    assert not out.exists() and "matched" in info.value.report.table()


def test_unsupported_model_and_bad_opset(tmp_path: Path) -> None:
    """Fast: both errors come before any tracing."""
    run = engine.train(tiny_cfg(runner={"type": "EpochBasedRunner", "max_epochs": 1}), work_dir=tmp_path / "run",
                       cfg_source="tiny.yaml", validate=False)
    with pytest.raises(ConfigError, match="supports RetinaNet, FCOS, ATSS, GFL, YOLOX, FasterRCNN, MaskRCNN, CascadeRCNN; got TinyTestDetector"):
        export_onnx(None, run.last_checkpoint, output_file=tmp_path / "x.onnx")
    ckpt = _checkpoint(tmp_path, "fcos")
    with pytest.raises(ConfigError, match="opset >= 11"):
        export_onnx(None, ckpt, opset_version=9)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_cli_export_both_spellings_and_test_backend(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, "fcos")
    runner = CliRunner()
    out = tmp_path / "a.onnx"
    res = runner.invoke(app, ["export-onnx", str(ROOT / PRESETS["fcos"]), str(ckpt), "--output-file", str(out),
                              "--dynamic-export", "--json",
                              *[a for o in TINY + ["model.bbox_head.norm_cfg.num_groups=4"] for a in ("--cfg-options", o)]])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["output_file"] == str(out) and summary["dynamic"] and summary["verify"][0]["ok"]
    res = runner.invoke(app, ["export", "onnx", str(ckpt), "-o", str(tmp_path / "b.onnx"), "--no-verify"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "b.onnx").is_file()
    res = runner.invoke(app, ["export-onnx", str(ckpt), "--opset-version", "7"])
    assert res.exit_code == 1 and "opset" in res.output
    onnx_res = runner.invoke(app, ["test", str(out), "--backend", "onnxruntime", "--metric", "bbox", "--json"])
    assert onnx_res.exit_code == 0, onnx_res.output
    torch_res = runner.invoke(app, ["test", str(ckpt), "--metric", "bbox", "--json"])
    assert torch_res.exit_code == 0, torch_res.output
    a, b = json.loads(onnx_res.stdout), json.loads(torch_res.stdout)
    assert abs(a["bbox_mAP"] - b["bbox_mAP"]) <= 0.002
