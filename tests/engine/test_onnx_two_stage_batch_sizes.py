"""Two-stage detectors on a padded batch of images of different sizes: eager batch == eager single image,
and the ONNX graph (which takes each image's valid size as ``image_sizes``) == eager, image by image.

Before the ``image_sizes`` input, the Faster / Mask / Cascade R-CNN graphs clipped proposals, cascade
refinements and final boxes to the padded batch while eager mode clips to each image's own size: the
smaller image of a batch got other proposals, so other detections. The sibling
``test_onnx_batch_sizes.py`` covers the dense graphs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detcli.config import load_config
from detcli.engine.builders import build_model, load_model
from detcli.engine.checkpoint import atomic_save, make_checkpoint
from detcli.engine.onnx_export import (
    OnnxPredictor,
    export_onnx,
    graph_feed,
    image_sizes_tensor,
    trace_to_onnx,
    verify_parity,
)
from detcli.models.deploy_two_stage import DeployTwoStage
from detcli.structures import Boxes, Detections, ImageBatch

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
PRESETS = {"faster": "presets/mask_rcnn_r18_fpn_shapes.yaml", "mask": "presets/mask_rcnn_r18_fpn_shapes.yaml",
           "cascade_mask": "presets/cascade_mask_rcnn_r18_fpn_shapes.yaml"}
#: the architecture of these tests, pinned (the shapes presets they start from may change): a full-width
#: ResNet-18, a 16-channel FPN / RPN / RoI head and a small test_cfg; with the weights of
#: :func:`_random_checkpoint` the RPN proposes boxes past the smaller image's border, where a graph clipping
#: to the padded batch differs from eager mode
PINNED = [
    "model.backbone.depth=18", "model.backbone.base_channels=64", "model.backbone.init_cfg=null",
    "model.neck.in_channels=[64,128,256,512]", "model.neck.out_channels=16",
    "model.rpn_head.in_channels=16", "model.rpn_head.feat_channels=16",
    "model.roi_head.bbox_roi_extractor.out_channels=16", "model.roi_head.mask_roi_extractor.out_channels=16",
    "model.roi_head.mask_head.num_convs=1", "model.roi_head.mask_head.in_channels=16",
    "model.roi_head.mask_head.conv_out_channels=16", "model.roi_head.mask_head.num_classes=4",
    "model.test_cfg.rpn.nms_pre=100", "model.test_cfg.rpn.max_per_img=40", "model.test_cfg.rpn.min_bbox_size=0",
    "model.test_cfg.rcnn.score_thr=0.05", "model.test_cfg.rcnn.max_per_img=30",
    "model.test_cfg.rcnn.mask_thr_binary=0.5",
    "data.test.num_images=2", "data.test.img_size=96", "data.test.pipeline.1.img_scale=[96,96]",
]
BOX_HEAD = ["in_channels=16", "fc_out_channels=32", "num_classes=4"]
CLASSES = ["a", "b", "c", "d"]


def _config(kind: str) -> dict:
    heads = [f"model.roi_head.bbox_head.{t}.{k}" for t in range(3) for k in BOX_HEAD] if kind == "cascade_mask" \
        else [f"model.roi_head.bbox_head.{k}" for k in BOX_HEAD]
    cfg = load_config(str(ROOT / PRESETS[kind]), PINNED + heads)
    if kind == "faster":
        roi = cfg["model"]["roi_head"]
        del roi["mask_head"], roi["mask_roi_extractor"]
        cfg["model"]["type"] = "FasterRCNN"
    return cfg


def _random_checkpoint(tmp: Path, kind: str) -> Path:
    cfg = _config(kind)
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.nn.init.normal_(model.rpn_head.rpn_cls.weight, std=0.3)  # spread the scores: no near-ties
    for stage in getattr(model.roi_head, "stages", [model.roi_head]):
        torch.nn.init.normal_(stage.bbox_head.fc_cls.weight, std=0.3)  # some RoIs pass score_thr
        torch.nn.init.normal_(stage.bbox_head.fc_reg.weight, std=0.05)
    path = tmp / f"{kind}.pth"
    atomic_save(make_checkpoint(model, epoch=0, iter=0, config=cfg, classes=CLASSES), path)
    return path


@pytest.fixture(scope="module", params=list(PRESETS))
def ckpt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _random_checkpoint(tmp_path_factory.mktemp(request.param), request.param)


SMALL = (64, 48)


def _batch() -> ImageBatch:
    """96x96 and 64x48 in one padded 96x96 batch."""
    torch.manual_seed(1)
    a = torch.randn(1, 3, 96, 96)
    b = torch.zeros(1, 3, 96, 96)
    b[..., :SMALL[0], :SMALL[1]] = torch.randn(1, 3, *SMALL)
    return ImageBatch(torch.cat([a, b]), [(96, 96), SMALL])


def _same(got: Detections, ref: Detections, atol: float, mask_frac: float = 0.0) -> None:
    assert len(got) == len(ref) > 0
    assert got.labels.tolist() == ref.labels.tolist()
    torch.testing.assert_close(got.boxes.tensor, ref.boxes.tensor, atol=atol, rtol=0)
    torch.testing.assert_close(got.scores, ref.scores, atol=1e-4, rtol=0)
    assert (got.masks is None) == (ref.masks is None)
    if ref.masks is not None:
        assert got.masks.shape == ref.masks.shape == (len(ref), *ref.image_size) and got.masks.dtype == torch.bool
        assert int(ref.masks.sum()) > 0
        assert float((got.masks ^ ref.masks).float().mean()) <= mask_frac


def _outside(dets: torch.Tensor, keep: torch.Tensor, size: tuple[int, int]) -> int:
    """Rows of ``dets (N, 5)`` (used ones: ``keep``) reaching past ``size = (h, w)``."""
    boxes = dets[keep, :4]
    return int(((boxes[:, 2] > size[1]) | (boxes[:, 3] > size[0])).sum())


def test_eager_batch_equals_single_images_and_the_wrapper(ckpt: Path) -> None:
    """Eager: a padded batch == each image alone. The export wrapper (run in PyTorch) with ``image_sizes``
    == eager per image, masks included; without them it clips to the padded batch, and the smaller image's
    detections then reach past its border: the case the sizes input exists for."""
    model = load_model(ckpt, None, "cpu").model
    batch = _batch()
    wrapper = DeployTwoStage(model).eval()
    assert wrapper.input_names == ["input", "image_sizes"]
    with torch.no_grad():
        both = model.predict(batch)
        singles = [model.predict(ImageBatch(batch.tensor[i:i + 1], [batch.image_sizes[i]]))[0] for i in range(2)]
        outs = wrapper(batch.tensor, image_sizes_tensor(batch.image_sizes))
        padded = wrapper(batch.tensor)
    for i, (got, ref, (h, w)) in enumerate(zip(both, singles, batch.image_sizes)):
        _same(got, ref, atol=1e-4)
        assert float(got.boxes.tensor[:, 0::2].max()) <= w and float(got.boxes.tensor[:, 1::2].max()) <= h
        keep = outs[1][i] >= 0
        graph = Detections((h, w), Boxes(outs[0][i, keep, :4]), outs[0][i, keep, 4], outs[1][i, keep],
                           outs[2][i, keep, :h, :w] if len(outs) > 2 else None)
        _same(graph, got, atol=1e-4)
        if len(outs) > 2:  # nothing pasted beyond the image
            assert not outs[2][i, :, h:].any() and not outs[2][i, :, :, w:].any()
    assert _outside(outs[0][1], outs[1][1] >= 0, SMALL) == 0
    assert _outside(padded[0][1], padded[1][1] >= 0, SMALL) > 0
    assert torch.equal(padded[0][0], outs[0][0])  # the 96x96 image is the padded size: the same either way


@pytest.mark.slow
def test_onnx_batch_equals_eager_and_verify_checks_a_mixed_batch(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = export_onnx(None, ckpt, output_file=out, dynamic_export=True)
    rows = result.verify.rows
    assert [r.image for r in rows][-2:] == ["data.test[0] + 3/4 crop (batch)"] * 2 and all(r.ok for r in rows)
    assert all(r.torch_dets == r.onnx_dets == r.matched > 0 for r in rows)
    predictor = OnnxPredictor(out)
    assert predictor.input_names == ["input", "image_sizes"]
    model = load_model(ckpt, None, "cpu").model
    batch = _batch()
    with torch.no_grad():
        eager = model.predict(batch)
    onnx = predictor.predict(batch)
    for got, ref in zip(onnx, eager):
        _same(got, ref, atol=1e-3, mask_frac=1e-3)
    # the graph, not only the predictor's final clamp, clips per image: the smaller image's raw dets stay
    # inside 48x64, and its masks are empty past that
    outs = predictor.session.run(None, graph_feed(predictor.input_names, batch))
    dets, labels = torch.from_numpy(outs[0]), torch.from_numpy(outs[1])
    assert (labels[1] >= 0).any() and _outside(dets[1], labels[1] >= 0, SMALL) == 0
    if len(outs) > 2:
        masks = outs[2]
        assert masks.shape[:2] == labels.shape and masks.shape[2:] == (96, 96) and masks.dtype == np.bool_
        assert masks[1].any() and not masks[1, :, SMALL[0]:].any() and not masks[1, :, :, SMALL[1]:].any()


class PaddedClip(DeployTwoStage):
    """What det exported before: every box clipped to the padded input (``image_sizes`` stays a graph input,
    replaced by the input's size)."""

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if image_sizes is None:
            return super().forward(images)
        hw = torch.stack([torch.ones_like(images[0, 0, :, 0]).sum(), torch.ones_like(images[0, 0, 0, :]).sum()])  # (H, W)
        return super().forward(images, image_sizes * 0 + hw.to(image_sizes.dtype))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["faster", "mask"])
def test_verify_catches_a_two_stage_graph_clipping_to_the_padded_batch(kind: str, tmp_path: Path) -> None:
    """The mixed-size batch of the parity gate tells a graph clipping to the padded batch apart from eager
    mode, for two-stage graphs as for dense ones."""
    model = load_model(_random_checkpoint(tmp_path, kind), None, "cpu").model
    batch = _batch()
    names = ["dets", "labels", "masks"] if kind == "mask" else ["dets", "labels"]
    axes = {"input": {0: "batch", 2: "height", 3: "width"}, **{n: {0: "batch"} for n in names}}
    for wrapper, ok in ((DeployTwoStage(model).eval(), True), (PaddedClip(model).eval(), False)):
        path = tmp_path / f"{type(wrapper).__name__}.onnx"
        trace_to_onnx(wrapper, batch.tensor[:1], path, 16, axes)
        report = verify_parity(wrapper, str(path), [("mixed", batch)])
        assert [r.ok for r in report.rows] == [True, ok]  # the 96x96 image is the padded size: both agree
