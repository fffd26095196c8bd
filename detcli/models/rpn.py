"""Region proposal network (Ren et al., 2015) as in mmdet 2.x ``RPNHead``: a 3x3 conv + ReLU, then
per-anchor objectness logits (sigmoid, one class) and box deltas on every pyramid level.

Training assigns the anchors of the whole batch at once (:meth:`MaxIoUAssigner.assign_batch`),
samples them with the ``train_cfg.rpn`` sampler and averages both losses over the sampled anchors.
Proposals (:meth:`RPNHead.get_proposals`): per level the top ``nms_pre`` anchors by score, decoded
and clipped, boxes with a side ``<= min_bbox_size`` dropped, NMS at ``nms.iou_threshold`` within
each level, then the best ``max_per_img`` over all levels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.assigners import MaxIoUAssigner
from detcli.models.coders import DeltaXYWHBBoxCoder
from detcli.models.dense_utils import (
    PaddedGroundTruth,
    PriorCache,
    flatten_levels,
    prior_pad_shape,
    valid_anchors,
)
from detcli.models.detector import cfg_number, check_keys
from detcli.models.losses import CrossEntropyLoss, L1Loss
from detcli.models.priors import AnchorGenerator, TorchvisionAnchorGenerator
from detcli.models.samplers import RandomSampler
from detcli.ops import batched_nms
from detcli.registry import HEADS
from detcli.structures import GroundTruth, ImageBatch


@dataclass(frozen=True)
class RPNTrainConfig:
    """``train_cfg.rpn``: assigner and sampler (built), ``allowed_border``, ``pos_weight``, ``debug``."""

    assigner: MaxIoUAssigner
    sampler: RandomSampler
    allowed_border: float = -1
    pos_weight: float = -1
    debug: bool = False

    @classmethod
    def parse(cls, cfg: Mapping[str, Any] | None, path: str) -> RPNTrainConfig:
        cfg = dict(cfg or {})
        check_keys(cfg, ("assigner", "sampler", "allowed_border", "pos_weight", "debug"), path)
        assigner = cfg.get("assigner") or MaxIoUAssigner(0.7, 0.3, min_pos_iou=0.3, match_low_quality=True)
        sampler = cfg.get("sampler") or RandomSampler(256, 0.5, neg_pos_ub=-1, add_gt_as_proposals=False)
        if not isinstance(assigner, MaxIoUAssigner):
            raise ConfigError(f"{path}.assigner: expected a {{type: MaxIoUAssigner, ...}} node")
        if not isinstance(sampler, RandomSampler):
            raise ConfigError(f"{path}.sampler: expected a {{type: RandomSampler, ...}} node")
        return cls(assigner, sampler, cfg_number(cfg, "allowed_border", -1, path),
                   cfg_number(cfg, "pos_weight", -1, path), cfg_number(cfg, "debug", False, path, bool))


@dataclass(frozen=True)
class ProposalConfig:
    """``train_cfg.rpn_proposal`` / ``test_cfg.rpn``: how proposals are selected.

    Attributes:
        nms_pre: anchors kept per level and image before NMS, by score (``<= 0``: all).
        max_per_img: proposals kept per image after NMS.
        iou_threshold: NMS IoU (``nms.iou_threshold``), applied within each level.
        min_bbox_size: boxes with width or height ``<= min_bbox_size`` are dropped (when ``>= 0``).
        nms_across_levels, nms_post: accepted for mmdet compatibility (GARPNHead only); no effect.
    """

    nms_pre: int = 1000
    max_per_img: int = 1000
    iou_threshold: float = 0.7
    min_bbox_size: float = 0.0
    nms_across_levels: bool = False
    nms_post: int = 1000

    @classmethod
    def parse(cls, cfg: Mapping[str, Any] | None, path: str) -> ProposalConfig:
        cfg = dict(cfg or {})
        check_keys(cfg, ("nms_across_levels", "nms_pre", "nms_post", "max_per_img", "nms", "min_bbox_size"), path)
        nms_cfg = dict(cfg.get("nms") or {"type": "nms", "iou_threshold": 0.7})
        check_keys(nms_cfg, ("type", "iou_threshold", "iou_thr"), f"{path}.nms")
        if nms_cfg.get("type", "nms") != "nms":
            raise ConfigError(f"{path}.nms.type: only 'nms' is supported, got {nms_cfg.get('type')!r}")
        iou_key = "iou_threshold" if "iou_threshold" in nms_cfg or "iou_thr" not in nms_cfg else "iou_thr"
        return cls(cfg_number(cfg, "nms_pre", 1000, path, int), cfg_number(cfg, "max_per_img", 1000, path, int),
                   cfg_number(nms_cfg, iou_key, 0.7, f"{path}.nms"), cfg_number(cfg, "min_bbox_size", 0, path),
                   cfg_number(cfg, "nms_across_levels", False, path, bool), cfg_number(cfg, "nms_post", 1000, path, int))


def clip_to_sizes(boxes: Tensor, image_sizes: list[tuple[int, int]]) -> Tensor:
    """Clamp ``boxes (B, K, 4)`` to each image's ``(h, w)``."""
    hw = torch.tensor(image_sizes, dtype=boxes.dtype, device=boxes.device)  # (B, 2)
    bound = hw[:, [1, 0, 1, 0]][:, None, :]  # (B, 1, 4)
    return torch.minimum(boxes.clamp(min=0), bound)


@HEADS.register()
class RPNHead(nn.Module):
    """RPN head: ``num_convs`` 3x3 convs + ReLU, then a 1x1 conv for ``A`` objectness logits and
    one for ``4 A`` deltas, shared across levels.

    Args:
        in_channels: channels of the pyramid maps.
        feat_channels: channels of the 3x3 convs.
        num_convs: number of 3x3 convs.
        anchor_generator: built :class:`AnchorGenerator` (default: scales 8, ratios 0.5/1/2, strides 4..64).
        bbox_coder: built :class:`DeltaXYWHBBoxCoder` (default: means 0, stds 1).
        reg_decoded_bbox: regress decoded boxes (for IoU-type ``loss_bbox``) instead of deltas.
        loss_cls: built objectness loss (default: CrossEntropyLoss with sigmoid).
        loss_bbox: built box loss (default: L1Loss).
        init_cfg: accepted for mmdet compatibility (convs are always Normal(0, 0.01)); must be a mapping.

    Outputs of :meth:`forward`, per level ``l``: ``(B, A, H_l, W_l)`` logits and ``(B, 4 A, H_l, W_l)`` deltas.
    """

    def __init__(
        self,
        in_channels: int,
        feat_channels: int = 256,
        num_convs: int = 1,
        anchor_generator: AnchorGenerator | TorchvisionAnchorGenerator | None = None,
        bbox_coder: DeltaXYWHBBoxCoder | None = None,
        reg_decoded_bbox: bool = False,
        loss_cls: nn.Module | None = None,
        loss_bbox: nn.Module | None = None,
        init_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if num_convs < 1:
            raise ConfigError(f"RPNHead num_convs must be >= 1, got {num_convs}")
        self.num_classes = 1
        self.in_channels = in_channels
        self.anchor_generator = anchor_generator or AnchorGenerator(
            strides=(4, 8, 16, 32, 64), ratios=(0.5, 1.0, 2.0), scales=(8,))
        self.bbox_coder = bbox_coder or DeltaXYWHBBoxCoder()
        self.reg_decoded_bbox = reg_decoded_bbox
        self.loss_cls = loss_cls if loss_cls is not None else CrossEntropyLoss(use_sigmoid=True)
        self.loss_bbox = loss_bbox if loss_bbox is not None else L1Loss()
        if not getattr(self.loss_cls, "use_sigmoid", False):
            raise ConfigError("model.rpn_head.loss_cls: the RPN needs a sigmoid objectness loss "
                              "(e.g. {type: CrossEntropyLoss, use_sigmoid: true})")
        num_priors = self.anchor_generator.num_base_priors
        if len(set(num_priors)) != 1:
            raise ConfigError(f"RPNHead needs the same number of anchors on every level, got {num_priors}")
        self.num_anchors = num_priors[0]
        convs: list[nn.Module] = []
        for i in range(num_convs):
            convs += [nn.Conv2d(in_channels if i == 0 else feat_channels, feat_channels, 3, padding=1),
                      nn.ReLU(inplace=True)]
        self.rpn_conv = nn.Sequential(*convs)
        self.rpn_cls = nn.Conv2d(feat_channels, self.num_anchors, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, self.num_anchors * 4, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)  # type: ignore[arg-type]
        self._anchors = PriorCache(self._make_anchors)

    def _make_anchors(self, sizes: list[tuple[int, int]], dtype: torch.dtype, device: torch.device,
                      pad_shape: tuple[int, int] | None = None) -> list[Tensor]:
        levels = self.anchor_generator.grid_priors(sizes, dtype=dtype, device=device, pad_shape=pad_shape)
        return [torch.cat(levels)] + levels

    def anchors(self, sizes: list[tuple[int, int]], like: Tensor, images: ImageBatch | None = None) -> list[Tensor]:
        """``[all (N, 4), level 0, level 1, ...]`` anchors for feature maps of ``sizes`` (cached);
        ``images`` gives the padded batch shape to generators that use it (torchvision's)."""
        pad_shape = None if images is None else prior_pad_shape(self.anchor_generator, images)
        return self._anchors.get(sizes, like.dtype, like.device, pad_shape)

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[list[Tensor], list[Tensor]]:
        """Per-level objectness logits ``(B, A, H, W)`` and deltas ``(B, 4 A, H, W)``."""
        cls_scores, bbox_preds = [], []
        for x in feats:
            h = self.rpn_conv(x)
            cls_scores.append(self.rpn_cls(h))
            bbox_preds.append(self.rpn_reg(h))
        return cls_scores, bbox_preds

    def loss(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], images: ImageBatch,
             targets: list[GroundTruth], train_cfg: RPNTrainConfig,
             padded: PaddedGroundTruth | None = None) -> dict[str, Tensor]:
        """``loss_rpn_cls`` over the sampled anchors and ``loss_rpn_bbox`` over the sampled
        positives, both divided by ``sum_i max(P_i, 1) + max(Q_i, 1)`` (P positives, Q negatives).
        ``padded``: ``targets`` already padded on the features' device (padded here when None)."""
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        anchors = self.anchors(sizes, cls_scores[0], images)[0]  # type: ignore[arg-type]  # (N, 4)
        with torch.no_grad():
            gt = PaddedGroundTruth.of(targets, anchors.device) if padded is None else padded
            prior_valid = valid_anchors(self.anchor_generator, anchors, sizes, images.image_sizes,  # type: ignore[arg-type]
                                        tuple(images.tensor.shape[-2:]), train_cfg.allowed_border)  # type: ignore[arg-type]
            gt_inds, _ = train_cfg.assigner.assign_batch(
                anchors, gt.boxes, gt.valid, gt.ignore_boxes, gt.ignore_valid, prior_valid,
                num_level_priors=[h * w * self.num_anchors for h, w in sizes])  # (B, N)
            pos, neg = train_cfg.sampler.sample_batch(gt_inds)
            pos_b, pos_n = pos.nonzero(as_tuple=True)
            smp_b, smp_n = (pos | neg).nonzero(as_tuple=True)
            avg_factor = float((pos.sum(1).clamp(min=1) + neg.sum(1).clamp(min=1)).sum().item())
            targets_cls = pos[smp_b, smp_n].to(cls_scores[0].dtype)
            pos_gt = gt.boxes[pos_b, gt_inds[pos_b, pos_n] - 1]  # (P, 4)
            weight = None
            if train_cfg.pos_weight > 0:
                weight = torch.where(targets_cls > 0, train_cfg.pos_weight, 1.0)
        cls_flat = flatten_levels(cls_scores, 1)[..., 0]  # (B, N)
        reg_flat = flatten_levels(bbox_preds, 4)  # (B, N, 4)
        loss_cls = self.loss_cls(cls_flat[smp_b, smp_n], targets_cls, weight, avg_factor=avg_factor)
        pos_pred = reg_flat[pos_b, pos_n]
        pos_anchors = anchors[pos_n]
        if self.reg_decoded_bbox:
            loss_bbox = self.loss_bbox(self.bbox_coder.decode(pos_anchors, pos_pred), pos_gt, avg_factor=avg_factor)
        else:
            loss_bbox = self.loss_bbox(pos_pred, self.bbox_coder.encode(pos_anchors, pos_gt), avg_factor=avg_factor)
        return {"loss_rpn_cls": loss_cls, "loss_rpn_bbox": loss_bbox}

    @torch.no_grad()
    def get_proposals(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], images: ImageBatch,
                      cfg: ProposalConfig) -> list[tuple[Tensor, Tensor]]:
        """Proposals of every image: ``(boxes (k, 4), scores (k,))`` sorted by decreasing score,
        ``k <= cfg.max_per_img``, clipped to ``images.image_sizes[i]`` (detached from the graph)."""
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        anchors_per_level = self.anchors(sizes, cls_scores[0], images)[1:]  # type: ignore[arg-type]
        b = cls_scores[0].shape[0]
        boxes_l, scores_l, counts = [], [], []
        for level, anchors in enumerate(anchors_per_level):
            logits = flatten_levels([cls_scores[level].detach()], 1)[..., 0]  # (B, N_l)
            deltas = flatten_levels([bbox_preds[level].detach()], 4)  # (B, N_l, 4)
            if 0 < cfg.nms_pre < logits.shape[1]:
                logits, idx = logits.topk(cfg.nms_pre, dim=1)  # (B, k)
                deltas = deltas.gather(1, idx[..., None].expand(-1, -1, 4))
                priors = anchors[idx]  # (B, k, 4)
            else:
                priors = anchors[None].expand(b, -1, -1)
            boxes_l.append(self.bbox_coder.decode(priors, deltas))
            scores_l.append(logits.sigmoid())
            counts.append(logits.shape[1])
        boxes = clip_to_sizes(torch.cat(boxes_l, dim=1), images.image_sizes)  # (B, K, 4)
        scores = torch.cat(scores_l, dim=1)  # (B, K)
        if cfg.min_bbox_size >= 0:
            wh = boxes[..., 2:] - boxes[..., :2]
            valid = (wh[..., 0] > cfg.min_bbox_size) & (wh[..., 1] > cfg.min_bbox_size)  # (B, K)
        else:
            valid = torch.ones_like(scores, dtype=torch.bool)
        levels = torch.cat([torch.full((count,), level, dtype=torch.long, device=boxes.device)
                            for level, count in enumerate(counts)])  # (K,) NMS category: the level
        results = []
        for i in range(b):
            inds = valid[i].nonzero(as_tuple=True)[0]
            keep = inds[batched_nms(boxes[i, inds], scores[i, inds], levels[inds], cfg.iou_threshold)]
            keep = keep[:cfg.max_per_img]  # batched_nms sorts by decreasing score
            results.append((boxes[i, keep], scores[i, keep]))
        return results
