"""FCOS (Tian et al., 2019): anchor-free per-point classification, distances and centerness.

Input: ``ImageBatch.tensor (B, 3, H, W)`` normalised, padded; boxes ``(x1, y1, x2, y2)`` with
``0 <= x1 < x2``. Labels ``0..C-1``; background is ``C``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.coders import DistancePointBBoxCoder
from detcli.models.dense_head import BaseDenseHead, LevelScores
from detcli.models.dense_utils import (
    PriorCache,
    conv_tower,
    flatten_levels,
    init_dense_head,
    pad_ground_truth,
    prior_pad_shape,
    reduce_mean,
)
from detcli.models.detector import (
    DenseTrainConfig,
    SingleStageDetector,
)
from detcli.models.losses import CrossEntropyLoss, FocalLoss, IoULoss, centerness_target
from detcli.models.priors import MlvlPointGenerator, TorchvisionAnchorGenerator
from detcli.registry import DETECTORS, HEADS
from detcli.structures import GroundTruth, ImageBatch

#: Area standing for "this point matches no ground truth".
INF = 1e8
DEFAULT_REGRESS_RANGES = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, INF))
#: how class and centerness probabilities make the test score (``FCOSHead.centerness_score``)
CENTERNESS_SCORES = ("product", "geometric_mean")


class Scale(nn.Module):
    """A learnable scalar multiplier (one per pyramid level)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


@HEADS.register()
class FCOSHead(BaseDenseHead):
    """FCOS head: class logits, ``(left, top, right, bottom)`` distances and centerness per point.

    Args:
        num_classes: foreground classes ``C``.
        in_channels: channels of the pyramid maps.
        feat_channels: channels of the tower convs.
        stacked_convs: convs per tower (conv + norm + ReLU).
        strides: stride of each pyramid level.
        regress_ranges: per level, the ``(lo, hi]`` range of the largest target distance it learns.
        center_sampling: positives only within ``center_sample_radius * stride`` of a box centre.
        center_sample_radius: radius of center sampling in strides.
        norm_on_bbox: regress distances divided by the stride, through ReLU instead of ``exp``.
        centerness_on_reg: centerness branch on the regression tower (else the classification tower).
        dcn_on_last_conv: deformable last tower conv; not supported (must be False).
        conv_bias: bias in tower convs: ``'auto'`` (only without norm) or a bool.
        norm_cfg: tower norm, ``{type: GN, num_groups: 32, requires_grad: true}`` or None.
        use_scale: a learnable :class:`Scale` per level on the distances (mmdet); False: none (fixed
            1, torchvision's FCOS).
        centerness_score: test score of a (point, class): ``'product'`` (mmdet: the class probability
            is thresholded and top-k'd alone, then multiplied by the centerness probability) or
            ``'geometric_mean'`` (torchvision: ``sqrt(sigmoid(cls) * sigmoid(ctr))`` is thresholded
            by ``score_thr`` and top-k'd).
        prior_generator: built point generator (default ``MlvlPointGenerator(strides)``, points at the
            cell centres), or a generator with one anchor per location whose anchor centres are the
            points (:class:`TorchvisionAnchorGenerator`: ``x * stride`` with torchvision's strides).
        bbox_coder: built :class:`DistancePointBBoxCoder` (default).
        loss_cls: built classification loss (default FocalLoss).
        loss_bbox: built box loss on decoded boxes (default IoULoss).
        loss_centerness: built centerness loss (default CrossEntropyLoss(use_sigmoid=True)).

    Outputs of :meth:`forward`, per level: ``cls_scores (B, C, H, W)`` logits, ``bbox_preds
    (B, 4, H, W)`` non-negative distances (in strides when ``norm_on_bbox``, else pixels) and
    ``centernesses (B, 1, H, W)`` logits.
    """

    output_kinds = ("cls_score", "bbox_pred", "centerness")

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        strides: Sequence[int] = (4, 8, 16, 32, 64),
        regress_ranges: Sequence[Sequence[float]] = DEFAULT_REGRESS_RANGES,
        center_sampling: bool = False,
        center_sample_radius: float = 1.5,
        norm_on_bbox: bool = False,
        centerness_on_reg: bool = False,
        dcn_on_last_conv: bool = False,
        conv_bias: bool | str = "auto",
        norm_cfg: Mapping[str, Any] | None = None,
        use_scale: bool = True,
        centerness_score: str = "product",
        prior_generator: MlvlPointGenerator | TorchvisionAnchorGenerator | None = None,
        bbox_coder: DistancePointBBoxCoder | None = None,
        loss_cls: nn.Module | None = None,
        loss_bbox: nn.Module | None = None,
        loss_centerness: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if dcn_on_last_conv:
            raise ConfigError("FCOSHead dcn_on_last_conv=True is not supported (deformable convs); set it to false")
        if num_classes < 1:
            raise ConfigError(f"FCOSHead num_classes must be >= 1, got {num_classes}")
        if len(regress_ranges) != len(strides):
            raise ConfigError(f"FCOSHead has {len(strides)} strides but {len(regress_ranges)} regress_ranges")
        if conv_bias != "auto" and not isinstance(conv_bias, bool):
            raise ConfigError(f"FCOSHead conv_bias must be 'auto' or a bool, got {conv_bias!r}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.strides = tuple(int(s) for s in strides)
        self.regress_ranges = tuple((float(lo), float(hi)) for lo, hi in regress_ranges)
        self.center_sampling = center_sampling
        self.center_sample_radius = float(center_sample_radius)
        self.norm_on_bbox = norm_on_bbox
        self.centerness_on_reg = centerness_on_reg
        if centerness_score not in CENTERNESS_SCORES:
            raise ConfigError(f"FCOSHead centerness_score must be one of {CENTERNESS_SCORES}, got {centerness_score!r}")
        self.centerness_score = centerness_score
        self.prior_generator = prior_generator or MlvlPointGenerator(self.strides)
        if self.prior_generator.num_levels != len(self.strides) or set(self.prior_generator.num_base_priors) != {1}:
            raise ConfigError(f"FCOSHead prior_generator needs {len(self.strides)} levels with one prior per "
                              f"location, got {self.prior_generator!r}")
        self.bbox_coder = bbox_coder or DistancePointBBoxCoder()
        self.loss_cls = loss_cls if loss_cls is not None else FocalLoss()
        self.loss_bbox = loss_bbox if loss_bbox is not None else IoULoss()
        self.loss_centerness = loss_centerness if loss_centerness is not None else CrossEntropyLoss(use_sigmoid=True)
        bias = norm_cfg is None if conv_bias == "auto" else bool(conv_bias)

        self.cls_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm_cfg, bias=bias)
        self.reg_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm_cfg, bias=bias)
        tower_out = feat_channels if stacked_convs > 0 else in_channels
        self.conv_cls = nn.Conv2d(tower_out, num_classes, 3, padding=1)
        self.conv_reg = nn.Conv2d(tower_out, 4, 3, padding=1)
        self.conv_centerness = nn.Conv2d(tower_out, 1, 3, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) if use_scale else nn.Identity() for _ in self.strides])
        init_dense_head(self, self.conv_cls)
        self._points = PriorCache(self._make_points)

    def _make_points(self, sizes: list[tuple[int, int]], dtype: torch.dtype, device: torch.device,
                     pad_shape: tuple[int, int] | None = None) -> list[Tensor]:
        """[points (N, 2), strides (N,), regress ranges (N, 2), level 0 points, level 1 points, ...]."""
        levels = [self.grid_to_priors(p)
                  for p in self.prior_generator.grid_priors(sizes, dtype=dtype, device=device, pad_shape=pad_shape)]
        strides = torch.cat([torch.full((len(p),), float(s), dtype=dtype, device=device)
                             for p, s in zip(levels, self.strides)])
        ranges = torch.cat([torch.tensor(r, dtype=dtype, device=device).expand(len(p), 2)
                            for p, r in zip(levels, self.regress_ranges)])
        return [torch.cat(levels), strides, ranges, *levels]

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per level: class logits (B, C, H, W), distances (B, 4, H, W), centerness logits (B, 1, H, W)."""
        if len(feats) != len(self.strides):
            raise ValueError(f"FCOSHead has {len(self.strides)} strides but got {len(feats)} feature maps")
        cls_scores, bbox_preds, centernesses = [], [], []
        for x, scale in zip(feats, self.scales):
            cls_feat = self.cls_convs(x)
            reg_feat = self.reg_convs(x)
            cls_scores.append(self.conv_cls(cls_feat))
            dist = scale(self.conv_reg(reg_feat))
            if dist.dtype in (torch.float16, torch.bfloat16):  # distances (and exp) in float32 at least; fp64 stays
                dist = dist.float()
            bbox_preds.append(dist.clamp(min=0) if self.norm_on_bbox else dist.exp())
            centernesses.append(self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat))
        return cls_scores, bbox_preds, centernesses

    def loss(self, feats: tuple[Tensor, ...], images: ImageBatch, targets: list[GroundTruth],
             train_cfg: DenseTrainConfig) -> dict[str, Tensor]:
        """``loss_cls`` / ``num_pos``, ``loss_bbox`` weighted by the centerness targets and divided by
        their sum, ``loss_centerness`` / ``num_pos`` (``num_pos`` at least 1)."""
        cls_scores, bbox_preds, centernesses = self(feats)
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        points, strides, ranges = self._points.get(sizes, bbox_preds[0].dtype, bbox_preds[0].device,
                                                  prior_pad_shape(self.prior_generator, images))[:3]
        labels, bbox_targets = self.get_targets(points, strides, ranges, targets)  # (B, N), (B, N, 4)
        cls_flat = flatten_levels(cls_scores, self.num_classes).reshape(-1, self.num_classes)  # (B * N, C)
        labels = labels.reshape(-1)  # (B * N,)
        pos_inds = ((labels >= 0) & (labels < self.num_classes)).nonzero(as_tuple=True)[0]  # (P,)
        # global means over ranks (mmdet's reduce_mean); computed before any data-dependent branch
        # so a rank without positives runs the same collectives as the others
        num_pos = max(reduce_mean(float(pos_inds.numel()), labels.device), 1.0)
        loss_cls = self.loss_cls(cls_flat, labels, avg_factor=num_pos)
        pos_bbox_preds = flatten_levels(bbox_preds, 4).reshape(-1, 4)[pos_inds]  # (P, 4)
        pos_centerness = flatten_levels(centernesses, 1).reshape(-1)[pos_inds]  # (P,)
        pos_bbox_targets = bbox_targets.reshape(-1, 4)[pos_inds]  # (P, 4)
        pos_centerness_targets = centerness_target(pos_bbox_targets)  # (P,)
        centerness_denorm = max(reduce_mean(float(pos_centerness_targets.sum().item()), labels.device), 1e-6)
        if pos_inds.numel() == 0:
            # keep a gradient path to both branches
            return {"loss_cls": loss_cls, "loss_bbox": pos_bbox_preds.sum(), "loss_centerness": pos_centerness.sum()}
        pos_points = points.repeat(len(targets), 1)[pos_inds]  # (P, 2)
        loss_bbox = self.loss_bbox(self.bbox_coder.decode(pos_points, pos_bbox_preds),
                                   self.bbox_coder.decode(pos_points, pos_bbox_targets),
                                   weight=pos_centerness_targets, avg_factor=centerness_denorm)
        loss_centerness = self.loss_centerness(pos_centerness, pos_centerness_targets, avg_factor=num_pos)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_centerness": loss_centerness}

    @torch.no_grad()
    def get_targets(self, points: Tensor, strides: Tensor, ranges: Tensor,
                    targets: list[GroundTruth]) -> tuple[Tensor, Tensor]:
        """Assign every point of the batch to the smallest-area GT that contains it (or its centre
        region with ``center_sampling``) and whose largest distance lies in the level's range.

        Args:
            points (Tensor[N, 2]), strides (Tensor[N]), ranges (Tensor[N, 2]): all levels concatenated.

        Returns:
            labels (Tensor[B, N]) int64, background ``C``; bbox_targets (Tensor[B, N, 4]) distances
            (divided by the stride when ``norm_on_bbox``).
        """
        device = points.device
        b, n = len(targets), points.shape[0]
        gt_boxes, gt_labels, gt_valid = pad_ground_truth(targets, device)  # (B, G, 4), (B, G), (B, G)
        g = gt_boxes.shape[1]
        if g == 0:
            return (torch.full((b, n), self.num_classes, dtype=torch.long, device=device),
                    points.new_zeros((b, n, 4)))
        xs, ys = points[None, :, None, 0], points[None, :, None, 1]  # (1, N, 1)
        x1, y1, x2, y2 = (gt_boxes[:, None, :, k] for k in range(4))  # (B, 1, G)
        dist = torch.stack([xs - x1, ys - y1, x2 - xs, y2 - ys], dim=-1)  # (B, N, G, 4)
        if self.center_sampling:
            radius = (strides * self.center_sample_radius)[None, :, None]  # (1, N, 1)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            cx1, cy1 = torch.maximum(cx - radius, x1), torch.maximum(cy - radius, y1)
            cx2, cy2 = torch.minimum(cx + radius, x2), torch.minimum(cy + radius, y2)
            inside = torch.stack([xs - cx1, ys - cy1, cx2 - xs, cy2 - ys], dim=-1).amin(dim=-1) > 0  # (B, N, G)
        else:
            inside = dist.amin(dim=-1) > 0
        max_dist = dist.amax(dim=-1)  # (B, N, G)
        in_range = (max_dist >= ranges[None, :, None, 0]) & (max_dist <= ranges[None, :, None, 1])
        areas = ((x2 - x1) * (y2 - y1)).expand(b, n, g)  # (B, N, G)
        areas = areas.masked_fill(~(inside & in_range & gt_valid[:, None, :]), INF)
        min_area, match = areas.min(dim=2)  # (B, N)
        labels = gt_labels.gather(1, match)  # (B, N)
        labels[min_area >= INF] = self.num_classes
        bbox_targets = dist.gather(2, match[:, :, None, None].expand(b, n, 1, 4)).squeeze(2)  # (B, N, 4)
        if self.norm_on_bbox:
            bbox_targets = bbox_targets / strides[None, :, None]
        return labels, bbox_targets

    # ------------------------------------------------------------------ template hooks

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def output_channels(self) -> tuple[int, ...]:
        return (self.num_classes, 4, 1)

    def level_priors(self, featmap_sizes: list[tuple[int, int]], dtype: torch.dtype, device: torch.device,
                     images: ImageBatch) -> list[Tensor]:
        return self._points.get(featmap_sizes, dtype, device, prior_pad_shape(self.prior_generator, images))[3:]

    def grid_to_priors(self, grid: Tensor) -> Tensor:
        """Points ``(N, 2)``: the generator's points, or the centres of its anchors (one per location)."""
        return (grid[:, :2] + grid[:, 2:]) / 2 if grid.shape[-1] == 4 else grid

    def level_scores(self, level: int, outputs: Sequence[Tensor]) -> LevelScores:
        """``'product'``: rank by class logit, score = its sigmoid times the centerness probability;
        ``'geometric_mean'``: rank and score by ``sqrt(p_cls * p_ctr)``."""
        centerness = outputs[2].sigmoid()  # (B, N, 1)
        if self.centerness_score == "geometric_mean":
            return LevelScores(torch.sqrt(outputs[0].sigmoid() * centerness), logits=False)  # (B, N, C)
        return LevelScores(outputs[0], factors=centerness[..., 0])

    def decode_level(self, level: int, priors: Tensor, outputs: Sequence[Tensor],
                     max_shape: tuple[int, int] | None) -> Tensor:
        dist = outputs[0]  # (B, P, 4)
        if self.norm_on_bbox:
            dist = dist * self.strides[level]
        return self.bbox_coder.decode(priors, dist, max_shape=max_shape)


@DETECTORS.register()
class FCOS(SingleStageDetector):
    """FCOS detector: backbone, FPN neck and :class:`FCOSHead`.

    ``model(images, targets)`` -> ``{"loss_cls", "loss_bbox", "loss_centerness"}``;
    ``model(images)`` -> ``list[Detections]`` as for RetinaNet.

    Args:
        backbone: built backbone.
        neck: built neck.
        bbox_head: built :class:`FCOSHead`.
        train_cfg: ``{allowed_border, pos_weight, debug}``; ``assigner`` must be null or absent.
        test_cfg: ``{nms_pre, min_bbox_size, score_thr, nms: {type: nms, iou_threshold}, max_per_img}``.
        init_cfg: ``{type: Pretrained, checkpoint: PATH}`` of a whole detector.
    """

    head_type = FCOSHead

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        bbox_head: nn.Module,
        train_cfg: Mapping[str, Any] | None = None,
        test_cfg: Mapping[str, Any] | None = None,
        init_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        if train_cfg is not None and train_cfg.get("assigner") is not None:
            raise ConfigError("model.train_cfg.assigner: FCOS assigns points itself; set assigner: null or remove it")
        super().__init__(backbone, neck, bbox_head, train_cfg, test_cfg, init_cfg)
