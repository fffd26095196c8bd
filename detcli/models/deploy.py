"""Export graphs of the dense detectors: the network plus post-processing in standard ONNX ops.

:class:`DeployDetector` wraps a trained :class:`SingleStageDetector` (RetinaNet or FCOS) for
``torch.onnx.export`` (TorchScript tracing). Input: ``images (B, 3, H, W)`` float32, the
preprocessed (normalised, padded) tensor. Outputs:

- ``dets (B, N, 5)``: ``(x1, y1, x2, y2, score)`` in input pixels, clipped to ``(H, W)``, sorted by
  score; ``N = max_per_img``; unused rows are zeros.
- ``labels (B, N)`` int64: class index ``0..C-1``; ``-1`` on unused rows.

Post-processing follows the PyTorch path of the heads (``predict``): per level the top ``nms_pre``
(``deploy_nms_pre`` when set) (prior, class) pairs by logit, score threshold on the class score,
box decoding, then ``NonMaxSuppression`` per class (``max_output_boxes_per_class``) and the top
``max_per_img``. Priors are computed inside the graph from the feature-map shapes, so a graph
exported with dynamic axes accepts other batch sizes and image sizes.

Faster / Mask R-CNN are exported by :class:`detcli.models.deploy_two_stage.DeployTwoStage` (built
on the helpers here); :func:`deploy_model` picks the wrapper and :func:`min_opset` its opset.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.detector import SingleStageDetector
from detcli.models.fcos import FCOS, FCOSHead
from detcli.models.priors import AnchorGenerator, MlvlPointGenerator, TorchvisionAnchorGenerator
from detcli.models.retinanet import RetinaHead, RetinaNet
from detcli.models.two_stage import FasterRCNN, MaskRCNN, TwoStageDetector

#: detectors ONNX export supports, by config ``type`` (two-stage ones by
#: :class:`detcli.models.deploy_two_stage.DeployTwoStage`)
SUPPORTED_DETECTORS = {"RetinaNet": RetinaNet, "FCOS": FCOS, "FasterRCNN": FasterRCNN, "MaskRCNN": MaskRCNN}
#: lowest ONNX opset of every op the dense graph uses (NonMaxSuppression 10, TopK with a K input
#: 10, ScatterND 11)
MIN_OPSET = 11
#: lowest opset of the two-stage graph: RoiAlign with ``coordinate_transformation_mode`` (aligned) is 16
MIN_OPSET_TWO_STAGE = 16


class NonMaxSuppressionOp(torch.autograd.Function):
    """``onnx::NonMaxSuppression`` with its eager semantics (used while tracing).

    Args of :meth:`forward`: boxes (Tensor[B, K, 4]) x1y1x2y2, scores (Tensor[B, C, K]), then the
    constants max_output_boxes_per_class, iou_threshold and score_threshold (scores must be
    ``> score_threshold``).

    Returns:
        Tensor[M, 3] int64 rows ``(batch, class, box)``.
    """

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_output: int, iou_threshold: float,  # noqa: ANN001
                score_threshold: float) -> Tensor:
        from detcli.ops import nms

        rows = []
        for b in range(scores.shape[0]):
            for c in range(scores.shape[1]):
                cand = (scores[b, c] > score_threshold).nonzero(as_tuple=True)[0]
                if cand.numel() == 0:
                    continue
                keep = cand[nms(boxes[b, cand], scores[b, c, cand], iou_threshold)][:max_output]
                rows.append(torch.stack([torch.full_like(keep, b), torch.full_like(keep, c), keep], dim=1))
        if not rows:
            return torch.zeros((0, 3), dtype=torch.long, device=boxes.device)
        return torch.cat(rows)

    @staticmethod
    def symbolic(g, boxes, scores, max_output: int, iou_threshold: float, score_threshold: float):  # noqa: ANN001, ANN205
        return g.op(
            "NonMaxSuppression", boxes, scores,
            g.op("Constant", value_t=torch.tensor([max_output], dtype=torch.long)),
            g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float)),
            g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float)),
        )


def _arange_like(x: Tensor) -> Tensor:
    """``0, 1, ..., len(x) - 1`` as floats, traced from ``x``'s length (keeps dynamic shapes)."""
    return torch.ones_like(x).cumsum(0) - 1


def _grid(feat: Tensor, stride: tuple[float, float] | tuple[Tensor, Tensor], offset: float) -> tuple[Tensor, Tensor]:
    """Row-major ``(xs, ys)`` of shape ``(H * W,)`` at ``(x + offset) * stride`` for ``feat (B, C, H, W)``."""
    xs = (_arange_like(feat[0, 0, 0, :]) + offset) * stride[0]  # (W,)
    ys = (_arange_like(feat[0, 0, :, 0]) + offset) * stride[1]  # (H,)
    xx = xs[None, :] + torch.zeros_like(ys)[:, None]  # (H, W)
    yy = ys[:, None] + torch.zeros_like(xs)[None, :]
    return xx.reshape(-1), yy.reshape(-1)


def _image_stride(feat: Tensor, images: Tensor) -> tuple[Tensor, Tensor]:
    """torchvision's stride of a level: ``(W_img // W_l, H_img // H_l)`` as traced float scalars."""
    w = torch.ones_like(images[0, 0, 0, :]).sum() / torch.ones_like(feat[0, 0, 0, :]).sum()
    h = torch.ones_like(images[0, 0, :, 0]).sum() / torch.ones_like(feat[0, 0, :, 0]).sum()
    return w.floor(), h.floor()


def _grid_anchors(feat: Tensor, generator: AnchorGenerator | TorchvisionAnchorGenerator, level: int,
                  images: Tensor | None = None) -> Tensor:
    """The ``(H * W * A, 4)`` anchors of ``level`` for ``feat (B, C, H, W)``, in prior order (traced).

    A generator that ``uses_pad_shape`` (:class:`TorchvisionAnchorGenerator`) takes its stride from
    ``images (B, 3, H, W)``, the graph input, so the graph reproduces it at every input size.
    """
    if getattr(generator, "uses_pad_shape", False):
        if images is None:
            raise ConfigError(f"{type(generator).__name__}: the export graph needs the input images to place anchors")
        stride = _image_stride(feat, images)
    else:
        stride = generator.strides[level]
    xs, ys = _grid(feat, stride, 0.0)
    base = generator.base_anchors[level].to(feat)  # (A, 4)
    return (torch.stack([xs, ys, xs, ys], dim=-1)[:, None, :] + base[None]).reshape(-1, 4)


def _per_prior(maps: Tensor, channels: int) -> Tensor:
    """``(B, A * k, H, W)`` -> ``(B, H * W * A, k)`` in prior order."""
    return maps.permute(0, 2, 3, 1).reshape(maps.shape[0], -1, channels)


def topk_padded(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top ``k`` of ``logits (B, N)``: values and indices ``(B, k)`` (``k <= 0``: all, in order).

    The scores are padded with ``k`` entries of ``-inf`` (whose index is ``N`` and beyond: gather
    with :func:`gather_padded`), so the output has ``k`` columns whatever the image size.
    """
    if k <= 0:
        idx = _arange_like(logits[0]).long()[None, :].expand_as(logits)
        return logits, idx
    pad = torch.full_like(logits[:, :1], -math.inf).expand(-1, k)
    return torch.cat([logits, pad], dim=1).topk(k, dim=1)


def gather_padded(x: Tensor, idx: Tensor, k: int) -> Tensor:
    """Rows ``idx (B, m)`` of ``x (B, N, d)``, ``x`` padded with ``k`` zero rows when ``k > 0``
    (the indices :func:`topk_padded` gives)."""
    if k > 0:
        x = torch.cat([x, torch.zeros_like(x[:, :1]).expand(-1, k, -1)], dim=1)
    return x.gather(1, idx[:, :, None].expand(-1, -1, x.shape[2]))


def clip_to_input(boxes: Tensor, images: Tensor) -> Tensor:
    """Clamp ``boxes (..., 4)`` to the ``(H, W)`` of ``images (B, 3, H, W)`` (traced, dynamic)."""
    h = torch.ones_like(images[0, 0, :, 0]).sum()
    w = torch.ones_like(images[0, 0, 0, :]).sum()
    zero = torch.zeros_like(w)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([torch.minimum(torch.maximum(x1, zero), w), torch.minimum(torch.maximum(y1, zero), h),
                        torch.minimum(torch.maximum(x2, zero), w), torch.minimum(torch.maximum(y2, zero), h)], dim=-1)


def nms_keep(boxes: Tensor, scores: Tensor, max_output: int, iou_threshold: float,
             score_threshold: float) -> Tensor:
    """``NonMaxSuppression`` of ``boxes (B, K, 4)`` per class of ``scores (B, C, K)`` (each class
    its own NMS; scores must be ``> score_threshold``) -> bool ``(B, K)``: kept for some class."""
    selected = NonMaxSuppressionOp.apply(boxes, scores, max_output, iou_threshold, score_threshold)  # (M, 3)
    keep = torch.zeros_like(scores[:, 0]).index_put((selected[:, 0], selected[:, 2]),
                                                    torch.ones_like(selected[:, 0], dtype=scores.dtype))
    return keep > 0


def top_detections(boxes: Tensor, scores: Tensor, labels: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The best ``n`` candidates per image: ``dets (B, n, 5)`` and ``labels (B, n)``; candidates
    with a negative score are unused (zero rows, label ``-1``)."""
    scores = torch.cat([scores, torch.full_like(scores[:, :1], -1.0).expand(-1, n)], dim=1)
    boxes = torch.cat([boxes, torch.zeros_like(boxes[:, :1]).expand(-1, n, -1)], dim=1)
    labels = torch.cat([labels, torch.full_like(labels[:, :1], -1).expand(-1, n)], dim=1)
    top, order = scores.topk(n, dim=1)  # (B, n)
    valid = top >= 0
    out_boxes = boxes.gather(1, order[:, :, None].expand(-1, -1, 4))
    dets = torch.cat([out_boxes, top[:, :, None]], dim=2) * valid[:, :, None].to(boxes.dtype)
    return dets, torch.where(valid, labels.gather(1, order), -1)


class DeployDetector(nn.Module):
    """A RetinaNet / FCOS detector with ONNX-exportable post-processing (see the module doc).

    Args:
        detector: a trained :class:`RetinaNet` or :class:`FCOS` (eval mode).
        postprocess: False exports the raw head outputs (per level class logits and box
            regressions, plus centerness for FCOS) instead of ``dets``/``labels``.
        nms_pre: candidates per level before NMS (None: ``test_cfg.deploy_nms_pre`` if set, else
            ``test_cfg.nms_pre``; ``<= 0``: all).
        max_output_boxes_per_class: ``NonMaxSuppression``'s cap per class and image.

    Raises:
        ConfigError: another detector type, or ``max_per_img <= 0``.
    """

    def __init__(self, detector: nn.Module, postprocess: bool = True, nms_pre: int | None = None,
                 max_output_boxes_per_class: int | None = None) -> None:
        super().__init__()
        check_exportable(detector)
        if not isinstance(detector, SingleStageDetector):
            raise ConfigError(f"model.type: {type(detector).__name__} is exported by deploy_model(), not DeployDetector")
        self.detector = detector
        self.postprocess = postprocess
        cfg = detector.test_settings
        self.nms_pre = int(nms_pre if nms_pre is not None else (cfg.deploy_nms_pre if cfg.deploy_nms_pre > 0 else cfg.nms_pre))
        self.max_output = int(max_output_boxes_per_class or cfg.max_output_boxes_per_class)
        self.cfg = cfg
        if cfg.max_per_img <= 0:
            raise ConfigError("model.test_cfg.max_per_img must be > 0 to export (the graph has a fixed number of output rows)")
        if self.max_output <= 0:
            raise ConfigError(f"max_output_boxes_per_class must be > 0, got {self.max_output}")

    @property
    def max_per_img(self) -> int:
        return self.cfg.max_per_img

    @property
    def output_names(self) -> list[str]:
        head = self.detector.bbox_head
        if self.postprocess:
            return ["dets", "labels"]
        levels = len(head.strides) if isinstance(head, FCOSHead) else head.anchor_generator.num_levels
        kinds = ["cls_score", "bbox_pred"] + (["centerness"] if isinstance(head, FCOSHead) else [])
        return [f"{k}_{i}" for k in kinds for i in range(levels)]

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        feats = self.detector.extract_feat(images)
        head = self.detector.bbox_head
        outs = head(feats)
        if not self.postprocess:
            return tuple(t.contiguous() for group in outs for t in group)
        if isinstance(head, RetinaHead):
            cand = self._retina_candidates(head, *outs, images=images)
        else:
            cand = self._fcos_candidates(head, *outs, images=images)
        boxes, scores, labels = (torch.cat(parts, dim=1) for parts in zip(*cand))
        return self._nms(boxes, scores, labels, images, head.num_classes)

    # ------------------------------------------------------------------ candidates per level

    def _topk(self, logits: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
        vals, idx = topk_padded(logits, self.nms_pre)
        return vals, idx // num_classes, idx % num_classes

    def _gather(self, x: Tensor, prior: Tensor) -> Tensor:
        return gather_padded(x, prior, self.nms_pre)

    def _valid(self, vals: Tensor) -> Tensor:
        thr = _logit_threshold(self.cfg.score_thr)
        return vals > thr if math.isfinite(thr) else vals > -math.inf

    def _retina_candidates(self, head: RetinaHead, cls_scores: list[Tensor], bbox_preds: list[Tensor],
                           images: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
        out = []
        gen = head.anchor_generator
        for level, (cls, reg) in enumerate(zip(cls_scores, bbox_preds)):
            anchors = _grid_anchors(cls, gen, level, images)
            vals, prior, labels = self._topk(_per_prior(cls, head.num_classes).flatten(1), head.num_classes)
            deltas = self._gather(_per_prior(reg, 4), prior)  # (B, k, 4)
            priors = self._gather(anchors[None].expand(cls.shape[0], -1, -1), prior)
            boxes = head.bbox_coder.decode(priors, deltas)
            out.append((boxes, torch.where(self._valid(vals), vals.sigmoid(), -1.0), labels))
        return out

    def _fcos_candidates(self, head: FCOSHead, cls_scores: list[Tensor], bbox_preds: list[Tensor],
                         centernesses: list[Tensor], images: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
        out = []
        gen = head.prior_generator
        for level, (cls, reg, ctr) in enumerate(zip(cls_scores, bbox_preds, centernesses)):
            if isinstance(gen, MlvlPointGenerator):
                xs, ys = _grid(cls, gen.strides[level], gen.offset)
                points = torch.stack([xs, ys], dim=-1)  # (HW, 2)
            else:  # one anchor per location: its centre
                anchors = _grid_anchors(cls, gen, level, images)  # (HW, 4)
                points = (anchors[:, :2] + anchors[:, 2:]) / 2
            if head.centerness_score == "geometric_mean":
                # torchvision: threshold and top-k on sqrt(p_cls * p_ctr)
                scores = torch.sqrt(_per_prior(cls, head.num_classes).sigmoid() * _per_prior(ctr, 1).sigmoid())
                vals, prior, labels = self._topk(scores.flatten(1), head.num_classes)
                thr = self.cfg.score_thr
                final = torch.where(vals > thr if thr > 0 else vals > -math.inf, vals, -1.0)
            else:
                vals, prior, labels = self._topk(_per_prior(cls, head.num_classes).flatten(1), head.num_classes)
                centerness = self._gather(_per_prior(ctr, 1), prior)[..., 0].sigmoid()  # (B, k)
                final = torch.where(self._valid(vals), vals.sigmoid() * centerness, -1.0)
            dist = self._gather(_per_prior(reg, 4), prior)  # (B, k, 4)
            if head.norm_on_bbox:
                dist = dist * head.strides[level]
            pts = self._gather(points[None].expand(cls.shape[0], -1, -1), prior)
            boxes = head.bbox_coder.decode(pts, dist)
            out.append((boxes, final, labels))
        return out

    # ------------------------------------------------------------------ NMS and top max_per_img

    def _nms(self, boxes: Tensor, scores: Tensor, labels: Tensor, images: Tensor,
             num_classes: int) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        boxes = clip_to_input(boxes, images)
        if cfg.min_bbox_size > 0:
            big = ((boxes[..., 2] - boxes[..., 0]) > cfg.min_bbox_size) & ((boxes[..., 3] - boxes[..., 1]) > cfg.min_bbox_size)
            scores = torch.where(big, scores, -1.0)
        if cfg.class_agnostic:
            class_scores = scores[:, None, :]  # (B, 1, K)
        else:
            classes = torch.arange(num_classes, device=labels.device)
            class_scores = torch.where(labels[:, None, :] == classes[None, :, None], scores[:, None, :], -1.0)  # (B, C, K)
        keep = nms_keep(boxes, class_scores, self.max_output, cfg.iou_threshold, 0.0)
        return top_detections(boxes, torch.where(keep, scores, -1.0), labels, cfg.max_per_img)


def _logit_threshold(score_thr: float) -> float:
    if score_thr <= 0:
        return -math.inf
    if score_thr >= 1:
        return math.inf
    return math.log(score_thr / (1 - score_thr))


def check_exportable(detector: nn.Module) -> None:
    """Raise :class:`ConfigError` unless ``detector`` is one of :data:`SUPPORTED_DETECTORS`."""
    if not isinstance(detector, tuple(SUPPORTED_DETECTORS.values())):
        raise ConfigError(
            f"model.type: ONNX export supports {', '.join(SUPPORTED_DETECTORS)}; got {type(detector).__name__}")


def min_opset(detector: nn.Module) -> int:
    """The lowest ONNX opset the export graph of ``detector`` needs."""
    return MIN_OPSET_TWO_STAGE if isinstance(detector, TwoStageDetector) else MIN_OPSET


def deploy_model(detector: nn.Module, postprocess: bool = True) -> nn.Module:
    """The export wrapper of ``detector``: :class:`DeployDetector` (RetinaNet, FCOS) or
    :class:`~detcli.models.deploy_two_stage.DeployTwoStage` (Faster / Mask R-CNN), in eval mode.

    Raises:
        ConfigError: an unsupported detector, or ``postprocess=False`` for a two-stage detector.
    """
    check_exportable(detector)
    if isinstance(detector, TwoStageDetector):
        from detcli.models.deploy_two_stage import DeployTwoStage

        if not postprocess:
            raise ConfigError(f"--skip-postprocess: {type(detector).__name__} has no raw-head-output graph (its "
                              "second stage runs on the proposals the RPN post-processing selects); export "
                              "without it")
        return DeployTwoStage(detector).eval()
    return DeployDetector(detector, postprocess=postprocess).eval()
