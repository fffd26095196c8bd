"""torchvision's RetinaNet / FCOS (ResNet-50-FPN, COCO_V1 architecture) and det's ``*_tv`` presets
give the same numbers at every stage once a torchvision state dict is converted by the key map.

torchvision's models are built without weights, with FrozenBatchNorm2d as its COCO builders use,
and perturbed with a fixed seed so that real detections come out (scores above the thresholds,
enough candidates for the per-level top-k, NMS and ``detections_per_img`` to bind). The 11 labels
torchvision has beyond the 80 COCO classes (background, unused ids) get a bias of -60, so they never
score (as in trained weights) and dropping them does not change the candidates. Both models get the
same normalised, padded tensor: torchvision's GeneralizedRCNNTransform is bypassed and its
internals (``backbone``, ``head``, ``anchor_generator``, ``postprocess_detections``,
``compute_loss``) are called directly.

det's final :class:`Detections` are float32 (``Boxes``), so float64 detections are compared to
torchvision's rounded to float32 (within one float32 ulp); every other stage to 1e-9.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detcli.models.dense_utils import flatten_levels
from detcli.structures import Boxes, GroundTruth, ImageBatch

pytest.importorskip("torchvision.models.detection")
from torchvision.models.detection.image_list import ImageList  # noqa: E402

from tests.models.torchvision_helpers import IDS, det_from_torchvision, perturb_dense, tv_dense_model  # noqa: E402

#: the padded batch (P7 is 1 x 1: torchvision's strides there are 64 // 1 and 96 // 1, not 128)
PAD = (64, 96)
SIZES = [(64, 96), (50, 80)]


def _pair(kind: str, dtype: torch.dtype) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    tv = tv_dense_model(kind)
    perturb_dense(tv, kind, g)
    assert not any(k.endswith("num_batches_tracked") for k in tv.state_dict())  # as in the COCO_V1 files
    det, _ = det_from_torchvision(f"{kind}_r50_fpn_coco_tv", tv)
    x = torch.randn(2, 3, *PAD, generator=g)
    x[1, :, SIZES[1][0]:] = 0
    x[1, :, :, SIZES[1][1]:] = 0
    return tv.to(dtype), det.to(dtype).eval(), x.to(dtype)


@pytest.fixture(scope="module", params=["retinanet", "fcos"])
def pair64(request: pytest.FixtureRequest):
    return (request.param, *_pair(request.param, torch.float64))


def _stages(kind: str, tv: nn.Module, det: nn.Module, x: torch.Tensor) -> dict:
    with torch.no_grad():
        body = list(tv.backbone.body(x).values())
        feats_tv = list(tv.backbone(x).values())
        head_tv = tv.head(feats_tv)
        anchors_tv = tv.anchor_generator(ImageList(x, SIZES), feats_tv)
        c = det.backbone(x)[1:]
        feats = det.neck(det.backbone(x))
        outs = det.bbox_head(feats)
    return {"body": body, "feats_tv": feats_tv, "head_tv": head_tv, "anchors_tv": anchors_tv,
            "c": c, "feats": feats, "outs": outs}


def _close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> None:
    if dtype == torch.float64:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    else:
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * float(b.abs().max()))


def _check_stages(kind: str, tv: nn.Module, det: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> None:
    s = _stages(kind, tv, det, x)
    for a, b in zip(s["c"], s["body"]):
        _close(a, b, dtype)  # backbone C3..C5
    assert len(s["feats"]) == len(s["feats_tv"]) == 5
    for a, b in zip(s["feats"], s["feats_tv"]):
        _close(a, b, dtype)  # FPN P3..P7
    head_tv, outs = s["head_tv"], s["outs"]
    if kind == "retinanet":
        _close(flatten_levels(outs[0], 80), head_tv["cls_logits"].view(2, -1, 91)[:, :, IDS], dtype)
        _close(flatten_levels(outs[1], 4), head_tv["bbox_regression"], dtype)
    else:
        _close(flatten_levels(outs[0], 80), head_tv["cls_logits"][:, :, IDS], dtype)
        _close(flatten_levels(outs[1], 4), head_tv["bbox_regression"], dtype)  # relu(bbox_reg)
        _close(flatten_levels(outs[2], 1), head_tv["bbox_ctrness"], dtype)


def test_stages_float64(pair64) -> None:
    kind, tv, det, x = pair64
    _check_stages(kind, tv, det, x, torch.float64)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["retinanet", "fcos"])
def test_stages_float32(kind: str) -> None:
    tv, det, x = _pair(kind, torch.float32)
    _check_stages(kind, tv, det, x, torch.float32)


def test_priors_equal(pair64) -> None:
    kind, tv, det, x = pair64
    s = _stages(kind, tv, det, x)
    sizes = [tuple(f.shape[-2:]) for f in s["feats"]]
    assert sizes[-1] == (1, 1)
    anchors_tv = s["anchors_tv"][0]
    if kind == "retinanet":
        got = torch.cat(det.bbox_head._anchors.get(sizes, x.dtype, x.device, PAD)[1:])
        torch.testing.assert_close(got, anchors_tv, rtol=0, atol=0)
    else:  # FCOS points are torchvision's anchor centres
        got = torch.cat(det.bbox_head._points.get(sizes, x.dtype, x.device, PAD)[3:])
        torch.testing.assert_close(got, (anchors_tv[:, :2] + anchors_tv[:, 2:]) / 2, rtol=0, atol=0)


def test_detections_equal(pair64) -> None:
    kind, tv, det, x = pair64
    s = _stages(kind, tv, det, x)
    num_per_level = [h * w * (9 if kind == "retinanet" else 1) for h, w in (f.shape[-2:] for f in s["feats_tv"])]
    split = {k: list(v.split(num_per_level, dim=1)) for k, v in s["head_tv"].items()}
    anchors = [list(a.split(num_per_level)) for a in s["anchors_tv"]]
    with torch.no_grad():
        expected = tv.postprocess_detections(split, anchors, SIZES)
    dets = det.predict(ImageBatch(x, SIZES))
    max_per_img = 300 if kind == "retinanet" else 100
    for d, e in zip(dets, expected):
        assert len(d) == len(e["boxes"]) == max_per_img  # the cap binds: real detections
        assert d.image_size == tuple(SIZES[dets.index(d)])
        torch.testing.assert_close(IDS[d.labels], e["labels"], rtol=0, atol=0)
        assert len(set(e["labels"].tolist())) > 5
        # det's Detections are float32: torchvision's float64 values rounded, within one ulp
        torch.testing.assert_close(d.scores, e["scores"].float(), rtol=2.4e-7, atol=0)
        torch.testing.assert_close(d.boxes.tensor, e["boxes"].float(), rtol=2.4e-7, atol=1e-12)
    assert float(dets[1].boxes.tensor[:, 2].max()) <= SIZES[1][1]  # clipped to the valid region


def _targets() -> list[GroundTruth]:
    # boxes far apart: the best ("low-quality") anchor of one box then has it as its own best box too;
    # where an anchor is some box's best but overlaps another box more, torchvision gives it its own
    # best box while mmdet's MaxIoUAssigner (det) gives it to the box it is the best anchor of
    boxes = torch.tensor([[2.0, 4.0, 34.0, 40.0], [52.0, 14.0, 94.0, 62.0]])
    return [GroundTruth(PAD, Boxes(boxes), torch.tensor([0, 56]))]


def test_retinanet_losses_batch_of_one(pair64) -> None:
    """RetinaNet losses agree at batch 1 (torchvision normalises per image, then averages images;
    det divides the batch sum by the summed positives). Low-quality matches break ties differently
    when boxes overlap (see ``_targets``)."""
    kind, tv, det, x = pair64
    if kind != "retinanet":
        pytest.skip("FCOS: see test_fcos_losses")
    x1 = x[:1]
    targets = _targets()
    with torch.no_grad():
        feats_tv = list(tv.backbone(x1).values())
        head_tv = tv.head(feats_tv)
        anchors = tv.anchor_generator(ImageList(x1, [PAD]), feats_tv)
        tv_targets = [{"boxes": t.boxes.tensor.to(x.dtype), "labels": IDS[t.labels]} for t in targets]
        expected = tv.compute_loss(tv_targets, head_tv, anchors)
        got = det.loss(ImageBatch(x1, [PAD]), targets)
    torch.testing.assert_close(got["loss_cls"], expected["classification"], rtol=0, atol=1e-9)
    torch.testing.assert_close(got["loss_bbox"], expected["bbox_regression"], rtol=0, atol=1e-9)


def test_fcos_losses(pair64) -> None:
    """FCOS: classification and centerness losses agree; the box loss differs by design.

    torchvision's ``bbox_regression`` is a GIoU loss summed over positives and divided by their
    number; det (mmdet 2.x FCOS) weights each positive's GIoU loss by its centerness target and
    divides by the sum of those targets. Assignment (center sampling radius 1.5 x anchor size,
    regress ranges 0/64/128/256/512/inf, smallest-area GT) is the same.
    """
    kind, tv, det, x = pair64
    if kind != "fcos":
        pytest.skip("RetinaNet: see test_retinanet_losses_batch_of_one")
    x1 = x[:1]
    targets = _targets()
    with torch.no_grad():
        feats_tv = list(tv.backbone(x1).values())
        head_tv = tv.head(feats_tv)
        anchors = tv.anchor_generator(ImageList(x1, [PAD]), feats_tv)
        num_per_level = [f.shape[-2] * f.shape[-1] for f in feats_tv]
        tv_targets = [{"boxes": t.boxes.tensor.to(x.dtype), "labels": IDS[t.labels]} for t in targets]
        expected = tv.compute_loss(tv_targets, head_tv, anchors, num_per_level)
        got = det.loss(ImageBatch(x1, [PAD]), targets)
    torch.testing.assert_close(got["loss_cls"], expected["classification"], rtol=0, atol=1e-9)
    torch.testing.assert_close(got["loss_centerness"], expected["bbox_ctrness"], rtol=0, atol=1e-9)
    assert not math.isclose(float(got["loss_bbox"]), float(expected["bbox_regression"]), rel_tol=1e-6)


def test_export_graph_equals_predict(pair64) -> None:
    """The ONNX export wrapper (eager) honours the torchvision options: image-derived anchor strides,
    anchor-centre points, geometric-mean FCOS scores, no Scale."""
    from detcli.models.deploy import DeployDetector

    kind, tv, det, x = pair64
    x1 = x[:1]
    with torch.no_grad():
        dets, labels = DeployDetector(det).eval()(x1)
    expected = det.predict(ImageBatch(x1, [PAD]))[0]
    n = len(expected)
    assert n > 0 and bool((labels[0, :n] >= 0).all())
    torch.testing.assert_close(labels[0, :n], expected.labels, rtol=0, atol=0)
    torch.testing.assert_close(dets[0, :n, 4].float(), expected.scores, rtol=2.4e-7, atol=0)
    torch.testing.assert_close(dets[0, :n, :4].float(), expected.boxes.tensor, rtol=2.4e-7, atol=1e-12)
