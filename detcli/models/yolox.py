"""YOLOX (Ge et al., 2021): anchor-free decoupled head with objectness, SimOTA assignment.

Input: ``ImageBatch.tensor (B, 3, H, W)`` (YOLOX's presets feed unnormalised 0-255 pixels, padded with
114), boxes ``(x1, y1, x2, y2)``. Labels ``0..C-1``. Priors are the grid points ``(x * s, y * s)`` of
strides 8/16/32 (offset 0, the cell's top-left corner); a prediction ``(dx, dy, dw, dh)`` decodes to
the centre ``(dx, dy) * s + prior`` and the size ``exp(dw, dh) * s``.

Post-processing (mmdet 2.x ``YOLOXHead.get_bboxes``): each prior gives one candidate, its best class,
scored ``sigmoid(cls) * sigmoid(obj)`` and kept when ``>= score_thr`` (no per-level top-k: ``nms_pre``
defaults to -1, all), boxes are not clipped to the image, then class-aware NMS. It runs on the
dense-head template (one candidate per prior: :attr:`LevelScores.labels`), so export works as for
the other dense heads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.assigners import SimOTAAssigner
from detcli.models.backbones.csp_darknet import DEFAULT_ACT, DEFAULT_NORM, conv_block, init_yolox_convs
from detcli.models.dense_head import BaseDenseHead, LevelScores
from detcli.models.dense_utils import PRIOR_PROB, PriorCache, flatten_levels, pad_ground_truth, reduce_mean
from detcli.models.detector import DenseTrainConfig, SingleStageDetector
from detcli.models.losses import CrossEntropyLoss, IoULoss, L1Loss
from detcli.models.priors import MlvlPointGenerator
from detcli.registry import DETECTORS, HEADS
from detcli.structures import GroundTruth, ImageBatch


def decode_yolox(priors: Tensor, preds: Tensor, strides: Tensor | float) -> Tensor:
    """Boxes ``(..., 4)`` from ``preds (..., 4)`` at points ``priors (..., 2)`` of ``strides``:
    centre ``pred_xy * s + prior``, size ``exp(pred_wh) * s``."""
    xy = preds[..., :2] * strides + priors
    wh = preds[..., 2:].exp() * strides
    return torch.stack([xy[..., 0] - wh[..., 0] / 2, xy[..., 1] - wh[..., 1] / 2,
                        xy[..., 0] + wh[..., 0] / 2, xy[..., 1] + wh[..., 1] / 2], dim=-1)


@HEADS.register()
class YOLOXHead(BaseDenseHead):
    """YOLOX head: per level (weights not shared) a classification tower and a regression tower of
    ``stacked_convs`` 3x3 conv + BN + Swish blocks, then 1x1 convs for the class logits (on the
    classification tower), the box and the objectness logit (both on the regression tower).

    Args:
        num_classes: foreground classes ``C``.
        in_channels: channels of the neck maps.
        feat_channels: channels of the towers.
        stacked_convs: blocks per tower.
        strides: strides of the levels.
        use_depthwise: depthwise-separable tower convs.
        dcn_on_last_conv: must be False.
        conv_bias: must be ``'auto'`` or False (the tower convs have a norm, hence no bias).
        conv_cfg: must be None; norm_cfg, act_cfg: as in :class:`~detcli.models.backbones.CSPDarknet`.
        loss_cls: built loss on the positives' class logits vs IoU-aware one-hot targets (default
            ``CrossEntropyLoss(use_sigmoid, reduction=sum)``).
        loss_bbox: built loss on decoded boxes (default ``IoULoss(mode=square, eps=1e-16, reduction=sum,
            loss_weight=5)``).
        loss_obj: built objectness loss over all priors (default as ``loss_cls``).
        loss_l1: built L1 loss on the encoded targets, used when :attr:`use_l1` is True (default
            ``L1Loss(reduction=sum)``).
        init_cfg: None or mmdet's default Kaiming init.

    Attributes:
        use_l1: add ``loss_l1`` (set by the mode-switch hook for the last epochs; default False).

    Outputs of :meth:`forward`, per level: ``cls_scores (B, C, H, W)`` logits, ``bbox_preds (B, 4, H, W)``
    encoded boxes, ``objectnesses (B, 1, H, W)`` logits.
    """

    output_kinds = ("cls_score", "bbox_pred", "objectness")
    clip_boxes = False

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        feat_channels: int = 256,
        stacked_convs: int = 2,
        strides: Sequence[int] = (8, 16, 32),
        use_depthwise: bool = False,
        dcn_on_last_conv: bool = False,
        conv_bias: bool | str = "auto",
        conv_cfg: Mapping[str, Any] | None = None,
        norm_cfg: Mapping[str, Any] | None = None,
        act_cfg: Mapping[str, Any] | None = None,
        loss_cls: nn.Module | None = None,
        loss_bbox: nn.Module | None = None,
        loss_obj: nn.Module | None = None,
        loss_l1: nn.Module | None = None,
        init_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"YOLOXHead num_classes must be >= 1, got {num_classes}")
        if dcn_on_last_conv:
            raise ConfigError("YOLOXHead dcn_on_last_conv=True is not supported (deformable convs); set it to false")
        if conv_bias not in ("auto", False):
            raise ConfigError(f"YOLOXHead conv_bias must be 'auto' or false (normed convs), got {conv_bias!r}")
        if conv_cfg is not None:
            raise ConfigError("YOLOXHead conv_cfg must be null (plain convolutions)")
        if init_cfg is not None and dict(init_cfg).get("type") != "Kaiming":
            raise ConfigError(f"YOLOXHead init_cfg: only the default Kaiming init is supported, got {dict(init_cfg)!r}")
        norm_cfg = dict(norm_cfg) if norm_cfg is not None else dict(DEFAULT_NORM)
        act_cfg = dict(act_cfg) if act_cfg is not None else dict(DEFAULT_ACT)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.strides = tuple(int(s) for s in strides)
        self.prior_generator = MlvlPointGenerator(self.strides, offset=0)
        self.loss_cls = loss_cls if loss_cls is not None else CrossEntropyLoss(use_sigmoid=True, reduction="sum")
        self.loss_bbox = loss_bbox if loss_bbox is not None else IoULoss(mode="square", eps=1e-16, reduction="sum",
                                                                         loss_weight=5.0)
        self.loss_obj = loss_obj if loss_obj is not None else CrossEntropyLoss(use_sigmoid=True, reduction="sum")
        self.loss_l1 = loss_l1 if loss_l1 is not None else L1Loss(reduction="sum")
        self.use_l1 = False

        def tower() -> nn.Sequential:
            return nn.Sequential(*[conv_block(use_depthwise, in_channels if i == 0 else feat_channels, feat_channels,
                                              3, 1, norm_cfg, act_cfg) for i in range(stacked_convs)])

        tower_out = feat_channels if stacked_convs > 0 else in_channels
        self.multi_level_cls_convs = nn.ModuleList([tower() for _ in self.strides])
        self.multi_level_reg_convs = nn.ModuleList([tower() for _ in self.strides])
        self.multi_level_conv_cls = nn.ModuleList([nn.Conv2d(tower_out, num_classes, 1) for _ in self.strides])
        self.multi_level_conv_reg = nn.ModuleList([nn.Conv2d(tower_out, 4, 1) for _ in self.strides])
        self.multi_level_conv_obj = nn.ModuleList([nn.Conv2d(tower_out, 1, 1) for _ in self.strides])
        init_yolox_convs(self)
        bias = -math.log((1 - PRIOR_PROB) / PRIOR_PROB)
        for conv in [*self.multi_level_conv_cls, *self.multi_level_conv_obj]:
            nn.init.constant_(conv.bias, bias)
        self._priors = PriorCache(self._make_priors)

    def _make_priors(self, sizes: list[tuple[int, int]], dtype: torch.dtype, device: torch.device,
                     pad_shape: tuple[int, int] | None = None) -> list[Tensor]:
        """[points with strides (N, 4) of all levels, level 0 points (N_0, 2), level 1 points, ...]."""
        levels = self.prior_generator.grid_priors(sizes, dtype=dtype, device=device, with_stride=True)
        return [torch.cat(levels), *[p[:, :2] for p in levels]]

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per level: class logits (B, C, H, W), encoded boxes (B, 4, H, W), objectness logits (B, 1, H, W)."""
        if len(feats) != len(self.strides):
            raise ValueError(f"YOLOXHead has {len(self.strides)} strides but got {len(feats)} feature maps")
        cls_scores, bbox_preds, objectnesses = [], [], []
        for level, x in enumerate(feats):
            cls_feat = self.multi_level_cls_convs[level](x)
            reg_feat = self.multi_level_reg_convs[level](x)
            cls_scores.append(self.multi_level_conv_cls[level](cls_feat))
            bbox_preds.append(self.multi_level_conv_reg[level](reg_feat))
            objectnesses.append(self.multi_level_conv_obj[level](reg_feat))
        return cls_scores, bbox_preds, objectnesses

    def loss(self, feats: tuple[Tensor, ...], images: ImageBatch, targets: list[GroundTruth],
             train_cfg: DenseTrainConfig) -> dict[str, Tensor]:
        """``loss_cls`` (positives, IoU-aware targets), ``loss_bbox`` (positives), ``loss_obj`` (all
        priors) and, with :attr:`use_l1`, ``loss_l1``; each a sum divided by the number of positives
        (mean over ranks, at least 1)."""
        cls_scores, bbox_preds, objectnesses = self(feats)
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        priors = self._priors.get(sizes, bbox_preds[0].dtype, bbox_preds[0].device)[0]  # (N, 4)
        cls_flat = flatten_levels(cls_scores, self.num_classes)  # (B, N, C)
        bbox_flat = flatten_levels(bbox_preds, 4)  # (B, N, 4)
        obj_flat = flatten_levels(objectnesses, 1)[..., 0]  # (B, N)
        decoded = decode_yolox(priors[:, :2], bbox_flat, priors[:, 2:])  # (B, N, 4)
        gt_inds, ious, gt_boxes, gt_labels = self.get_targets(priors, cls_flat, decoded, obj_flat, targets, train_cfg)
        pos = gt_inds > 0  # (B, N)
        num_total = max(reduce_mean(float(pos.sum().item()), pos.device), 1.0)
        loss_obj = self.loss_obj(obj_flat.reshape(-1, 1), pos.reshape(-1, 1).to(obj_flat.dtype)) / num_total
        img_idx, prior_idx = pos.nonzero(as_tuple=True)  # (P,)
        if img_idx.numel() > 0:
            matched = gt_inds[img_idx, prior_idx] - 1
            pos_boxes = gt_boxes[img_idx, matched]  # (P, 4)
            cls_target = F.one_hot(gt_labels[img_idx, matched], self.num_classes).to(cls_flat.dtype) \
                * ious[img_idx, prior_idx][:, None]
            loss_cls = self.loss_cls(cls_flat[img_idx, prior_idx], cls_target) / num_total
            loss_bbox = self.loss_bbox(decoded[img_idx, prior_idx], pos_boxes) / num_total
        else:
            loss_cls, loss_bbox = cls_flat.sum() * 0, decoded.sum() * 0
        losses = {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_obj": loss_obj}
        if self.use_l1:
            if img_idx.numel() > 0:
                l1_target = self.l1_targets(pos_boxes, priors[prior_idx])
                losses["loss_l1"] = self.loss_l1(bbox_flat[img_idx, prior_idx], l1_target) / num_total
            else:
                losses["loss_l1"] = bbox_flat.sum() * 0
        return losses

    @torch.no_grad()
    def get_targets(self, priors: Tensor, cls_flat: Tensor, decoded: Tensor, obj_flat: Tensor,
                    targets: list[GroundTruth], train_cfg: DenseTrainConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """SimOTA assignment: ``gt_inds (B, N)``, IoUs with the assigned GT ``(B, N)``, and the padded
        GT boxes ``(B, G, 4)`` and labels ``(B, G)``."""
        assigner = train_cfg.assigner if train_cfg.assigner is not None else SimOTAAssigner()
        gt_boxes, gt_labels, gt_valid = pad_ground_truth(targets, cls_flat.device)
        gt_boxes = gt_boxes.to(decoded.dtype)
        # cell centres: the assigner's centre-region test uses them
        centres = torch.cat([priors[:, :2] + priors[:, 2:] * 0.5, priors[:, 2:]], dim=-1)
        scores = (cls_flat.sigmoid() * obj_flat[..., None].sigmoid()).sqrt()
        gt_inds, ious = assigner.assign_batch(centres, gt_boxes, gt_valid, pred_bboxes=decoded, pred_scores=scores,  # type: ignore[call-arg]
                                              gt_labels=gt_labels)
        return gt_inds, ious, gt_boxes, gt_labels

    @staticmethod
    def l1_targets(gt_boxes: Tensor, priors: Tensor, eps: float = 1e-8) -> Tensor:
        """Encoded targets ``((cx, cy) - prior) / s, log((w, h) / s + eps)`` of boxes ``(P, 4)`` at priors ``(P, 4)``."""
        cxcy = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
        wh = gt_boxes[:, 2:] - gt_boxes[:, :2]
        return torch.cat([(cxcy - priors[:, :2]) / priors[:, 2:], torch.log(wh / priors[:, 2:] + eps)], dim=1)

    # ------------------------------------------------------------------ template hooks

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def output_channels(self) -> tuple[int, ...]:
        return (self.num_classes, 4, 1)

    def level_priors(self, featmap_sizes: list[tuple[int, int]], dtype: torch.dtype, device: torch.device,
                     images: ImageBatch) -> list[Tensor]:
        return self._priors.get(featmap_sizes, dtype, device)[1:]

    def level_scores(self, level: int, outputs: Sequence[Tensor]) -> LevelScores:
        """One candidate per prior: its best class probability times the objectness probability,
        kept when ``>= score_thr``."""
        best, labels = outputs[0].sigmoid().max(dim=-1)  # (B, N)
        score = outputs[2][..., 0].sigmoid() * best
        return LevelScores(score[..., None], logits=False, labels=labels, inclusive=True)

    def decode_level(self, level: int, priors: Tensor, outputs: Sequence[Tensor],
                     max_shape: tuple[int, int] | None) -> Tensor:
        """Decoded boxes; not clipped (mmdet's YOLOX does not clip)."""
        return decode_yolox(priors, outputs[0], float(self.strides[level]))


@DETECTORS.register()
class YOLOX(SingleStageDetector):
    """YOLOX detector: CSPDarknet backbone, YOLOXPAFPN neck and :class:`YOLOXHead`.

    ``model(images, targets)`` -> ``{"loss_cls", "loss_bbox", "loss_obj"[, "loss_l1"]}``;
    ``model(images)`` -> ``list[Detections]`` (boxes not clipped to the image, as mmdet's YOLOX).

    Args:
        backbone, neck, bbox_head: built components (``bbox_head`` a :class:`YOLOXHead`).
        train_cfg: ``{assigner}`` (default :class:`SimOTAAssigner` with centre radius 2.5).
        test_cfg: ``{score_thr, nms, max_per_img, nms_pre}``; ``nms_pre`` defaults to -1 (all priors:
            mmdet 2.x's YOLOX has no per-level top-k) and ``max_per_img`` to -1 (mmdet's YOLOX, 2.x and
            3.x, keeps every box NMS leaves; the export graph needs a cap, so the presets set 100).
        input_size, random_size_range, random_size_interval: mmdet 2.x's multi-scale training settings,
            kept as attributes for the engine's random-size hook.
        init_cfg: ``{type: Pretrained, checkpoint: PATH}`` of a whole detector.
    """

    default_assigner = None

    head_type = YOLOXHead

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        bbox_head: nn.Module,
        train_cfg: Mapping[str, Any] | None = None,
        test_cfg: Mapping[str, Any] | None = None,
        init_cfg: Mapping[str, Any] | None = None,
        input_size: Sequence[int] = (640, 640),
        random_size_range: Sequence[int] = (15, 25),
        random_size_interval: int = 10,
    ) -> None:
        test_cfg = {"nms_pre": -1, "max_per_img": -1, **dict(test_cfg or {})}
        train_cfg = dict(train_cfg or {})
        if train_cfg.get("assigner") is None:
            train_cfg["assigner"] = SimOTAAssigner(center_radius=2.5)
        elif not isinstance(train_cfg["assigner"], SimOTAAssigner):
            raise ConfigError(f"model.train_cfg.assigner: YOLOX needs a SimOTAAssigner, "
                              f"got {type(train_cfg['assigner']).__name__}")
        super().__init__(backbone, neck, bbox_head, train_cfg, test_cfg, init_cfg)
        self.input_size = tuple(int(s) for s in input_size)
        self.random_size_range = tuple(int(s) for s in random_size_range)
        self.random_size_interval = int(random_size_interval)
