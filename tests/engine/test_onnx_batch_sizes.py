"""A padded batch of images of different sizes: eager batch == eager single image, and the ONNX graph
(which takes each image's valid size as ``image_sizes``) == eager, image by image.

Before the ``image_sizes`` input, the graph clipped every box to the padded batch before NMS while
eager mode clips to each image's own size: the smaller image of a batch got other detections.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detcli.config import load_config
from detcli.engine.builders import build_model, load_model
from detcli.engine.checkpoint import atomic_save, make_checkpoint
from detcli.engine.onnx_export import OnnxPredictor, export_onnx, graph_feed, mixed_size_batch
from detcli.structures import Detections, ImageBatch

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
PRESETS = {"fcos": "presets/quickstart.yaml", "retinanet": "presets/retinanet_r18_fpn_shapes.yaml"}
TINY = ["model.neck.out_channels=16", "model.bbox_head.in_channels=16", "model.bbox_head.feat_channels=16",
        "model.bbox_head.stacked_convs=1", "data.test.num_images=2", "data.test.img_size=64",
        "data.test.pipeline.1.img_scale=[64,64]"]
#: the FCOS of these tests, pinned (the quickstart preset it starts from may change): full-width ResNet-18 and
#: FCOS's default regress ranges give this random model detections at the small image's border, where a graph
#: clipping to the padded batch differs from eager mode
FCOS_PINNED = ["model.bbox_head.norm_cfg.num_groups=4", "model.backbone.base_channels=64",
               "model.neck.in_channels=[64,128,256,512]",
               "model.bbox_head.regress_ranges=[[-1,64],[64,128],[128,256],[256,512],[512,100000000]]"]


def _random_checkpoint(tmp: Path, name: str) -> Path:
    cfg = load_config(str(ROOT / PRESETS[name]), TINY + (FCOS_PINNED if name == "fcos" else []))
    torch.manual_seed(0)
    model = build_model(cfg)
    head = model.bbox_head
    cls_conv = head.conv_cls if name == "fcos" else head.retina_cls
    torch.nn.init.normal_(cls_conv.weight, std=0.3)  # spread scores: no near-ties
    torch.nn.init.constant_(cls_conv.bias, -1.0)
    if name == "fcos":  # positive distances: no zero-area boxes (ONNX Runtime's NMS drops them)
        torch.nn.init.constant_(head.conv_reg.bias, 1.0)
    path = tmp / f"{name}.pth"
    atomic_save(make_checkpoint(model, epoch=0, iter=0, config=cfg, classes=["a", "b", "c", "d"]), path)
    return path


@pytest.fixture(scope="module", params=["fcos", "retinanet"])
def ckpt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _random_checkpoint(tmp_path_factory.mktemp(request.param), request.param)


def _batch() -> ImageBatch:
    """96x64 and 70x40 (Pad size_divisor=32 pads both to 96x64 alone too) in one padded batch."""
    torch.manual_seed(1)
    a = torch.randn(1, 3, 96, 64)
    b = torch.zeros(1, 3, 96, 64)
    b[..., :70, :40] = torch.randn(1, 3, 70, 40)
    return ImageBatch(torch.cat([a, b]), [(96, 64), (70, 40)])


def _same(got: Detections, ref: Detections, atol: float) -> None:
    assert len(got) == len(ref) > 0
    assert got.labels.tolist() == ref.labels.tolist()
    torch.testing.assert_close(got.boxes.tensor, ref.boxes.tensor, atol=atol, rtol=0)
    torch.testing.assert_close(got.scores, ref.scores, atol=1e-4, rtol=0)


def test_eager_batch_equals_single_images(ckpt: Path) -> None:
    model = load_model(ckpt, None, "cpu").model
    batch = _batch()
    with torch.no_grad():
        both = model.predict(batch)
        singles = [model.predict(ImageBatch(batch.tensor[i:i + 1], [batch.image_sizes[i]]))[0] for i in range(2)]
    for got, ref, (h, w) in zip(both, singles, batch.image_sizes):
        _same(got, ref, atol=1e-4)
        assert float(got.boxes.tensor[:, 0::2].max()) <= w and float(got.boxes.tensor[:, 1::2].max()) <= h


@pytest.mark.slow
def test_onnx_batch_equals_eager_and_verify_checks_a_mixed_batch(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = export_onnx(None, ckpt, output_file=out, dynamic_export=True)
    rows = result.verify.rows
    assert [r.image for r in rows][-2:] == ["data.test[0] + 3/4 crop (batch)"] * 2 and all(r.ok for r in rows)
    predictor = OnnxPredictor(out)
    assert predictor.input_names == ["input", "image_sizes"]
    model = load_model(ckpt, None, "cpu").model
    batch = _batch()
    with torch.no_grad():
        eager = model.predict(batch)
    onnx = predictor.predict(batch)
    for got, ref in zip(onnx, eager):
        _same(got, ref, atol=1e-3)
    # the graph, not only the final clamp, clips per image: raw dets of the smaller image stay inside 40x70
    dets = predictor.session.run(None, graph_feed(predictor.input_names, batch))[0]
    keep = dets[1, :, 4] > 0
    assert keep.any() and dets[1, keep, 0:4:2].max() <= 40 and dets[1, keep, 1:4:2].max() <= 70
    # and verify's mixed batch is two different valid sizes in one tensor
    mixed = mixed_size_batch(ImageBatch(batch.tensor[:1], [(96, 64)]))
    assert mixed.tensor.shape == (2, 3, 96, 64) and mixed.image_sizes == [(96, 64), (72, 48)]
    assert np.count_nonzero(mixed.tensor[1, :, 72:].numpy()) == 0


@pytest.mark.slow
def test_verify_catches_a_graph_clipping_to_the_padded_batch(tmp_path: Path) -> None:
    """What det exported before: boxes clipped to the padded input before NMS. The mixed-size batch of
    the parity gate tells it apart from eager mode."""
    from detcli.engine.onnx_export import trace_to_onnx, verify_parity
    from detcli.models.deploy import DeployDetector

    class PaddedClip(DeployDetector):
        def forward(self, images: torch.Tensor, image_sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
            return super().forward(images, None) if image_sizes is None else super().forward(images, image_sizes * 0 + torch.tensor(
                [images.shape[-2], images.shape[-1]], dtype=image_sizes.dtype))

    model = load_model(_random_checkpoint(tmp_path, "fcos"), None, "cpu").model
    batch = _batch()
    for wrapper, ok in ((DeployDetector(model).eval(), True), (PaddedClip(model).eval(), False)):
        path = tmp_path / f"{type(wrapper).__name__}.onnx"
        trace_to_onnx(wrapper, batch.tensor[:1], path, 11, {"input": {0: "batch", 2: "height", 3: "width"},
                                                            "dets": {0: "batch"}, "labels": {0: "batch"}})
        report = verify_parity(wrapper, str(path), [("mixed", batch)])
        assert [r.ok for r in report.rows] == [True, ok]  # the 96x64 image is the padded size: both agree
