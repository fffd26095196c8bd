"""ATSS (Zhang et al., 2020): anchors chosen by adaptive training sample selection, with centerness.

One square anchor per location (``octave_base_scale`` 8), :class:`~detcli.models.assigners.ATSSAssigner`
picks the positives, the head regresses box deltas (GIoU on the decoded boxes, weighted by the
centerness target) and predicts a centerness logit that multiplies the class score at test time.

Input: ``ImageBatch.tensor (B, 3, H, W)`` normalised, padded; boxes ``(x1, y1, x2, y2)`` with
``0 <= x1 < x2``. Labels ``0..C-1``; background is ``C``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.assigners import IGNORE, ATSSAssigner
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
from detcli.models.detector import DenseTrainConfig, SingleStageDetector
from detcli.models.fcos import Scale
from detcli.models.losses import CrossEntropyLoss, FocalLoss, GIoULoss, centerness_target
from detcli.models.priors import AnchorGenerator
from detcli.registry import DETECTORS, HEADS
from detcli.structures import GroundTruth, ImageBatch


def anchor_centerness(anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """Centerness of anchor centres ``(P, 4)`` inside their matched boxes ``(P, 4)``: ``(P,)``."""
    cx = (anchors[:, 2] + anchors[:, 0]) / 2
    cy = (anchors[:, 3] + anchors[:, 1]) / 2
    dist = torch.stack([cx - gt_boxes[:, 0], cy - gt_boxes[:, 1], gt_boxes[:, 2] - cx, gt_boxes[:, 3] - cy], dim=1)
    return centerness_target(dist)


@HEADS.register()
class ATSSHead(BaseDenseHead):
    """ATSS head: two GN towers, per-anchor class logits, box deltas (times a learnable scale per
    level) and a centerness logit on the regression tower.

    Args:
        num_classes: foreground classes ``C``.
        in_channels: channels of the pyramid maps.
        stacked_convs: convs per tower (conv + norm + ReLU).
        feat_channels: channels of the tower convs.
        pred_kernel_size: kernel of the three prediction convs.
        conv_cfg: must be None (plain convs).
        norm_cfg: tower norm (default ``{type: GN, num_groups: 32, requires_grad: true}``); tower convs
            have a bias only without norm.
        reg_decoded_bbox: must be True (the box loss compares decoded boxes).
        anchor_generator: built :class:`AnchorGenerator` (default: ratio 1, octave_base_scale 8,
            scales_per_octave 1, strides 8..128).
        bbox_coder: built :class:`DeltaXYWHBBoxCoder` (default: means 0, stds 0.1/0.1/0.2/0.2).
        loss_cls: built classification loss (default FocalLoss gamma 2, alpha 0.25).
        loss_bbox: built box loss on decoded boxes (default GIoULoss, loss_weight 2).
        loss_centerness: built centerness loss (default CrossEntropyLoss(use_sigmoid=True)).

    Outputs of :meth:`forward`, per level: ``cls_scores (B, A * C, H, W)`` logits, ``bbox_preds
    (B, A * 4, H, W)`` deltas and ``centernesses (B, A, H, W)`` logits.
    """

    output_kinds = ("cls_score", "bbox_pred", "centerness")

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        stacked_convs: int = 4,
        feat_channels: int = 256,
        pred_kernel_size: int = 3,
        conv_cfg: Mapping[str, Any] | None = None,
        norm_cfg: Mapping[str, Any] | None = None,
        reg_decoded_bbox: bool = True,
        anchor_generator: AnchorGenerator | None = None,
        bbox_coder: DeltaXYWHBBoxCoder | None = None,
        loss_cls: nn.Module | None = None,
        loss_bbox: nn.Module | None = None,
        loss_centerness: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"ATSSHead num_classes must be >= 1, got {num_classes}")
        if conv_cfg is not None:
            raise ConfigError("ATSSHead conv_cfg must be null (plain convolutions)")
        if not reg_decoded_bbox:
            raise ConfigError("ATSSHead reg_decoded_bbox must be true (its box loss compares decoded boxes)")
        if pred_kernel_size < 1 or pred_kernel_size % 2 == 0:
            raise ConfigError(f"ATSSHead pred_kernel_size must be odd and >= 1, got {pred_kernel_size}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.anchor_generator = anchor_generator or AnchorGenerator(
            strides=(8, 16, 32, 64, 128), ratios=(1.0,), octave_base_scale=8, scales_per_octave=1)
        num_priors = self.anchor_generator.num_base_priors
        if len(set(num_priors)) != 1:
            raise ConfigError(f"ATSSHead needs the same number of anchors on every level, got {num_priors}")
        self.num_anchors = num_priors[0]
        self.bbox_coder = bbox_coder or DeltaXYWHBBoxCoder(target_stds=(0.1, 0.1, 0.2, 0.2))
        self.reg_decoded_bbox = True
        self.loss_cls = loss_cls if loss_cls is not None else FocalLoss()
        self.loss_bbox = loss_bbox if loss_bbox is not None else GIoULoss(loss_weight=2.0)
        self.loss_centerness = loss_centerness if loss_centerness is not None else CrossEntropyLoss(use_sigmoid=True)
        if norm_cfg is None:
            norm_cfg = {"type": "GN", "num_groups": 32, "requires_grad": True}
        self.cls_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm_cfg)
        self.reg_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm_cfg)
        tower_out = feat_channels if stacked_convs > 0 else in_channels
        pad = pred_kernel_size // 2
        a = self.num_anchors
        self.atss_cls = nn.Conv2d(tower_out, a * num_classes, pred_kernel_size, padding=pad)
        self.atss_reg = nn.Conv2d(tower_out, a * 4, pred_kernel_size, padding=pad)
        self.atss_centerness = nn.Conv2d(tower_out, a, pred_kernel_size, padding=pad)
        self.scales = nn.ModuleList([Scale(1.0) for _ in range(self.anchor_generator.num_levels)])
        init_dense_head(self, self.atss_cls)
        self._anchors = PriorCache(self._make_anchors)

    def _make_anchors(self, sizes: list[tuple[int, int]], dtype: torch.dtype, device: torch.device,
                      pad_shape: tuple[int, int] | None = None) -> list[Tensor]:
        levels = self.anchor_generator.grid_priors(sizes, dtype=dtype, device=device, pad_shape=pad_shape)
        return [torch.cat(levels)] + levels  # [all (N, 4), level 0, level 1, ...]

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per level: class logits (B, A * C, H, W), deltas (B, A * 4, H, W), centerness logits (B, A, H, W)."""
        if len(feats) != len(self.scales):
            raise ValueError(f"ATSSHead has {len(self.scales)} levels but got {len(feats)} feature maps")
        cls_scores, bbox_preds, centernesses = [], [], []
        for x, scale in zip(feats, self.scales):
            cls_feat = self.cls_convs(x)
            reg_feat = self.reg_convs(x)
            cls_scores.append(self.atss_cls(cls_feat))
            deltas = scale(self.atss_reg(reg_feat))
            if deltas.dtype in (torch.float16, torch.bfloat16):  # deltas in float32 at least (mmdet's .float())
                deltas = deltas.float()
            bbox_preds.append(deltas)
            centernesses.append(self.atss_centerness(reg_feat))
        return cls_scores, bbox_preds, centernesses

    def loss(self, feats: tuple[Tensor, ...], images: ImageBatch, targets: list[GroundTruth],
             train_cfg: DenseTrainConfig) -> dict[str, Tensor]:
        """mmdet 2.x reductions: ``loss_cls`` and ``loss_centerness`` divided by ``sum_i max(num_pos_i, 1)``
        (mean over ranks, at least 1); ``loss_bbox`` (GIoU of decoded boxes) weighted by the centerness
        targets and divided by their sum (mean over ranks, at least 1)."""
        cls_scores, bbox_preds, centernesses = self(feats)
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        anchors = self._anchors.get(sizes, bbox_preds[0].dtype, bbox_preds[0].device,
                                   prior_pad_shape(self.anchor_generator, images))[0]  # (N, 4)
        labels, label_weights, pos_b, pos_n, pos_gt_boxes, num_total = self.get_targets(
            anchors, sizes, images, targets, train_cfg)
        device = anchors.device
        cls_flat = flatten_levels(cls_scores, self.num_classes)  # (B, N, C)
        reg_flat = flatten_levels(bbox_preds, 4)  # (B, N, 4)
        ctr_flat = flatten_levels(centernesses, 1)[..., 0]  # (B, N)
        loss_cls = self.loss_cls(cls_flat.reshape(-1, self.num_classes), labels.reshape(-1),
                                 None if label_weights is None else label_weights.reshape(-1), avg_factor=num_total)
        pos_anchors = anchors[pos_n]  # (P, 4)
        ctr_targets = anchor_centerness(pos_anchors, pos_gt_boxes)  # (P,)
        # computed before the data-dependent branch: every rank runs the same collectives
        bbox_avg_factor = max(reduce_mean(float(ctr_targets.sum().item()), device), 1.0)
        if pos_n.numel() == 0:
            # zero losses that keep a gradient path to both branches
            return {"loss_cls": loss_cls, "loss_bbox": reg_flat.sum() * 0, "loss_centerness": ctr_flat.sum() * 0}
        decoded = self.bbox_coder.decode(pos_anchors, reg_flat[pos_b, pos_n])  # (P, 4)
        loss_bbox = self.loss_bbox(decoded, pos_gt_boxes, weight=ctr_targets, avg_factor=1.0) / bbox_avg_factor
        loss_centerness = self.loss_centerness(ctr_flat[pos_b, pos_n], ctr_targets, avg_factor=num_total)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_centerness": loss_centerness}

    @torch.no_grad()
    def get_targets(
        self, anchors: Tensor, featmap_sizes: list[tuple[int, int]], images: ImageBatch,
        targets: list[GroundTruth], train_cfg: DenseTrainConfig,
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor, float]:
        """Assign the anchors of the whole batch (the assigner gets the per-level anchor counts).

        Returns:
            labels (Tensor[B, N]) int64, background ``C``; label_weights (Tensor[B, N]) or None when
            all are 1; pos_b, pos_n (Tensor[P]) image and anchor indices of positives; pos_gt_boxes
            (Tensor[P, 4]) their matched GT; ``max(mean over ranks of sum_i max(num_pos_i, 1), 1)``.
        """
        if train_cfg.assigner is None:
            raise ConfigError("model.train_cfg.assigner: ATSS needs an assigner (e.g. {type: ATSSAssigner, topk: 9})")
        device = anchors.device
        b, n = len(targets), anchors.shape[0]
        gt = PaddedGroundTruth.of(targets, device)
        gt_boxes = gt.boxes.to(anchors.dtype)
        prior_valid = valid_anchors(self.anchor_generator, anchors, featmap_sizes, images.image_sizes,
                                    tuple(images.tensor.shape[-2:]), train_cfg.allowed_border)  # type: ignore[arg-type]
        num_level_priors = [h * w * self.num_anchors for h, w in featmap_sizes]
        ignore = None if gt.ignore_boxes is None else gt.ignore_boxes.to(anchors.dtype)
        if train_cfg.assigner.needs_predictions:
            raise ConfigError(f"model.train_cfg.assigner: ATSS does not give predictions to "
                              f"{type(train_cfg.assigner).__name__}")
        gt_inds, _ = train_cfg.assigner.assign_batch(anchors, gt_boxes, gt.valid, ignore, gt.ignore_valid,
                                                     prior_valid, num_level_priors=num_level_priors)
        pos = gt_inds > 0  # (B, N)
        pos_b, pos_n = pos.nonzero(as_tuple=True)  # (P,)
        matched = gt_inds[pos_b, pos_n] - 1  # (P,)
        labels = torch.full((b, n), self.num_classes, dtype=torch.long, device=device)
        labels[pos_b, pos_n] = gt.labels[pos_b, matched]
        label_weights = None
        ignored = gt_inds == IGNORE
        if train_cfg.pos_weight > 0 or bool(ignored.any()):
            label_weights = (~ignored).to(anchors.dtype)
            if train_cfg.pos_weight > 0:
                label_weights[pos_b, pos_n] = train_cfg.pos_weight
        num_pos_per_image = pos.sum(dim=1).clamp(min=1)
        num_total = max(reduce_mean(float(num_pos_per_image.sum().item()), device), 1.0)
        return labels, label_weights, pos_b, pos_n, gt_boxes[pos_b, matched], num_total

    # ------------------------------------------------------------------ template hooks

    @property
    def prior_generator(self) -> AnchorGenerator:
        """The anchor generator (mmdet's config key is ``anchor_generator``)."""
        return self.anchor_generator

    @property
    def output_channels(self) -> tuple[int, ...]:
        return (self.num_classes, 4, 1)

    def level_priors(self, featmap_sizes: list[tuple[int, int]], dtype: torch.dtype, device: torch.device,
                     images: ImageBatch) -> list[Tensor]:
        return self._anchors.get(featmap_sizes, dtype, device, prior_pad_shape(self.anchor_generator, images))[1:]

    def level_scores(self, level: int, outputs: Sequence[Tensor]) -> LevelScores:
        """Rank by class logit; score = its sigmoid times the centerness probability (mmdet's score factor)."""
        return LevelScores(outputs[0], factors=outputs[2].sigmoid()[..., 0])

    def decode_level(self, level: int, priors: Tensor, outputs: Sequence[Tensor],
                     max_shape: tuple[int, int] | None) -> Tensor:
        return self.bbox_coder.decode(priors, outputs[0], max_shape=max_shape)


@DETECTORS.register()
class ATSS(SingleStageDetector):
    """ATSS detector: backbone, FPN neck and :class:`ATSSHead`.

    ``model(images, targets)`` -> ``{"loss_cls", "loss_bbox", "loss_centerness"}``; ``model(images)`` ->
    ``list[Detections]`` as for RetinaNet.

    Args:
        backbone: built backbone.
        neck: built neck.
        bbox_head: built :class:`ATSSHead`.
        train_cfg: ``{assigner (built; default ATSSAssigner(topk=9)), allowed_border, pos_weight, debug}``.
        test_cfg: ``{nms_pre, min_bbox_size, score_thr, nms: {type: nms, iou_threshold}, max_per_img}``.
        init_cfg: ``{type: Pretrained, checkpoint: PATH}`` of a whole detector.
    """

    default_assigner = ATSSAssigner(topk=9)
    head_type = ATSSHead
