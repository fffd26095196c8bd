"""The dense-head template (detcli.models.dense_head): RetinaNet / FCOS outputs equal the numbers of
their pre-template per-head loops, eager and export forms agree, a new head is exportable by
construction, and the candidate selection's edge cases (empty, one prior, top-k ties, threshold)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from detcli.models.coders import DistancePointBBoxCoder, TorchvisionDeltaXYWHBBoxCoder
from detcli.models.dense_head import BaseDenseHead, LevelScores, level_candidates
from detcli.models.deploy import check_exportable, deploy_model
from detcli.models.detector import DenseTestConfig, SingleStageDetector
from detcli.models.fcos import FCOSHead
from detcli.models.priors import AnchorGenerator, MlvlPointGenerator, TorchvisionAnchorGenerator
from detcli.models.retinanet import RetinaHead
from detcli.structures import ImageBatch

#: outputs of RetinaHead.predict / FCOSHead.predict recorded before the template (commit 5666d15)
GOLDEN = Path(__file__).parent / "data" / "dense_head_golden.json"
PAD = (64, 96)
SIZES = [(64, 96), (50, 72)]
FEAT_SIZES = [(8, 12), (4, 6), (2, 3)]
RANGES = ((-1, 64), (64, 128), (128, 1e8))


def _tv_gen(two: bool) -> TorchvisionAnchorGenerator:
    sizes = [[32 * 2 ** i * s for s in ((1.0, 1.26) if two else (1.0,))] for i in range(3)]
    return TorchvisionAnchorGenerator(sizes, [0.5, 1.0, 2.0] if two else [1.0], [8, 16, 32])


#: name -> (head factory, test_cfg): every option of the two heads' post-processing
CASES: dict[str, tuple[Callable[[], BaseDenseHead], dict[str, Any]]] = {
    "retina_mmdet": (lambda: RetinaHead(3, 8, stacked_convs=0, anchor_generator=AnchorGenerator(
        strides=(8, 16, 32), ratios=(0.5, 1.0, 2.0), octave_base_scale=4, scales_per_octave=2)),
        {"nms_pre": 60, "score_thr": 0.3, "max_per_img": 25}),
    "retina_tv": (lambda: RetinaHead(3, 8, stacked_convs=0, anchor_generator=_tv_gen(True),
                                     bbox_coder=TorchvisionDeltaXYWHBBoxCoder(target_stds=(0.1, 0.1, 0.2, 0.2))),
                  {"nms_pre": 40, "score_thr": 0.2, "max_per_img": 25, "min_bbox_size": 6.0}),
    "fcos_product": (lambda: FCOSHead(3, 8, stacked_convs=0, strides=(8, 16, 32), norm_on_bbox=True,
                                      regress_ranges=RANGES),
                     {"nms_pre": 50, "score_thr": 0.1, "max_per_img": 25}),
    "fcos_geometric": (lambda: FCOSHead(3, 8, stacked_convs=0, strides=(8, 16, 32), use_scale=False,
                                        centerness_score="geometric_mean", prior_generator=_tv_gen(False),
                                        regress_ranges=RANGES),
                       {"nms_pre": 50, "score_thr": 0.2, "max_per_img": 25,
                        "nms": {"type": "nms", "iou_threshold": 0.6, "class_agnostic": True}}),
}


def _raw_outputs(head: BaseDenseHead, seed: int = 0) -> tuple[list[Tensor], ...]:
    """Fixed raw head outputs (the network is not involved: only post-processing is compared)."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(head, RetinaHead):
        a, c = head.num_anchors, head.num_classes
        cls = [torch.randn(2, a * c, h, w, generator=g) * 2 - 1 for h, w in FEAT_SIZES]
        reg = [torch.randn(2, a * 4, h, w, generator=g) * 0.5 for h, w in FEAT_SIZES]
        return cls, reg
    c = head.num_classes
    cls = [torch.randn(2, c, h, w, generator=g) * 2 - 1 for h, w in FEAT_SIZES]
    reg = [torch.rand(2, 4, h, w, generator=g) * 3 + 0.2 for h, w in FEAT_SIZES]
    if not head.norm_on_bbox:
        reg = [r * 12 for r in reg]
    ctr = [torch.randn(2, 1, h, w, generator=g) for h, w in FEAT_SIZES]
    return cls, reg, ctr


def _case(name: str) -> tuple[BaseDenseHead, tuple[list[Tensor], ...], DenseTestConfig]:
    make, cfg = CASES[name]
    head = make()
    return head, _raw_outputs(head), DenseTestConfig.parse(cfg)


@pytest.mark.parametrize("name", list(CASES))
def test_predict_equals_the_pre_template_outputs_bit_for_bit(name: str) -> None:
    head, outs, cfg = _case(name)
    expected = json.loads(GOLDEN.read_text())[name]
    dets = head.postprocess(outs, ImageBatch(torch.zeros(2, 3, *PAD), SIZES), cfg)
    for d, e in zip(dets, expected, strict=True):
        assert len(d) == 25  # max_per_img binds
        assert torch.equal(d.boxes.tensor, torch.tensor(e["boxes"], dtype=torch.float32))
        assert torch.equal(d.scores, torch.tensor(e["scores"], dtype=torch.float32))
        assert torch.equal(d.labels, torch.tensor(e["labels"]))


@pytest.mark.parametrize("name", list(CASES))
def test_export_form_equals_predict(name: str) -> None:
    """The graph clips to the input, so predict gets the padded size for every image."""
    head, outs, cfg = _case(name)
    images = torch.zeros(2, 3, *PAD)
    dets, labels = head.export(outs, images, cfg, cfg.nms_pre, 200)
    expected = head.postprocess(outs, ImageBatch(images, [PAD, PAD]), cfg)
    assert dets.shape == (2, 25, 5) and labels.shape == (2, 25)
    for i, e in enumerate(expected):
        assert len(e) == 25
        assert torch.equal(labels[i], e.labels)
        torch.testing.assert_close(dets[i, :, 4], e.scores, rtol=1.2e-7, atol=0)  # one float32 ulp
        torch.testing.assert_close(dets[i, :, :4], e.boxes.tensor, rtol=0, atol=0)


# --------------------------------------------------------------------------- a new head: one class


class ToyHead(BaseDenseHead):
    """One level of points, class logits and distances: the least a template head writes."""

    def __init__(self, num_classes: int = 2, logits: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.logits = logits
        self.prior_generator = MlvlPointGenerator((8,))
        self.coder = DistancePointBBoxCoder()
        self.conv_cls = nn.Conv2d(4, num_classes, 1)
        self.conv_reg = nn.Conv2d(4, 4, 1)

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[list[Tensor], list[Tensor]]:
        return [self.conv_cls(feats[0])], [self.conv_reg(feats[0]).exp()]

    @property
    def output_channels(self) -> tuple[int, ...]:
        return (self.num_classes, 4)

    def level_scores(self, level: int, outputs: Sequence[Tensor]) -> LevelScores:
        return LevelScores(outputs[0], logits=self.logits)

    def decode_level(self, level: int, priors: Tensor, outputs: Sequence[Tensor],
                     max_shape: tuple[int, int] | None) -> Tensor:
        return self.coder.decode(priors, outputs[0], max_shape=max_shape)


class ToyDetector(SingleStageDetector):
    pass


def test_a_new_template_head_is_exportable_by_construction() -> None:
    torch.manual_seed(0)
    head = ToyHead()
    det = ToyDetector(nn.Conv2d(3, 4, 8, stride=8), None, head, test_cfg={"score_thr": 0.0, "max_per_img": 5})
    det.backbone = nn.Sequential(det.backbone)  # a tuple of maps: one level
    det.extract_feat = lambda images: (det.backbone(images),)  # type: ignore[method-assign]
    check_exportable(det)
    wrapper = deploy_model(det)
    assert wrapper.output_names == ["dets", "labels"]
    assert deploy_model(det, postprocess=False).output_names == ["cls_score_0", "bbox_pred_0"]
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        dets, labels = wrapper(x)
    expected = det.predict(ImageBatch(x, [(32, 48)]))[0]
    assert len(expected) == 5 and torch.equal(labels[0], expected.labels)
    torch.testing.assert_close(dets[0, :, :4], expected.boxes.tensor, rtol=0, atol=0)


# --------------------------------------------------------------------------- candidate selection


def _select(head: ToyHead, logits: Tensor, score_thr: float, nms_pre: int, padded: bool) -> tuple[list, list, list]:
    """level_candidates on one image's ``(N, C)`` ranking values with zero distances at the points."""
    n = logits.shape[0]
    priors = torch.stack([torch.arange(n, dtype=torch.float32) * 8 + 4, torch.full((n,), 4.0)], dim=1)  # (N, 2)
    outputs = [logits[None], torch.zeros(1, n, 4)]
    c = level_candidates(head, 0, outputs, priors, score_thr, nms_pre, None, padded)
    keep = c.scores[0] >= 0
    return c.scores[0][keep].tolist(), c.labels[0][keep].tolist(), c.boxes[0][keep, 0].tolist()


@pytest.mark.parametrize("padded", [False, True])
def test_candidates_of_an_empty_level_and_none_above_threshold(padded: bool) -> None:
    head = ToyHead()
    assert _select(head, torch.zeros(0, 2), 0.05, 10, padded) == ([], [], [])
    assert _select(head, torch.full((3, 2), -5.0), 0.05, 10, padded) == ([], [], [])  # sigmoid(-5) = 0.0067


@pytest.mark.parametrize("padded", [False, True])
def test_candidates_of_one_prior(padded: bool) -> None:
    scores, labels, x1 = _select(ToyHead(num_classes=1), torch.tensor([[2.0]]), 0.05, 10, padded)
    assert labels == [0] and x1 == [4.0]  # the point (4, 4), zero distances
    assert scores == pytest.approx([1 / (1 + math.exp(-2.0))], rel=1e-7)


@pytest.mark.parametrize("padded", [False, True])
def test_topk_boundary_ties_keep_exactly_nms_pre(padded: bool) -> None:
    """Values 3, 2, 2, 1 (one class): top 2 keeps 3 and one of the tied 2s (either prior)."""
    head = ToyHead(num_classes=1, logits=False)
    values = torch.tensor([[3.0], [2.0], [2.0], [1.0]])
    scores, _, x1 = _select(head, values, 0.0, 2, padded)
    assert scores == [3.0, 2.0] and x1[0] == 4.0 and x1[1] in (12.0, 20.0)
    scores, _, x1 = _select(head, values, 0.0, 3, padded)
    assert scores == [3.0, 2.0, 2.0] and sorted(x1) == [4.0, 12.0, 20.0]


@pytest.mark.parametrize("padded", [False, True])
def test_score_threshold_is_strict(padded: bool) -> None:
    """A score equal to score_thr is dropped, the next float above it is kept (both ranking forms)."""
    # logits: sigmoid(0) = 0.5 exactly, logit(0.5) = 0
    scores, labels, _ = _select(ToyHead(), torch.tensor([[0.0, 1e-6]]), 0.5, 10, padded)
    assert labels == [1] and scores == pytest.approx([0.5 + 2.5e-7], abs=1e-7)
    # values: 0.25 exactly at the threshold
    above = float(torch.nextafter(torch.tensor(0.25), torch.tensor(1.0)))
    scores, labels, _ = _select(ToyHead(logits=False), torch.tensor([[0.25, above]]), 0.25, 10, padded)
    assert labels == [1] and scores == [above]
