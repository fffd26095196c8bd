"""Small helpers shared by the dense heads: ground-truth padding, prior caching, flattening, NMS."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from detcli.models.necks.fpn import conv_module
from detcli.ops import batched_nms, nms
from detcli.structures import Boxes, Detections, GroundTruth, ImageBatch


def reduce_mean(value: float, device: torch.device) -> float:
    """The mean of ``value`` over all ranks of the default process group (``value`` with one process).

    mmdet's ``reduce_mean`` for loss normalisers (``num_pos``): under DDP the gradients are averaged
    over ranks, so dividing each rank's loss sum by the global mean count gives the gradient of one
    big batch. Every rank calls it the same number of times in the same order (no data-dependent skip).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    if dist.get_backend() == "nccl" and device.type != "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def pad_ground_truth(targets: Sequence[GroundTruth], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Stack per-image ground truth into padded tensors.

    Returns:
        gt_boxes (Tensor[B, G, 4]), gt_labels (Tensor[B, G]) int64, gt_valid (Tensor[B, G]) bool,
        where ``G`` is the largest count (0 when no image has ground truth).
    """
    b = len(targets)
    g = max((len(t) for t in targets), default=0)
    boxes = torch.zeros((b, g, 4), device=device)
    labels = torch.zeros((b, g), dtype=torch.long, device=device)
    valid = torch.zeros((b, g), dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t)
        if n:
            boxes[i, :n] = t.boxes.tensor.to(device)
            labels[i, :n] = t.labels.to(device)
            valid[i, :n] = True
    return boxes, labels, valid


def pad_ignore_boxes(targets: Sequence[GroundTruth], device: torch.device) -> tuple[Tensor, Tensor] | None:
    """Padded ignore (crowd) regions ``(Tensor[B, K, 4], Tensor[B, K] bool)``, or None when there are none."""
    k = max((len(t.ignore_boxes) for t in targets), default=0)
    if k == 0:
        return None
    boxes = torch.zeros((len(targets), k, 4), device=device)
    valid = torch.zeros((len(targets), k), dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t.ignore_boxes)
        if n:
            boxes[i, :n] = t.ignore_boxes.tensor.to(device)
            valid[i, :n] = True
    return boxes, valid


@dataclass(frozen=True)
class PaddedGroundTruth:
    """A batch's ground truth as padded tensors (:func:`pad_ground_truth`, :func:`pad_ignore_boxes`),
    built once per training step and shared by the heads that assign priors.

    Attributes:
        boxes (Tensor[B, G, 4]), labels (Tensor[B, G]) int64, valid (Tensor[B, G]) bool;
        ignore: ``(Tensor[B, K, 4], Tensor[B, K] bool)`` ignore regions, or None when there are none.
    """

    boxes: Tensor
    labels: Tensor
    valid: Tensor
    ignore: tuple[Tensor, Tensor] | None

    @classmethod
    def of(cls, targets: Sequence[GroundTruth], device: torch.device) -> PaddedGroundTruth:
        return cls(*pad_ground_truth(targets, device), pad_ignore_boxes(targets, device))

    @property
    def ignore_boxes(self) -> Tensor | None:
        return None if self.ignore is None else self.ignore[0]

    @property
    def ignore_valid(self) -> Tensor | None:
        return None if self.ignore is None else self.ignore[1]


def valid_anchors(anchor_generator: Any, anchors: Tensor, featmap_sizes: Sequence[tuple[int, int]],
                  image_sizes: Sequence[tuple[int, int]], pad_shape: tuple[int, int],
                  allowed_border: float) -> Tensor | None:
    """Bool (B, N) of anchors on valid feature-map locations of each image (and inside the image
    plus ``allowed_border`` when it is >= 0); None when every anchor is valid.

    Args:
        anchor_generator: the :class:`AnchorGenerator` of ``anchors`` (its ``valid_flags``).
        anchors (Tensor[N, 4]): all levels' anchors.
        image_sizes: per image ``(h, w)`` before padding; pad_shape: the batch's padded ``(H, W)``.
    """
    if all(tuple(s) == tuple(pad_shape) for s in image_sizes) and allowed_border < 0:
        return None
    rows = []
    for h, w in image_sizes:
        flags = torch.cat(anchor_generator.valid_flags(featmap_sizes, (h, w), anchors.device))
        if allowed_border >= 0:
            flags &= ((anchors[:, 0] >= -allowed_border) & (anchors[:, 1] >= -allowed_border)
                      & (anchors[:, 2] < w + allowed_border) & (anchors[:, 3] < h + allowed_border))
        rows.append(flags)
    return torch.stack(rows)


class PriorCache:
    """Memo of priors keyed by feature-map sizes, padded batch shape (only for generators whose
    ``uses_pad_shape``, e.g. :class:`~detcli.models.priors.TorchvisionAnchorGenerator`; else None),
    device, dtype and inference mode (last 8 kept)."""

    def __init__(self, make: Callable[[list[tuple[int, int]], torch.dtype, torch.device, tuple[int, int] | None],
                                      list[Tensor]]) -> None:
        self._make = make
        self._store: OrderedDict[tuple, list[Tensor]] = OrderedDict()

    def get(self, featmap_sizes: list[tuple[int, int]], dtype: torch.dtype, device: torch.device,
            pad_shape: tuple[int, int] | None = None) -> list[Tensor]:
        key = (tuple(featmap_sizes), pad_shape, str(device), dtype, torch.is_inference_mode_enabled())
        hit = self._store.get(key)
        if hit is None:
            hit = self._make(featmap_sizes, dtype, device, pad_shape)
            self._store[key] = hit
            if len(self._store) > 8:
                self._store.popitem(last=False)
        return hit


def prior_pad_shape(generator: Any, images: ImageBatch) -> tuple[int, int] | None:
    """The padded batch ``(H, W)`` of ``images`` when ``generator`` places priors by it, else None."""
    return tuple(images.tensor.shape[-2:]) if getattr(generator, "uses_pad_shape", False) else None  # type: ignore[return-value]


def flatten_levels(maps: Sequence[Tensor], channels: int) -> Tensor:
    """``[(B, A * k, H_l, W_l)]`` -> ``(B, sum_l H_l * W_l * A, k)``, row-major then per prior."""
    b = maps[0].shape[0]
    return torch.cat([m.permute(0, 2, 3, 1).reshape(b, -1, channels) for m in maps], dim=1)


def logit_threshold(score_thr: float) -> float:
    """The logit whose sigmoid is ``score_thr`` (so ``logit > t`` iff ``sigmoid(logit) > score_thr``)."""
    if score_thr <= 0:
        return -math.inf
    if score_thr >= 1:
        return math.inf
    return math.log(score_thr / (1 - score_thr))


def select_candidates(cls_logits: Tensor, logit_thr: float, nms_pre: int,
                      inclusive: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Candidates of one level of one image above a threshold, top ``nms_pre`` by score.

    Args:
        cls_logits (Tensor[N, C]): class logits of the level's ``N`` priors, in prior order.
        logit_thr: keep logits ``> logit_thr``.
        nms_pre: keep at most this many (``<= 0``: all).
        inclusive: keep values ``>= logit_thr`` instead.

    Returns:
        prior_inds (Tensor[P]), labels (Tensor[P]) and logits (Tensor[P]) sorted descending.
    """
    num_classes = cls_logits.shape[1]
    flat = cls_logits.reshape(-1)  # (N * C,)
    if math.isfinite(logit_thr):
        idx = ((flat >= logit_thr) if inclusive else (flat > logit_thr)).nonzero(as_tuple=True)[0]
    else:
        idx = torch.arange(flat.numel(), device=flat.device)
    vals = flat[idx]
    if nms_pre > 0 and vals.numel() > nms_pre:
        vals, order = vals.topk(nms_pre)
    else:
        vals, order = vals.sort(descending=True)
    idx = idx[order]
    return idx // num_classes, idx % num_classes, vals


def level_of_image(maps: Tensor, image: int, channels: int) -> Tensor:
    """``maps[image]`` of shape ``(A * k, H, W)`` as ``(H * W * A, k)`` in prior order (no copy when
    ``maps`` is channels-last)."""
    return maps[image].permute(1, 2, 0).reshape(-1, channels)


def nms_detections(boxes: Tensor, scores: Tensor, labels: Tensor, image_size: tuple[int, int],
                   iou_threshold: float, class_agnostic: bool, max_per_img: int,
                   min_bbox_size: float, drop_empty: bool = False) -> Detections:
    """Class-aware (or agnostic) NMS of one image's candidates into sorted :class:`Detections`.

    Boxes with a side ``<= min_bbox_size`` are dropped first when ``min_bbox_size > 0``, or when it is
    0 and ``drop_empty`` (mmdet 3.x: flat boxes clipped at the image border go; 2.x keeps them).

    Args:
        boxes (Tensor[P, 4]): (x1, y1, x2, y2); scores (Tensor[P]); labels (Tensor[P]) int64.
    """
    if (min_bbox_size > 0 or (drop_empty and min_bbox_size >= 0)) and boxes.numel():
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (wh[:, 0] > min_bbox_size) & (wh[:, 1] > min_bbox_size)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if boxes.numel() == 0:
        return Detections.empty(image_size, device=boxes.device)
    keep = nms(boxes, scores, iou_threshold) if class_agnostic else batched_nms(boxes, scores, labels, iou_threshold)
    if max_per_img > 0:
        keep = keep[:max_per_img]
    return Detections(image_size, Boxes(boxes[keep]), scores[keep], labels[keep])


#: Initial foreground probability of the classification logits (focal-loss prior).
PRIOR_PROB = 0.01


def conv_tower(in_channels: int, feat_channels: int, stacked_convs: int,
               norm_cfg: Mapping[str, Any] | None, bias: bool | None = None) -> nn.Sequential:
    """``stacked_convs`` 3x3 conv + norm + ReLU blocks: the shared shape of dense-head towers."""
    return nn.Sequential(*[
        conv_module(in_channels if i == 0 else feat_channels, feat_channels, 3, norm_cfg=norm_cfg, act=True, bias=bias)
        for i in range(stacked_convs)])


def init_dense_head(head: nn.Module, cls_conv: nn.Conv2d) -> None:
    """Normal(0, 0.01) conv weights, zero biases, and the focal prior on the classification bias."""
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    nn.init.constant_(cls_conv.bias, -math.log((1 - PRIOR_PROB) / PRIOR_PROB))  # type: ignore[arg-type]

