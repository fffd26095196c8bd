"""RetinaNet (Lin et al., 2017): anchors on P3-P7, sigmoid focal classification, box deltas.

Input: ``ImageBatch.tensor (B, 3, H, W)`` normalised, padded; boxes are ``(x1, y1, x2, y2)`` with
``0 <= x1 < x2``, width ``x2 - x1``. Labels ``0..C-1``; background is ``C``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.assigners import IGNORE, MaxIoUAssigner
from detcli.models.coders import DeltaXYWHBBoxCoder
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
from detcli.models.detector import (
    DenseTrainConfig,
    SingleStageDetector,
)
from detcli.models.losses import FocalLoss, L1Loss
from detcli.models.priors import AnchorGenerator, TorchvisionAnchorGenerator
from detcli.registry import DETECTORS, HEADS
from detcli.structures import GroundTruth, ImageBatch


@HEADS.register()
class RetinaHead(BaseDenseHead):
    """RetinaNet head: two towers of ``stacked_convs`` 3x3 convs + ReLU, then per-anchor class
    logits and box deltas on every pyramid level (weights shared across levels).

    Args:
        num_classes: foreground classes ``C``.
        in_channels: channels of the pyramid maps.
        stacked_convs: convs per tower.
        feat_channels: channels of the tower convs.
        norm_cfg: norm of the tower convs (None in RetinaNet).
        anchor_generator: built :class:`AnchorGenerator` (default: octave_base_scale 4,
            scales_per_octave 3, ratios 0.5/1/2, strides 8..128) or :class:`TorchvisionAnchorGenerator`.
        bbox_coder: built :class:`DeltaXYWHBBoxCoder` (default: means 0, stds 1).
        reg_decoded_bbox: regress decoded boxes (for IoU-type ``loss_bbox``) instead of deltas.
        loss_cls: built classification loss (default: FocalLoss gamma 2, alpha 0.25).
        loss_bbox: built box loss (default: L1Loss).

    Outputs of :meth:`forward`, per level ``l``: ``cls_scores[l] (B, A * C, H_l, W_l)`` logits and
    ``bbox_preds[l] (B, A * 4, H_l, W_l)`` deltas, ``A`` anchors per location.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        stacked_convs: int = 4,
        feat_channels: int = 256,
        norm_cfg: Mapping[str, Any] | None = None,
        anchor_generator: AnchorGenerator | TorchvisionAnchorGenerator | None = None,
        bbox_coder: DeltaXYWHBBoxCoder | None = None,
        reg_decoded_bbox: bool = False,
        loss_cls: nn.Module | None = None,
        loss_bbox: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"RetinaHead num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.anchor_generator = anchor_generator or AnchorGenerator(
            strides=(8, 16, 32, 64, 128), ratios=(0.5, 1.0, 2.0), octave_base_scale=4, scales_per_octave=3)
        self.bbox_coder = bbox_coder or DeltaXYWHBBoxCoder()
        self.reg_decoded_bbox = reg_decoded_bbox
        self.loss_cls = loss_cls if loss_cls is not None else FocalLoss()
        self.loss_bbox = loss_bbox if loss_bbox is not None else L1Loss()
        num_priors = self.anchor_generator.num_base_priors
        if len(set(num_priors)) != 1:
            raise ConfigError(f"RetinaHead needs the same number of anchors on every level, got {num_priors}")
        self.num_anchors = num_priors[0]
        self.cls_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm_cfg)
        self.reg_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm_cfg)
        tower_out = feat_channels if stacked_convs > 0 else in_channels
        self.retina_cls = nn.Conv2d(tower_out, self.num_anchors * num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(tower_out, self.num_anchors * 4, 3, padding=1)
        init_dense_head(self, self.retina_cls)
        self._anchors = PriorCache(self._make_anchors)

    def _make_anchors(self, sizes: list[tuple[int, int]], dtype: torch.dtype, device: torch.device,
                      pad_shape: tuple[int, int] | None = None) -> list[Tensor]:
        levels = self.anchor_generator.grid_priors(sizes, dtype=dtype, device=device, pad_shape=pad_shape)
        return [torch.cat(levels)] + levels  # [all (N, 4), level 0, level 1, ...]

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[list[Tensor], list[Tensor]]:
        """Per-level class logits ``(B, A * C, H, W)`` and box deltas ``(B, A * 4, H, W)``."""
        cls_scores, bbox_preds = [], []
        for x in feats:
            cls_scores.append(self.retina_cls(self.cls_convs(x)))
            bbox_preds.append(self.retina_reg(self.reg_convs(x)))
        return cls_scores, bbox_preds

    def loss(self, feats: tuple[Tensor, ...], images: ImageBatch, targets: list[GroundTruth],
             train_cfg: DenseTrainConfig) -> dict[str, Tensor]:
        """``loss_cls`` (focal, over all non-ignored anchors) and ``loss_bbox`` (positives), both
        divided by ``sum_i max(num_pos_i, 1)`` (mmdet's ``num_total_samples``)."""
        cls_scores, bbox_preds = self(feats)
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        anchors = self._anchors.get(sizes, cls_scores[0].dtype, cls_scores[0].device,
                                   prior_pad_shape(self.anchor_generator, images))[0]  # (N, 4)
        labels, label_weights, pos_b, pos_n, pos_gt_boxes, avg_factor = self.get_targets(
            anchors, sizes, images, targets, train_cfg)
        cls_flat = flatten_levels(cls_scores, self.num_classes)  # (B, N, C)
        reg_flat = flatten_levels(bbox_preds, 4)  # (B, N, 4)
        loss_cls = self.loss_cls(cls_flat.reshape(-1, self.num_classes), labels.reshape(-1),
                                 None if label_weights is None else label_weights.reshape(-1), avg_factor=avg_factor)
        pos_pred = reg_flat[pos_b, pos_n]  # (P, 4)
        pos_anchors = anchors[pos_n]  # (P, 4)
        if self.reg_decoded_bbox:
            loss_bbox = self.loss_bbox(self.bbox_coder.decode(pos_anchors, pos_pred), pos_gt_boxes, avg_factor=avg_factor)
        else:
            loss_bbox = self.loss_bbox(pos_pred, self.bbox_coder.encode(pos_anchors, pos_gt_boxes), avg_factor=avg_factor)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox}

    @torch.no_grad()
    def get_targets(
        self, anchors: Tensor, featmap_sizes: list[tuple[int, int]], images: ImageBatch,
        targets: list[GroundTruth], train_cfg: DenseTrainConfig,
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor, float]:
        """Assign anchors of the whole batch at once.

        Returns:
            labels (Tensor[B, N]) int64, background ``C``; label_weights (Tensor[B, N]) or None when
            all are 1; pos_b, pos_n (Tensor[P]) image and anchor indices of positives; pos_gt_boxes
            (Tensor[P, 4]) their matched GT; avg_factor ``sum_i max(num_pos_i, 1)``.
        """
        if train_cfg.assigner is None:
            raise ConfigError("model.train_cfg.assigner: RetinaNet needs an assigner (e.g. {type: MaxIoUAssigner, ...})")
        device = anchors.device
        b, n = len(targets), anchors.shape[0]
        gt = PaddedGroundTruth.of(targets, device)
        gt_boxes, gt_labels = gt.boxes, gt.labels
        prior_valid = valid_anchors(self.anchor_generator, anchors, featmap_sizes, images.image_sizes,
                                    tuple(images.tensor.shape[-2:]), train_cfg.allowed_border)  # type: ignore[arg-type]
        num_level_priors = [h * w * self.num_anchors for h, w in featmap_sizes]
        gt_inds, _ = train_cfg.assigner.assign_batch(anchors, gt_boxes, gt.valid, gt.ignore_boxes, gt.ignore_valid,
                                                     prior_valid, num_level_priors=num_level_priors)  # (B, N)
        pos = gt_inds > 0  # (B, N)
        pos_b, pos_n = pos.nonzero(as_tuple=True)  # (P,)
        matched = gt_inds[pos_b, pos_n] - 1  # (P,)
        labels = torch.full((b, n), self.num_classes, dtype=torch.long, device=device)
        labels[pos_b, pos_n] = gt_labels[pos_b, matched]
        label_weights = None
        ignored = gt_inds == IGNORE
        if train_cfg.pos_weight > 0 or bool(ignored.any()):
            label_weights = (~ignored).float()
            if train_cfg.pos_weight > 0:
                label_weights[pos_b, pos_n] = train_cfg.pos_weight
        num_pos_per_image = pos.sum(dim=1).clamp(min=1)
        avg_factor = reduce_mean(float(num_pos_per_image.sum().item()), device)  # global mean over ranks
        return labels, label_weights, pos_b, pos_n, gt_boxes[pos_b, matched], avg_factor

    # ------------------------------------------------------------------ template hooks

    @property
    def prior_generator(self) -> AnchorGenerator | TorchvisionAnchorGenerator:
        """The anchor generator (mmdet's config key is ``anchor_generator``)."""
        return self.anchor_generator

    @property
    def output_channels(self) -> tuple[int, ...]:
        return (self.num_classes, 4)

    def level_priors(self, featmap_sizes: list[tuple[int, int]], dtype: torch.dtype, device: torch.device,
                     images: ImageBatch) -> list[Tensor]:
        return self._anchors.get(featmap_sizes, dtype, device, prior_pad_shape(self.anchor_generator, images))[1:]

    def level_scores(self, level: int, outputs: Sequence[Tensor]) -> LevelScores:
        """Rank by class logit; score = its sigmoid."""
        return LevelScores(outputs[0])

    def decode_level(self, level: int, priors: Tensor, outputs: Sequence[Tensor],
                     max_shape: tuple[int, int] | None) -> Tensor:
        return self.bbox_coder.decode(priors, outputs[0], max_shape=max_shape)


@DETECTORS.register()
class RetinaNet(SingleStageDetector):
    """RetinaNet detector: backbone, FPN neck and :class:`RetinaHead`.

    ``model(images, targets)`` -> ``{"loss_cls", "loss_bbox"}``; ``model(images)`` ->
    ``list[Detections]`` (boxes (x1, y1, x2, y2) in ``images`` coordinates, clipped to
    ``image_sizes[i]``, scores sorted descending, labels in ``[0, C)``).

    Args:
        backbone: built backbone.
        neck: built neck.
        bbox_head: built :class:`RetinaHead`.
        train_cfg: ``{assigner (built; default MaxIoUAssigner(0.5, 0.4, 0)), allowed_border, pos_weight, debug}``.
        test_cfg: ``{nms_pre, min_bbox_size, score_thr, nms: {type: nms, iou_threshold}, max_per_img}``.
        init_cfg: ``{type: Pretrained, checkpoint: PATH}`` of a whole detector.
    """

    default_assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)
    head_type = RetinaHead
