"""Cascade R-CNN and Cascade Mask R-CNN (Cai & Vasconcelos, 2018; mmdet 2.x ``CascadeRoIHead``).

The RoI head is a sequence of ``num_stages`` :class:`StandardRoIHead` stages, each with its own box
head (and mask head), assigner and sampler. Stage ``t`` is trained on the boxes stage ``t - 1``
regressed, with a stricter IoU threshold (0.5 / 0.6 / 0.7 in the mmdet configs); its losses are
weighted by ``stage_loss_weights[t]`` and logged as ``s{t}.loss_cls``, ``s{t}.loss_bbox``,
``s{t}.acc`` and ``s{t}.loss_mask``.

Refinement between stages, training (mmdet 2.x ``refine_bboxes``): every sampled RoI is regressed
by the stage's head with its target class, or, for negatives, the arg-max foreground class of the
stage's scores; the GT boxes that the sampler added as proposals are dropped (``pos_is_gt``), the
rest become the next stage's proposals. No gradient flows through the refined boxes.

Inference: the proposals go through every stage's box head, regressed between stages with the
arg-max foreground class; the class logits of all stages are averaged and, with the last stage's
deltas on the last stage's RoIs, give the detections (softmax, class-aware NMS, as
:meth:`ConvFCBBoxHead.predict`). Masks: every stage's mask head runs on the final boxes, their
sigmoid probabilities are averaged and the last mask head pastes them.

Settings: ``train_cfg.rcnn`` is a list of ``num_stages`` mappings ``{assigner, sampler, mask_size,
pos_weight, debug}`` (parsed once into :class:`CascadeTrainConfig`); ``test_cfg.rcnn`` is the single
:class:`RCNNTestConfig` of :class:`StandardRoIHead`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.dense_utils import PaddedGroundTruth
from detcli.models.roi_head import RCNNTestConfig, RCNNTrainConfig, SampledRoIs, StandardRoIHead, boxes_to_rois
from detcli.models.two_stage import TwoStageDetector
from detcli.registry import DETECTORS, HEADS
from detcli.structures import Detections, GroundTruth, ImageBatch


@dataclass(frozen=True)
class CascadeTrainConfig:
    """``train_cfg.rcnn`` of a cascade: one :class:`RCNNTrainConfig` per stage."""

    stages: tuple[RCNNTrainConfig, ...]

    @classmethod
    def parse(cls, cfg: Any, path: str, num_stages: int) -> CascadeTrainConfig:
        if cfg is None:
            raise ConfigError(f"{path}: a cascade needs a list of {num_stages} per-stage settings "
                              "({assigner, sampler, ...} each)")
        if isinstance(cfg, Mapping) or not isinstance(cfg, Sequence) or len(cfg) != num_stages:
            raise ConfigError(f"{path}: expected a list of {num_stages} per-stage settings (num_stages), got "
                              f"{type(cfg).__name__}{'' if not isinstance(cfg, Sequence) else f' of {len(cfg)}'}")
        return cls(tuple(RCNNTrainConfig.parse(c, f"{path}.{i}") for i, c in enumerate(cfg)))


def _per_stage(value: Any, num_stages: int, path: str, required: bool) -> list[Any]:
    """A component given once (copied per stage, own weights, re-initialised) or as a list of ``num_stages``."""
    if value is None:
        if required:
            raise ConfigError(f"{path}: CascadeRoIHead needs it")
        return [None] * num_stages
    if isinstance(value, (list, tuple)):
        if len(value) != num_stages:
            raise ConfigError(f"{path}: {len(value)} entries for num_stages {num_stages}")
        if any(v is None for v in value):
            raise ConfigError(f"{path}: every stage needs one")
        return list(value)
    out = [value]
    for _ in range(num_stages - 1):
        twin = copy.deepcopy(value)
        reset = getattr(twin, "init_weights", None)
        if callable(reset):
            reset()
        out.append(twin)
    return out


@HEADS.register()
class CascadeRoIHead(nn.Module):
    """``num_stages`` box (and mask) stages with box refinement between them (see the module doc).

    Args:
        num_stages: number of stages (3 in the mmdet configs).
        stage_loss_weights: loss weight of each stage (``[1, 0.5, 0.25]``).
        bbox_roi_extractor: built extractor, shared by the stages, or a list of one per stage.
        bbox_head: list of one built box head per stage (a single head is copied per stage).
        mask_roi_extractor: as ``bbox_roi_extractor``; None shares the box extractor.
        mask_head: one built mask head (copied per stage, each re-initialised) or a list; None: no masks.
        shared_head, train_cfg, test_cfg, pretrained: must be None (as :class:`StandardRoIHead`).
        init_cfg: accepted for mmdet compatibility.

    The stages are :class:`StandardRoIHead` modules in ``stages``.
    """

    def __init__(
        self,
        num_stages: int,
        stage_loss_weights: Sequence[float],
        bbox_roi_extractor: Any = None,
        bbox_head: Any = None,
        mask_roi_extractor: Any = None,
        mask_head: Any = None,
        shared_head: Mapping[str, Any] | None = None,
        train_cfg: Any = None,
        test_cfg: Any = None,
        pretrained: str | None = None,
        init_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if int(num_stages) != num_stages or num_stages < 1:
            raise ConfigError(f"model.roi_head.num_stages must be a positive integer, got {num_stages!r}")
        num_stages = int(num_stages)
        if len(stage_loss_weights) != num_stages:
            raise ConfigError(f"model.roi_head.stage_loss_weights: {len(stage_loss_weights)} weights for "
                              f"num_stages {num_stages}")
        for name, value in (("shared_head", shared_head), ("train_cfg", train_cfg), ("test_cfg", test_cfg),
                            ("pretrained", pretrained)):
            if value is not None:
                where = f" (set model.{name} instead)" if name.endswith("cfg") else ""
                raise ConfigError(f"model.roi_head.{name}: not supported by det{where}")
        self.num_stages = num_stages
        self.stage_loss_weights = tuple(float(w) for w in stage_loss_weights)
        box_ext = _per_stage(bbox_roi_extractor, num_stages, "model.roi_head.bbox_roi_extractor", True)
        box_heads = _per_stage(bbox_head, num_stages, "model.roi_head.bbox_head", True)
        mask_heads = _per_stage(mask_head, num_stages, "model.roi_head.mask_head", False)
        mask_ext = _per_stage(mask_roi_extractor, num_stages, "model.roi_head.mask_roi_extractor", False)
        if len({int(h.num_classes) for h in box_heads}) != 1:
            raise ConfigError("model.roi_head.bbox_head: every stage needs the same num_classes")
        self.stages = nn.ModuleList(
            StandardRoIHead(box_ext[t], box_heads[t], mask_ext[t], mask_heads[t]) for t in range(num_stages))

    @property
    def num_classes(self) -> int:
        return self.stages[-1].num_classes  # type: ignore[return-value]

    @property
    def with_mask(self) -> bool:
        return self.stages[-1].with_mask  # type: ignore[return-value]

    def parse_train_cfg(self, cfg: Any, path: str) -> CascadeTrainConfig:
        """The detector's ``train_cfg.rcnn``: a list of one setting per stage, parsed once."""
        return CascadeTrainConfig.parse(cfg, path, self.num_stages)

    @torch.no_grad()
    def refine_training_rois(self, stage: int, sampled: SampledRoIs, cls_score: Tensor, bbox_pred: Tensor,
                             images: ImageBatch) -> list[Tensor]:
        """The next stage's proposals per image: each sampled RoI regressed with its target class
        (background RoIs: the arg-max foreground class), GT boxes added as proposals left out."""
        head = self.stages[stage].bbox_head
        c = head.num_classes  # type: ignore[union-attr]
        labels = torch.where(sampled.labels == c, cls_score[:, :c].argmax(dim=1), sampled.labels)  # type: ignore[call-overload]
        img = sampled.rois[:, 0].long()
        keep = ~sampled.from_gt if sampled.from_gt is not None else torch.ones_like(img, dtype=torch.bool)
        out = []
        for i, size in enumerate(images.image_sizes):
            sel = (img == i).nonzero(as_tuple=True)[0]
            if sel.numel() == 0:
                out.append(sampled.rois.new_zeros((0, 4)))
                continue
            boxes = head.regress(sampled.rois[sel, 1:], labels[sel], bbox_pred[sel], size)  # type: ignore[operator, union-attr]
            out.append(boxes[keep[sel]])
        return out

    def loss(self, feats: tuple[Tensor, ...], proposals: Sequence[Tensor], images: ImageBatch,
             targets: Sequence[GroundTruth], cfg: CascadeTrainConfig,
             padded: PaddedGroundTruth | None = None) -> dict[str, Tensor]:
        """Every stage's weighted losses (``s{t}.loss_cls``, ``s{t}.loss_bbox``, ``s{t}.loss_mask``) and
        ``s{t}.acc`` (logged only)."""
        if not isinstance(cfg, CascadeTrainConfig):
            raise TypeError(f"CascadeRoIHead.loss needs a CascadeTrainConfig, got {type(cfg).__name__}")
        losses: dict[str, Tensor] = {}
        proposals = list(proposals)
        for t, (stage, stage_cfg, weight) in enumerate(zip(self.stages, cfg.stages, self.stage_loss_weights)):
            sampled = stage.sample(proposals, targets, stage_cfg, padded)  # type: ignore[operator]
            cls_score, bbox_pred = stage.bbox_head(stage.bbox_roi_extractor(feats, sampled.rois))  # type: ignore[operator]
            stage_losses = stage.bbox_head.loss(cls_score, bbox_pred, sampled.rois, sampled.labels,  # type: ignore[operator, union-attr]
                                                sampled.gt_boxes, stage_cfg.pos_weight)
            if stage.with_mask:
                stage_losses.update(stage.mask_loss(feats, sampled, targets, stage_cfg))  # type: ignore[operator]
            for name, value in stage_losses.items():
                losses[f"s{t}.{name}"] = value * weight if "loss" in name else value
            if sampled.rois.shape[0] == 0:  # no RoI (no proposal and no GT): no later stage (as mmdet)
                break
            if t < self.num_stages - 1:
                proposals = self.refine_training_rois(t, sampled, cls_score.detach(), bbox_pred.detach(), images)
        return losses

    def forward_boxes(self, feats: tuple[Tensor, ...], rois: Tensor,
                      image_sizes: Sequence[tuple[int, int]]) -> tuple[Tensor, Tensor, Tensor]:
        """Test-time cascade on RoIs ``(K, 5)``: the last stage's RoIs, the stages' mean class logits
        ``(K, C + 1 + E)`` and the last stage's deltas."""
        scores = []
        bbox_pred = rois.new_zeros((0, 4))
        for t, stage in enumerate(self.stages):
            cls_score, bbox_pred = stage.bbox_head(stage.bbox_roi_extractor(feats, rois))  # type: ignore[operator]
            scores.append(cls_score)
            if t < self.num_stages - 1:
                c = stage.bbox_head.num_classes  # type: ignore[union-attr]
                labels = cls_score[:, :c].argmax(dim=1)
                img = rois[:, 0].long()
                refined = rois.clone()
                for i, size in enumerate(image_sizes):
                    sel = (img == i).nonzero(as_tuple=True)[0]
                    if sel.numel():
                        refined[sel, 1:] = stage.bbox_head.regress(rois[sel, 1:], labels[sel], bbox_pred[sel], size)  # type: ignore[operator, union-attr]
                rois = refined
        return rois, sum(scores) / float(len(scores)), bbox_pred

    def predict(self, feats: tuple[Tensor, ...], proposals: Sequence[Tensor], images: ImageBatch,
                cfg: RCNNTestConfig) -> list[Detections]:
        """Final detections per image; with mask heads ``masks (n, h, w)`` bool at ``image_sizes[i]``."""
        rois = boxes_to_rois(proposals).to(feats[0].device, feats[0].dtype)
        last = self.stages[-1]
        if rois.shape[0] == 0:
            dets = [Detections.empty(s, device=feats[0].device) for s in images.image_sizes]
        else:
            rois, cls_score, bbox_pred = self.forward_boxes(feats, rois, images.image_sizes)
            dets = last.bbox_head.predict(rois, cls_score, bbox_pred, images.image_sizes, cfg.score_thr,  # type: ignore[operator, union-attr]
                                          cfg.nms or {"type": "nms", "iou_threshold": 0.5}, cfg.max_per_img,
                                          cfg.min_bbox_size)
        if not self.with_mask:
            return dets
        return self.predict_masks(feats, dets, cfg)

    def mask_probs(self, feats: tuple[Tensor, ...], rois: Tensor) -> Tensor:
        """The stages' mean mask probabilities ``(K, C or 1, M, M)`` of RoIs ``(K, 5)``."""
        probs = [stage.mask_head(stage.mask_roi_extractor(feats, rois)).sigmoid() for stage in self.stages]  # type: ignore[operator]
        return torch.stack(probs).mean(dim=0)

    def predict_masks(self, feats: tuple[Tensor, ...], dets: list[Detections], cfg: RCNNTestConfig) -> list[Detections]:
        """``dets`` with masks: the stages' mean probabilities pasted by the last mask head."""
        head = self.stages[-1].mask_head
        rois = boxes_to_rois([d.boxes.tensor for d in dets]).to(feats[0].device, feats[0].dtype)
        if rois.shape[0]:
            per_image = list(self.mask_probs(feats, rois).split([len(d) for d in dets]))
        out = []
        for i, d in enumerate(dets):
            h, w = d.image_size
            if len(d) == 0:
                masks = torch.zeros((0, h, w), dtype=torch.bool, device=d.scores.device)
            else:
                masks = head.paste_probs(per_image[i], d.boxes.tensor, d.labels, (h, w), cfg.mask_thr_binary)  # type: ignore[operator, union-attr]
            out.append(Detections(d.image_size, d.boxes, d.scores, d.labels, masks))
        return out


@DETECTORS.register()
class CascadeRCNN(TwoStageDetector):
    """Cascade R-CNN, and Cascade Mask R-CNN when the :class:`CascadeRoIHead` has mask heads
    (mmdet 2.x ``CascadeRCNN``): :class:`TwoStageDetector` with a cascade RoI head."""

    roi_head_types: ClassVar[tuple[type[nn.Module], ...]] = (CascadeRoIHead,)
