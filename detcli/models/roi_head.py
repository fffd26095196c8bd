"""The second stage of Faster / Mask R-CNN (mmdet 2.x ``StandardRoIHead``).

Training, for the whole batch at once: the proposals of every image are padded to a common count,
assigned to the ground truth (:meth:`MaxIoUAssigner.assign_batch` with per-image priors), the GT
boxes are prepended as positives (``add_gt_as_proposals``) and :meth:`RandomSampler.sample_batch`
draws the RoIs. The box branch pools them (``bbox_roi_extractor``) into the box head; the mask
branch pools the sampled positives (``mask_roi_extractor``, or the box extractor when none is
given) into the mask head, whose targets are the GT masks cropped to each positive RoI.

Inference: proposals -> box head -> per-image class-aware NMS -> final boxes -> mask head ->
masks pasted at ``images.image_sizes[i]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.assigners import IGNORE, MaxIoUAssigner
from detcli.models.dense_utils import PaddedGroundTruth
from detcli.models.detector import cfg_number, check_keys
from detcli.models.samplers import RandomSampler
from detcli.registry import HEADS
from detcli.structures import Detections, GroundTruth, ImageBatch


@dataclass(frozen=True)
class RCNNTrainConfig:
    """``train_cfg.rcnn``: assigner and sampler (built), ``mask_size``, ``pos_weight``, ``debug``."""

    assigner: MaxIoUAssigner
    sampler: RandomSampler
    mask_size: int = 28
    pos_weight: float = -1
    debug: bool = False

    @classmethod
    def parse(cls, cfg: Mapping[str, Any] | None, path: str) -> RCNNTrainConfig:
        cfg = dict(cfg or {})
        check_keys(cfg, ("assigner", "sampler", "mask_size", "pos_weight", "debug"), path)
        assigner = cfg.get("assigner") or MaxIoUAssigner(0.5, 0.5, min_pos_iou=0.5, match_low_quality=False)
        sampler = cfg.get("sampler") or RandomSampler(512, 0.25, neg_pos_ub=-1, add_gt_as_proposals=True)
        if not isinstance(assigner, MaxIoUAssigner):
            raise ConfigError(f"{path}.assigner: expected a {{type: MaxIoUAssigner, ...}} node")
        if not isinstance(sampler, RandomSampler):
            raise ConfigError(f"{path}.sampler: expected a {{type: RandomSampler, ...}} node")
        return cls(assigner, sampler, cfg_number(cfg, "mask_size", 28, path, int), cfg_number(cfg, "pos_weight", -1, path),
                   cfg_number(cfg, "debug", False, path, bool))


@dataclass(frozen=True)
class RCNNTestConfig:
    """``test_cfg.rcnn``: ``score_thr`` (strict), ``nms`` (``{type: nms, iou_threshold}``),
    ``max_per_img``, ``mask_thr_binary`` (mask probability threshold, ``>=``) and ``min_bbox_size``
    (when ``>= 0``, class boxes with a clipped side ``<= min_bbox_size`` are dropped before NMS;
    default -1: none, as in mmdet; torchvision drops sides ``< 0.01``)."""

    score_thr: float = 0.05
    nms: Mapping[str, Any] | None = None
    max_per_img: int = 100
    mask_thr_binary: float = 0.5
    min_bbox_size: float = -1.0

    @classmethod
    def parse(cls, cfg: Mapping[str, Any] | None, path: str) -> RCNNTestConfig:
        cfg = dict(cfg or {})
        check_keys(cfg, ("score_thr", "nms", "max_per_img", "mask_thr_binary", "min_bbox_size"), path)
        nms_cfg = dict(cfg.get("nms") or {"type": "nms", "iou_threshold": 0.5})
        check_keys(nms_cfg, ("type", "iou_threshold", "iou_thr", "class_agnostic"), f"{path}.nms")
        if nms_cfg.get("type", "nms") != "nms":
            raise ConfigError(f"{path}.nms.type: only 'nms' is supported, got {nms_cfg.get('type')!r}")
        iou_key = "iou_threshold" if "iou_threshold" in nms_cfg or "iou_thr" not in nms_cfg else "iou_thr"
        nms_cfg = {"type": "nms", "iou_threshold": cfg_number(nms_cfg, iou_key, 0.5, f"{path}.nms"),
                   "class_agnostic": cfg_number(nms_cfg, "class_agnostic", False, f"{path}.nms", bool)}
        return cls(cfg_number(cfg, "score_thr", 0.05, path), nms_cfg, cfg_number(cfg, "max_per_img", 100, path, int),
                   cfg_number(cfg, "mask_thr_binary", 0.5, path), cfg_number(cfg, "min_bbox_size", -1, path))


def boxes_to_rois(boxes: Sequence[Tensor]) -> Tensor:
    """Per-image boxes ``[(k_i, 4)]`` -> RoIs ``(sum k_i, 5)`` with the image index first (mmdet ``bbox2roi``)."""
    parts = [torch.cat([b.new_full((b.shape[0], 1), float(i)), b[:, :4]], dim=1) for i, b in enumerate(boxes)]
    return torch.cat(parts) if parts else torch.zeros((0, 5))


@dataclass
class SampledRoIs:
    """The RoIs drawn for training, grouped by image.

    Attributes:
        rois (Tensor[K, 5]); labels (Tensor[K]) int64, ``C`` for negatives; gt_boxes (Tensor[K, 4])
        matched GT (zeros for negatives); gt_index (Tensor[K]) 0-based matched GT (``-1`` negatives);
        from_gt (Tensor[K]) bool: the RoI is a GT box added as a proposal (mmdet ``pos_is_gt``).
    """

    rois: Tensor
    labels: Tensor
    gt_boxes: Tensor
    gt_index: Tensor
    from_gt: Tensor | None = None

    @property
    def pos(self) -> Tensor:
        return self.gt_index >= 0


@HEADS.register()
class StandardRoIHead(nn.Module):
    """Box branch and optional mask branch on RoIs (mmdet 2.x ``StandardRoIHead``).

    Args:
        bbox_roi_extractor: built :class:`SingleRoIExtractor` (7x7) for the box head.
        bbox_head: built box head (:class:`Shared2FCBBoxHead`).
        mask_roi_extractor: built extractor (14x14) for the mask head; None shares the box one.
        mask_head: built mask head (``FCNMaskHead``), or None for Faster R-CNN.
        shared_head: must be None (C4 shared heads are not supported).
        train_cfg, test_cfg: must be None here: the detector's ``train_cfg.rcnn`` / ``test_cfg.rcnn``
            are passed to :meth:`loss` / :meth:`predict`.
        pretrained: must be None (deprecated in mmdet).
        init_cfg: accepted for mmdet compatibility.
    """

    def __init__(
        self,
        bbox_roi_extractor: nn.Module | None = None,
        bbox_head: nn.Module | None = None,
        mask_roi_extractor: nn.Module | None = None,
        mask_head: nn.Module | None = None,
        shared_head: Mapping[str, Any] | None = None,
        train_cfg: Mapping[str, Any] | None = None,
        test_cfg: Mapping[str, Any] | None = None,
        pretrained: str | None = None,
        init_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if bbox_roi_extractor is None or bbox_head is None:
            raise ConfigError("model.roi_head: StandardRoIHead needs bbox_roi_extractor and bbox_head")
        for name, value in (("shared_head", shared_head), ("train_cfg", train_cfg), ("test_cfg", test_cfg),
                            ("pretrained", pretrained)):
            if value is not None:
                where = f" (set model.{name} instead)" if name.endswith("cfg") else ""
                raise ConfigError(f"model.roi_head.{name}: not supported by det{where}")
        self.bbox_roi_extractor = bbox_roi_extractor
        self.bbox_head = bbox_head
        self.mask_head = mask_head
        self.share_roi_extractor = mask_roi_extractor is None
        self.mask_roi_extractor = bbox_roi_extractor if mask_roi_extractor is None else mask_roi_extractor

    @property
    def num_classes(self) -> int:
        return int(self.bbox_head.num_classes)  # type: ignore[arg-type]

    @property
    def with_mask(self) -> bool:
        return self.mask_head is not None

    @staticmethod
    def parse_train_cfg(cfg: Any, path: str) -> RCNNTrainConfig:
        """The detector's ``train_cfg.rcnn`` for this head, parsed once."""
        return RCNNTrainConfig.parse(cfg, path)

    @torch.no_grad()
    def sample(self, proposals: Sequence[Tensor], targets: Sequence[GroundTruth], cfg: RCNNTrainConfig,
               padded: PaddedGroundTruth | None = None) -> SampledRoIs:
        """Assign and sample the RoIs of a batch (GT boxes prepended as proposals when the sampler asks).
        ``padded``: ``targets`` already padded on the proposals' device (padded here when None)."""
        device = proposals[0].device if proposals else torch.device("cpu")
        b = len(targets)
        gt = PaddedGroundTruth.of(targets, device) if padded is None else padded
        gt_boxes, gt_labels, gt_valid = gt.boxes, gt.labels, gt.valid  # (B, G, 4), (B, G), (B, G)
        if proposals:  # RoIs in the proposals' dtype (float32 GT is exact in float64)
            gt_boxes = gt_boxes.to(proposals[0].dtype)
        g = gt_boxes.shape[1]
        n = max((p.shape[0] for p in proposals), default=0)
        cand = gt_boxes.new_zeros((b, n, 4))
        cand_valid = torch.zeros((b, n), dtype=torch.bool, device=device)
        for i, p in enumerate(proposals):
            cand[i, :p.shape[0]] = p[:, :4]
            cand_valid[i, :p.shape[0]] = True
        gt_inds, _ = cfg.assigner.assign_batch(cand, gt_boxes, gt_valid, gt.ignore_boxes, gt.ignore_valid,
                                               cand_valid)  # (B, N)
        gt_inds[~cand_valid] = IGNORE
        if cfg.sampler.add_gt_as_proposals and g > 0:
            self_inds = torch.arange(1, g + 1, device=device).expand(b, g)
            self_inds = torch.where(gt_valid, self_inds, torch.full_like(self_inds, IGNORE))
            cand = torch.cat([gt_boxes, cand], dim=1)
            gt_inds = torch.cat([self_inds, gt_inds], dim=1)
        added = g if cfg.sampler.add_gt_as_proposals else 0  # candidates [0, added) are GT boxes
        pos, neg = cfg.sampler.sample_batch(gt_inds)
        img, idx = (pos | neg).nonzero(as_tuple=True)  # grouped by image
        matched = gt_inds[img, idx] - 1  # -1 for negatives
        is_pos = matched >= 0
        safe = matched.clamp(min=0)
        labels = torch.where(is_pos, gt_labels[img, safe] if g else torch.zeros_like(safe),
                             torch.full_like(safe, self.num_classes))
        matched_boxes = gt_boxes[img, safe] if g else cand.new_zeros((img.shape[0], 4))
        rois = torch.cat([img[:, None].to(cand.dtype), cand[img, idx]], dim=1)
        return SampledRoIs(rois, labels, matched_boxes, torch.where(is_pos, matched, torch.full_like(matched, -1)),
                           idx < added)

    def loss(self, feats: tuple[Tensor, ...], proposals: Sequence[Tensor], images: ImageBatch,
             targets: Sequence[GroundTruth], cfg: RCNNTrainConfig,
             padded: PaddedGroundTruth | None = None) -> dict[str, Tensor]:
        """``loss_cls``, ``loss_bbox``, ``acc`` (logged only) and, with a mask head, ``loss_mask``;
        ``padded`` as in :meth:`sample`."""
        sampled = self.sample(proposals, targets, cfg, padded)
        bbox_feats = self.bbox_roi_extractor(feats, sampled.rois)
        cls_score, bbox_pred = self.bbox_head(bbox_feats)
        losses = self.bbox_head.loss(cls_score, bbox_pred, sampled.rois, sampled.labels, sampled.gt_boxes,  # type: ignore[operator]
                                     cfg.pos_weight)
        if self.mask_head is not None:
            losses.update(self.mask_loss(feats, sampled, targets, cfg))
        return losses

    def mask_loss(self, feats: tuple[Tensor, ...], sampled: SampledRoIs, targets: Sequence[GroundTruth],
                  cfg: RCNNTrainConfig) -> dict[str, Tensor]:
        """``{"loss_mask"}`` of the sampled positives (their GT masks cropped to the RoIs)."""
        assert self.mask_head is not None
        pos = sampled.pos.nonzero(as_tuple=True)[0]
        pos_rois = sampled.rois[pos]
        for i, t in enumerate(targets):
            if t.masks is None and len(t):
                raise ConfigError(f"image {i} of the batch has boxes but no masks: the mask head needs "
                                  "LoadAnnotations with_mask: true and gt_masks in Collect keys")
        mask_feats = self.mask_roi_extractor(feats, pos_rois)
        mask_logits = self.mask_head(mask_feats)
        img = pos_rois[:, 0].long()
        counts = torch.bincount(img, minlength=len(targets)).tolist()
        pos_boxes = list(pos_rois[:, 1:].split(counts))
        pos_gt = list(sampled.gt_index[pos].split(counts))
        gt_masks = [t.masks for t in targets]
        mask_targets = self.mask_head.get_targets(pos_boxes, pos_gt, gt_masks, cfg.mask_size)  # type: ignore[operator]
        return self.mask_head.loss(mask_logits, mask_targets, sampled.labels[pos])  # type: ignore[operator]

    def predict(self, feats: tuple[Tensor, ...], proposals: Sequence[Tensor], images: ImageBatch,
                cfg: RCNNTestConfig) -> list[Detections]:
        """Final detections per image; with a mask head ``masks (n, h, w)`` bool at ``image_sizes[i]``."""
        rois = boxes_to_rois(proposals).to(feats[0].device, feats[0].dtype)
        if rois.shape[0] == 0:
            dets = [Detections.empty(s, device=feats[0].device) for s in images.image_sizes]
        else:
            cls_score, bbox_pred = self.bbox_head(self.bbox_roi_extractor(feats, rois))
            dets = self.bbox_head.predict(rois, cls_score, bbox_pred, images.image_sizes, cfg.score_thr,  # type: ignore[operator]
                                          cfg.nms or {"type": "nms", "iou_threshold": 0.5}, cfg.max_per_img,
                                          cfg.min_bbox_size)
        if self.mask_head is None:
            return dets
        return self._predict_masks(feats, dets, cfg)

    def _predict_masks(self, feats: tuple[Tensor, ...], dets: list[Detections], cfg: RCNNTestConfig) -> list[Detections]:
        assert self.mask_head is not None
        rois = boxes_to_rois([d.boxes.tensor for d in dets]).to(feats[0].device, feats[0].dtype)
        out = []
        if rois.shape[0] == 0:
            logits_per_image: list[Tensor | None] = [None] * len(dets)
        else:
            logits = self.mask_head(self.mask_roi_extractor(feats, rois))
            logits_per_image = list(logits.split([len(d) for d in dets]))
        for d, logits_i in zip(dets, logits_per_image):
            h, w = d.image_size
            if len(d) == 0 or logits_i is None:
                masks = torch.zeros((0, h, w), dtype=torch.bool, device=d.scores.device)
            else:
                masks = self.mask_head.predict(logits_i, d.boxes.tensor, d.labels, (h, w), cfg.mask_thr_binary)  # type: ignore[operator]
            out.append(Detections(d.image_size, d.boxes, d.scores, d.labels, masks))
        return out
