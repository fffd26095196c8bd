"""GFL (Li et al., 2020, Generalized Focal Loss): joint class-quality scores and distributed boxes.

One anchor per location (``octave_base_scale 8``, ratio 1) only places the priors: ATSS assigns them,
and the box is predicted as four distances from the anchor centre, in units of the level's stride,
each a discrete distribution over ``0..reg_max`` whose expectation (:class:`Integral`) is the
distance. The classification branch predicts, per class, the IoU of the predicted box with its GT
(Quality Focal Loss); the distributions are trained by Distribution Focal Loss on the two bins
around each target distance and by GIoU on the decoded boxes. At test time the sigmoid of the class
logits is the score (no separate quality factor).

Input: ``ImageBatch.tensor (B, 3, H, W)`` normalised, padded; boxes ``(x1, y1, x2, y2)``. Labels
``0..C-1``; background is ``C``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.assigners import IGNORE, ATSSAssigner
from detcli.models.coders import DistancePointBBoxCoder
from detcli.models.dense_head import BaseDenseHead, LevelScores
from detcli.models.dense_utils import (
    PaddedGroundTruth,
    PriorCache,
    conv_tower,
    flatten_levels,
    init_dense_head,
    prior_pad_shape,
    reduce_mean,
    valid_anchors,
)
from detcli.models.detector import DenseTrainConfig, SingleStageDetector
from detcli.models.fcos import Scale
from detcli.models.losses import DistributionFocalLoss, GIoULoss, QualityFocalLoss
from detcli.models.priors import AnchorGenerator
from detcli.registry import DETECTORS, HEADS
from detcli.structures import GroundTruth, ImageBatch, box_overlaps

DEFAULT_NORM = {"type": "GN", "num_groups": 32, "requires_grad": True}


class Integral(nn.Module):
    """The expectation of a discrete distribution over ``0..reg_max``: softmax, then the dot product
    with ``project = [0, 1, ..., reg_max]`` (a buffer, saved with the model as in mmdet).

    Example (all mass on bin 2, and an even split of bins 0 and 1):
        >>> x = torch.full((1, 4, 3), -1e4); x[..., 2] = 0; x[0, 1] = torch.tensor([0., 0., -1e4])
        >>> Integral(2)(x.reshape(1, 12))
        tensor([[2.0000, 0.5000, 2.0000, 2.0000]])
    """

    def __init__(self, reg_max: int = 16) -> None:
        super().__init__()
        self.reg_max = int(reg_max)
        self.register_buffer("project", torch.linspace(0, self.reg_max, self.reg_max + 1))

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[..., 4 * (reg_max + 1)]) bin logits -> distances (Tensor[..., 4])."""
        probs = F.softmax(x.reshape(*x.shape[:-1], 4, self.reg_max + 1), dim=-1)
        return F.linear(probs, self.project.to(probs.dtype))  # type: ignore[arg-type]


@HEADS.register()
class GFLHead(BaseDenseHead):
    """GFL head: GN towers, per-level :class:`Scale`, class-quality logits and box distributions.

    Args:
        num_classes: foreground classes ``C``.
        in_channels: channels of the pyramid maps.
        stacked_convs: convs per tower (conv + norm + ReLU).
        feat_channels: channels of the tower convs.
        conv_cfg: must be None (plain convolutions).
        norm_cfg: tower norm (default ``{type: GN, num_groups: 32, requires_grad: true}``).
        anchor_generator: built :class:`AnchorGenerator` with one anchor per location (default:
            ratio 1, octave_base_scale 8, scales_per_octave 1, strides 8..128); the anchors are used
            for assignment, their centres for the boxes.
        bbox_coder: built :class:`DistancePointBBoxCoder` (default).
        reg_max: the largest distance (in strides) of the discrete distributions (``reg_max + 1`` bins).
        reg_decoded_bbox: accepted for mmdet configs; GFL always regresses decoded boxes (must be True).
        loss_cls: built :class:`QualityFocalLoss` (default: beta 2, loss_weight 1).
        loss_dfl: built :class:`DistributionFocalLoss` (default: loss_weight 0.25).
        loss_bbox: built box loss on decoded boxes (default: GIoULoss, loss_weight 2).

    Outputs of :meth:`forward`, per level: ``cls_scores (B, C, H, W)`` logits and ``bbox_preds
    (B, 4 * (reg_max + 1), H, W)`` bin logits of ``(left, top, right, bottom)`` (after the level's
    :class:`Scale`).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        stacked_convs: int = 4,
        feat_channels: int = 256,
        conv_cfg: Mapping[str, Any] | None = None,
        norm_cfg: Mapping[str, Any] | None = DEFAULT_NORM,
        anchor_generator: AnchorGenerator | None = None,
        bbox_coder: DistancePointBBoxCoder | None = None,
        reg_max: int = 16,
        reg_decoded_bbox: bool = True,
        loss_cls: nn.Module | None = None,
        loss_dfl: nn.Module | None = None,
        loss_bbox: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"GFLHead num_classes must be >= 1, got {num_classes}")
        if conv_cfg is not None:
            raise ConfigError("GFLHead conv_cfg must be null (only plain convolutions are supported)")
        if not reg_decoded_bbox:
            raise ConfigError("GFLHead reg_decoded_bbox must be true (GFL regresses decoded boxes)")
        if int(reg_max) < 1:
            raise ConfigError(f"GFLHead reg_max must be >= 1, got {reg_max}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.reg_max = int(reg_max)
        self.anchor_generator = anchor_generator or AnchorGenerator(
            strides=(8, 16, 32, 64, 128), ratios=(1.0,), octave_base_scale=8, scales_per_octave=1)
        if set(self.anchor_generator.num_base_priors) != {1}:
            raise ConfigError(f"GFLHead needs one anchor per location, got {self.anchor_generator.num_base_priors} "
                              "(set ratios: [1.0] and scales_per_octave: 1)")
        self.strides = tuple(self._stride(s) for s in self.anchor_generator.strides)
        self.bbox_coder = bbox_coder or DistancePointBBoxCoder()
        if not isinstance(self.bbox_coder, DistancePointBBoxCoder):
            raise ConfigError(f"GFLHead bbox_coder must be a DistancePointBBoxCoder, got {type(self.bbox_coder).__name__}")
        self.loss_cls = loss_cls if loss_cls is not None else QualityFocalLoss()
        self.loss_dfl = loss_dfl if loss_dfl is not None else DistributionFocalLoss(loss_weight=0.25)
        self.loss_bbox = loss_bbox if loss_bbox is not None else GIoULoss(loss_weight=2.0)
        self.cls_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm_cfg)
        self.reg_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm_cfg)
        tower_out = feat_channels if stacked_convs > 0 else in_channels
        self.gfl_cls = nn.Conv2d(tower_out, num_classes, 3, padding=1)
        self.gfl_reg = nn.Conv2d(tower_out, 4 * (self.reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in self.strides])
        self.integral = Integral(self.reg_max)
        init_dense_head(self, self.gfl_cls)
        self._anchors = PriorCache(self._make_anchors)

    @staticmethod
    def _stride(stride: Any) -> float:
        if isinstance(stride, (tuple, list)):
            if len(stride) != 2 or stride[0] != stride[1]:
                raise ConfigError(f"GFLHead needs square strides, got {stride!r}")
            stride = stride[0]
        return float(stride)

    def _make_anchors(self, sizes: list[tuple[int, int]], dtype: torch.dtype, device: torch.device,
                      pad_shape: tuple[int, int] | None = None) -> list[Tensor]:
        """[anchors (N, 4), stride of each anchor (N,), level 0 anchors, level 1 anchors, ...]."""
        levels = self.anchor_generator.grid_priors(sizes, dtype=dtype, device=device, pad_shape=pad_shape)
        strides = torch.cat([torch.full((len(a),), s, dtype=dtype, device=device) for a, s in zip(levels, self.strides)])
        return [torch.cat(levels), strides, *levels]

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: class-quality logits ``(B, C, H, W)`` and bin logits ``(B, 4 * (reg_max + 1), H, W)``."""
        if len(feats) != len(self.scales):
            raise ValueError(f"GFLHead has {len(self.scales)} levels but got {len(feats)} feature maps")
        cls_scores, bbox_preds = [], []
        for x, scale in zip(feats, self.scales):
            cls_scores.append(self.gfl_cls(self.cls_convs(x)))
            reg = scale(self.gfl_reg(self.reg_convs(x)))
            if reg.dtype in (torch.float16, torch.bfloat16):  # distributions in float32 at least (mmdet)
                reg = reg.float()
            bbox_preds.append(reg)
        return cls_scores, bbox_preds

    @staticmethod
    def anchor_centers(anchors: Tensor) -> Tensor:
        """Centres ``(..., 2)`` of anchors ``(..., 4)``."""
        return torch.stack([(anchors[..., 0] + anchors[..., 2]) / 2, (anchors[..., 1] + anchors[..., 3]) / 2], dim=-1)

    def loss(self, feats: tuple[Tensor, ...], images: ImageBatch, targets: list[GroundTruth],
             train_cfg: DenseTrainConfig) -> dict[str, Tensor]:
        """mmdet 2.x GFL losses.

        - ``loss_cls``: Quality Focal Loss over all non-ignored priors; positives' targets are the IoU
          of their decoded (detached) prediction with their GT; divided by ``num_pos`` (``sum_i
          max(num_pos_i, 1)``, mean over ranks, at least 1).
        - ``loss_bbox``: GIoU of the positives' boxes (in stride units) and ``loss_dfl``: DFL on the
          four distances (mean over the four), each weighted by the positive's largest predicted class
          probability and divided by the sum of those weights (mean over ranks, at least 1).
        """
        cls_scores, bbox_preds = self(feats)
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        dtype, device = cls_scores[0].dtype, cls_scores[0].device
        anchors, prior_strides = self._anchors.get(sizes, dtype, device,
                                                   prior_pad_shape(self.anchor_generator, images))[:2]
        cls_flat = flatten_levels(cls_scores, self.num_classes)  # (B, N, C)
        reg_flat = flatten_levels(bbox_preds, 4 * (self.reg_max + 1))  # (B, N, 4 * (R + 1))
        labels, label_weights, pos_b, pos_n, pos_gt_boxes, num_pos = self.get_targets(
            anchors, prior_strides, sizes, images, targets, train_cfg, cls_flat, reg_flat)
        pos_strides = prior_strides[pos_n][:, None]  # (P, 1)
        pos_centers = self.anchor_centers(anchors[pos_n]) / pos_strides  # (P, 2), in strides
        pos_reg = reg_flat[pos_b, pos_n]  # (P, 4 * (R + 1))
        pos_boxes = self.bbox_coder.decode(pos_centers, self.integral(pos_reg))  # (P, 4)
        pos_targets = pos_gt_boxes.to(dtype) / pos_strides  # (P, 4)
        weights = cls_flat.detach()[pos_b, pos_n].sigmoid().amax(dim=-1)  # (P,)
        scores = cls_flat.new_zeros(labels.shape)  # (B, N): the IoU targets of the positives
        if pos_n.numel():
            scores[pos_b, pos_n] = box_overlaps(pos_boxes.detach(), pos_targets, is_aligned=True)
        loss_cls = self.loss_cls(cls_flat.reshape(-1, self.num_classes), (labels.reshape(-1), scores.reshape(-1)),
                                 label_weights.reshape(-1), avg_factor=num_pos)
        weight_sum = max(reduce_mean(float(weights.sum().item()), device), 1.0)
        if pos_n.numel() == 0:
            zero = reg_flat.sum() * 0
            return {"loss_cls": loss_cls, "loss_bbox": zero, "loss_dfl": zero}
        loss_bbox = self.loss_bbox(pos_boxes, pos_targets, weight=weights, avg_factor=1.0) / weight_sum
        target_bins = self.bbox_coder.encode(pos_centers, pos_targets, self.reg_max).reshape(-1)  # (4P,)
        loss_dfl = self.loss_dfl(pos_reg.reshape(-1, self.reg_max + 1), target_bins,
                                 weight=weights[:, None].expand(-1, 4).reshape(-1), avg_factor=4.0) / weight_sum
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_dfl": loss_dfl}

    @torch.no_grad()
    def get_targets(
        self, anchors: Tensor, prior_strides: Tensor, featmap_sizes: list[tuple[int, int]], images: ImageBatch,
        targets: list[GroundTruth], train_cfg: DenseTrainConfig, cls_flat: Tensor, reg_flat: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, float]:
        """Assign the anchors of the whole batch (``train_cfg.assigner``, ATSS in GFL's configs).

        Returns:
            labels (Tensor[B, N]) int64, background ``C``; label_weights (Tensor[B, N]): 0 on
            ignored priors and priors off the image's valid locations, ``pos_weight`` (when > 0) on
            positives, else 1; pos_b, pos_n (Tensor[P]) image and anchor indices of positives;
            pos_gt_boxes (Tensor[P, 4]) their GT; num_pos ``sum_i max(num_pos_i, 1)`` (mean over ranks,
            at least 1).
        """
        if train_cfg.assigner is None:
            raise ConfigError("model.train_cfg.assigner: GFL needs an assigner (e.g. {type: ATSSAssigner, topk: 9})")
        device = anchors.device
        b, n = len(targets), anchors.shape[0]
        gt = PaddedGroundTruth.of(targets, device)
        prior_valid = valid_anchors(self.anchor_generator, anchors, featmap_sizes, images.image_sizes,
                                    tuple(images.tensor.shape[-2:]), train_cfg.allowed_border)  # type: ignore[arg-type]
        num_level_priors = [h * w for h, w in featmap_sizes]
        extra: dict[str, Tensor] = {}
        if getattr(train_cfg.assigner, "needs_predictions", False):
            centers = self.anchor_centers(anchors)[None]  # (1, N, 2)
            dist = self.integral(reg_flat.detach()) * prior_strides[None, :, None]
            extra = {"pred_bboxes": self.bbox_coder.decode(centers, dist), "pred_scores": cls_flat.detach().sigmoid()}
        gt_inds, _ = train_cfg.assigner.assign_batch(anchors, gt.boxes, gt.valid, gt.ignore_boxes, gt.ignore_valid,
                                                     prior_valid, num_level_priors=num_level_priors, **extra)  # (B, N)
        pos = gt_inds > 0
        pos_b, pos_n = pos.nonzero(as_tuple=True)  # (P,)
        matched = gt_inds[pos_b, pos_n] - 1
        labels = torch.full((b, n), self.num_classes, dtype=torch.long, device=device)
        labels[pos_b, pos_n] = gt.labels[pos_b, matched]
        label_weights = (gt_inds != IGNORE).to(cls_flat.dtype)
        if prior_valid is not None:
            label_weights = label_weights * prior_valid
        if train_cfg.pos_weight > 0:
            label_weights[pos_b, pos_n] = train_cfg.pos_weight
        num_pos = reduce_mean(float(pos.sum(dim=1).clamp(min=1).sum().item()), device)
        return labels, label_weights, pos_b, pos_n, gt.boxes[pos_b, matched], max(num_pos, 1.0)

    # ------------------------------------------------------------------ template hooks

    @property
    def prior_generator(self) -> AnchorGenerator:
        """The anchor generator (mmdet's config key is ``anchor_generator``)."""
        return self.anchor_generator

    @property
    def output_channels(self) -> tuple[int, ...]:
        return (self.num_classes, 4 * (self.reg_max + 1))

    def level_priors(self, featmap_sizes: list[tuple[int, int]], dtype: torch.dtype, device: torch.device,
                     images: ImageBatch) -> list[Tensor]:
        return self._anchors.get(featmap_sizes, dtype, device, prior_pad_shape(self.anchor_generator, images))[2:]

    def level_scores(self, level: int, outputs: Sequence[Tensor]) -> LevelScores:
        """Rank by class logit; score = its sigmoid (the joint class-quality score, no factor)."""
        return LevelScores(outputs[0])

    def decode_level(self, level: int, priors: Tensor, outputs: Sequence[Tensor],
                     max_shape: tuple[int, int] | None) -> Tensor:
        """Distances = integral of the bins times the stride, from the anchor centres."""
        dist = self.integral(outputs[0]) * self.strides[level]  # (B, P, 4)
        return self.bbox_coder.decode(self.anchor_centers(priors), dist, max_shape=max_shape)


@DETECTORS.register()
class GFL(SingleStageDetector):
    """GFL detector: backbone, FPN neck and :class:`GFLHead`.

    ``model(images, targets)`` -> ``{"loss_cls", "loss_bbox", "loss_dfl"}``; ``model(images)`` ->
    ``list[Detections]`` as for RetinaNet.

    Args:
        backbone: built backbone.
        neck: built neck.
        bbox_head: built :class:`GFLHead`.
        train_cfg: ``{assigner (built; default ATSSAssigner(topk=9)), allowed_border, pos_weight, debug}``.
        test_cfg: ``{nms_pre, min_bbox_size, score_thr, nms: {type: nms, iou_threshold}, max_per_img}``.
        init_cfg: ``{type: Pretrained, checkpoint: PATH}`` of a whole detector.
    """

    default_assigner = ATSSAssigner(topk=9)
    head_type = GFLHead
