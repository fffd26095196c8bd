"""Traceable building blocks of the ONNX export graphs (TorchScript tracing, dynamic shapes).

Every function here derives sizes from tensors (never from Python ints of a shape), so a graph
traced once accepts other batch and image sizes. Used by the dense-head template
(:mod:`detcli.models.dense_head`, its ``export`` path) and by the two-stage export wrapper
(:mod:`detcli.models.deploy_two_stage`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from detcli.errors import ConfigError


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


def arange_like(x: Tensor) -> Tensor:
    """``0, 1, ..., len(x) - 1`` as floats, traced from ``x``'s length (keeps dynamic shapes)."""
    return torch.ones_like(x).cumsum(0) - 1


def grid_xy(feat: Tensor, stride: tuple[float, float] | tuple[Tensor, Tensor], offset: float) -> tuple[Tensor, Tensor]:
    """Row-major ``(xs, ys)`` of shape ``(H * W,)`` at ``(x + offset) * stride`` for ``feat (B, C, H, W)``."""
    xs = (arange_like(feat[0, 0, 0, :]) + offset) * stride[0]  # (W,)
    ys = (arange_like(feat[0, 0, :, 0]) + offset) * stride[1]  # (H,)
    xx = xs[None, :] + torch.zeros_like(ys)[:, None]  # (H, W)
    yy = ys[:, None] + torch.zeros_like(xs)[None, :]
    return xx.reshape(-1), yy.reshape(-1)


def image_stride(feat: Tensor, images: Tensor) -> tuple[Tensor, Tensor]:
    """torchvision's stride of a level: ``(W_img // W_l, H_img // H_l)`` as traced float scalars."""
    w = torch.ones_like(images[0, 0, 0, :]).sum() / torch.ones_like(feat[0, 0, 0, :]).sum()
    h = torch.ones_like(images[0, 0, :, 0]).sum() / torch.ones_like(feat[0, 0, :, 0]).sum()
    return w.floor(), h.floor()


def grid_anchors(feat: Tensor, generator: Any, level: int, images: Tensor | None = None) -> Tensor:
    """The ``(H * W * A, 4)`` anchors of ``level`` for ``feat (B, C, H, W)``, in prior order (traced).

    ``generator`` is an :class:`~detcli.models.priors.AnchorGenerator` or
    :class:`~detcli.models.priors.TorchvisionAnchorGenerator`. One that ``uses_pad_shape`` takes its
    stride from ``images (B, 3, H, W)``, the graph input, so the graph reproduces it at every input size.

    Raises:
        ConfigError: a generator that ``uses_pad_shape`` without ``images``.
    """
    if getattr(generator, "uses_pad_shape", False):
        if images is None:
            raise ConfigError(f"{type(generator).__name__}: the export graph needs the input images to place anchors")
        stride = image_stride(feat, images)
    else:
        stride = generator.strides[level]
    xs, ys = grid_xy(feat, stride, 0.0)
    base = generator.base_anchors[level].to(feat)  # (A, 4)
    return (torch.stack([xs, ys, xs, ys], dim=-1)[:, None, :] + base[None]).reshape(-1, 4)


def grid_priors(feat: Tensor, generator: Any, level: int, images: Tensor | None = None) -> Tensor:
    """The priors of ``level`` as ``generator.grid_priors`` makes them, traced: points ``(H * W, 2)``
    of a :class:`~detcli.models.priors.MlvlPointGenerator` (it has ``offset``), else anchors
    ``(H * W * A, 4)`` (:func:`grid_anchors`)."""
    if hasattr(generator, "offset") and not hasattr(generator, "base_anchors"):
        xs, ys = grid_xy(feat, generator.strides[level], generator.offset)
        return torch.stack([xs, ys], dim=-1)  # (HW, 2)
    return grid_anchors(feat, generator, level, images)


def per_prior(maps: Tensor, channels: int) -> Tensor:
    """``(B, A * k, H, W)`` -> ``(B, H * W * A, k)`` in prior order."""
    return maps.permute(0, 2, 3, 1).reshape(maps.shape[0], -1, channels)


def topk_padded(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top ``k`` of ``logits (B, N)``: values and indices ``(B, k)`` (``k <= 0``: all, in order).

    The scores are padded with ``k`` entries of ``-inf`` (whose index is ``N`` and beyond: gather
    with :func:`gather_padded`), so the output has ``k`` columns whatever the image size.
    """
    if k <= 0:
        idx = arange_like(logits[0]).long()[None, :].expand_as(logits)
        return logits, idx
    pad = (torch.zeros_like(logits.sum(1, keepdim=True)) - math.inf).expand(-1, k)  # (B, k), also when N == 0
    return torch.cat([logits, pad], dim=1).topk(k, dim=1)


def gather_padded(x: Tensor, idx: Tensor, k: int) -> Tensor:
    """Rows ``idx (B, m)`` of ``x (B, N, d)``, ``x`` padded with ``k`` zero rows when ``k > 0``
    (the indices :func:`topk_padded` gives)."""
    if k > 0:
        x = torch.cat([x, torch.zeros_like(x.sum(1, keepdim=True)).expand(-1, k, -1)], dim=1)  # also when N == 0
    return x.gather(1, idx[:, :, None].expand(-1, -1, x.shape[2]))


def clip_to_input(boxes: Tensor, images: Tensor) -> Tensor:
    """Clamp ``boxes (..., 4)`` to the ``(H, W)`` of ``images (B, 3, H, W)`` (traced, dynamic)."""
    h = torch.ones_like(images[0, 0, :, 0]).sum()
    w = torch.ones_like(images[0, 0, 0, :]).sum()
    zero = torch.zeros_like(w)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([torch.minimum(torch.maximum(x1, zero), w), torch.minimum(torch.maximum(y1, zero), h),
                        torch.minimum(torch.maximum(x2, zero), w), torch.minimum(torch.maximum(y2, zero), h)], dim=-1)


def clip_to_sizes(boxes: Tensor, sizes: Tensor) -> Tensor:
    """Clamp ``boxes (B, ..., 4)`` (e.g. ``(B, K, 4)``, or ``(B, K, C, 4)`` class-specific) of each image to
    its own ``(h, w)`` of ``sizes (B, 2)`` (traced, dynamic): the valid region of each image of a padded
    batch, as eager post-processing clips."""
    h, w = sizes[:, 0:1].to(boxes.dtype), sizes[:, 1:2].to(boxes.dtype)  # (B, 1)
    for _ in range(boxes.dim() - 3):  # (B, 1, ..., 1): one per image, broadcast over the other axes
        h, w = h[..., None], w[..., None]
    zero = torch.zeros_like(h)
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
