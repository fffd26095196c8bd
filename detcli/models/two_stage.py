"""Two-stage detectors: backbone -> neck -> RPN proposals -> RoI head (Faster R-CNN, Mask R-CNN).

``model(images, targets)`` -> ``{loss_rpn_cls, loss_rpn_bbox, loss_cls, loss_bbox, acc[, loss_mask]}``
(``acc`` is logged, not summed); ``model(images)`` -> ``list[Detections]`` in the coordinates of
``images``, clipped, sorted by score, at most ``test_cfg.rcnn.max_per_img``, with ``masks (n, h, w)``
at ``images.image_sizes[i]`` for Mask R-CNN.

Settings (mmdet 2.x layout): ``train_cfg = {rpn: {assigner, sampler, allowed_border, pos_weight,
debug}, rpn_proposal: {nms_pre, max_per_img, nms, min_bbox_size, ...}, rcnn: {assigner, sampler,
mask_size, pos_weight, debug}}`` and ``test_cfg = {rpn: {nms_pre, max_per_img, nms, min_bbox_size,
...}, rcnn: {score_thr, nms, max_per_img, mask_thr_binary}}``. The RPN and R-CNN losses are
averaged per rank over the sampled anchors / RoIs (no collective), as in mmdet 2.x.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.dense_utils import PaddedGroundTruth
from detcli.models.detector import BaseDetector, check_keys
from detcli.models.pretrained import parse_init_cfg
from detcli.models.roi_head import RCNNTestConfig, StandardRoIHead
from detcli.models.rpn import ProposalConfig, RPNHead, RPNTrainConfig
from detcli.registry import DETECTORS
from detcli.structures import Detections, GroundTruth, ImageBatch


def _section(cfg: Mapping[str, Any] | None, allowed: tuple[str, ...], path: str) -> dict[str, Any]:
    cfg = dict(cfg or {})
    check_keys(cfg, allowed, path)
    return cfg


@DETECTORS.register()
class TwoStageDetector(BaseDetector):
    """Backbone, optional neck, :class:`RPNHead` and :class:`StandardRoIHead`.

    Args:
        backbone: built backbone.
        rpn_head: built :class:`RPNHead`.
        roi_head: built :class:`StandardRoIHead`.
        train_cfg: ``{rpn, rpn_proposal, rcnn}`` (assigners and samplers already built).
        test_cfg: ``{rpn, rcnn}``.
        neck: built neck, or None.
        init_cfg: ``{type: Pretrained, checkpoint: PATH}`` of a whole detector.

    A subclass with another RoI head lists it in ``roi_head_types``; the head parses its own
    ``train_cfg.rcnn`` (``parse_train_cfg``) and provides ``loss`` / ``predict`` with the signatures of
    :class:`StandardRoIHead`.
    """

    roi_head_types: ClassVar[tuple[type[nn.Module], ...]] = (StandardRoIHead,)

    def __init__(
        self,
        backbone: nn.Module,
        rpn_head: nn.Module,
        roi_head: nn.Module,
        train_cfg: Mapping[str, Any] | None,
        test_cfg: Mapping[str, Any] | None,
        neck: nn.Module | None = None,
        init_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(rpn_head, RPNHead):
            raise ConfigError(f"model.rpn_head: {type(self).__name__} needs an RPNHead, got {type(rpn_head).__name__}")
        if not isinstance(roi_head, self.roi_head_types):
            names = " or ".join(t.__name__ for t in self.roi_head_types)
            raise ConfigError(f"model.roi_head: {type(self).__name__} needs a {names}, "
                              f"got {type(roi_head).__name__}")
        self.backbone = backbone
        self.neck = neck
        self.rpn_head = rpn_head
        self.roi_head = roi_head
        train = _section(train_cfg, ("rpn", "rpn_proposal", "rcnn"), "model.train_cfg")
        test = _section(test_cfg, ("rpn", "rcnn"), "model.test_cfg")
        self.rpn_train = RPNTrainConfig.parse(train.get("rpn"), "model.train_cfg.rpn")
        self.rpn_proposal = ProposalConfig.parse(
            train.get("rpn_proposal", test.get("rpn")), "model.train_cfg.rpn_proposal")
        self.rcnn_train = roi_head.parse_train_cfg(train.get("rcnn"), "model.train_cfg.rcnn")  # type: ignore[operator]
        self.rpn_test = ProposalConfig.parse(test.get("rpn"), "model.test_cfg.rpn")
        self.rcnn_test = RCNNTestConfig.parse(test.get("rcnn"), "model.test_cfg.rcnn")
        self.pretrained = parse_init_cfg(init_cfg, "model")
        self.to(memory_format=torch.channels_last)

    @property
    def num_classes(self) -> int:
        return self.roi_head.num_classes  # type: ignore[return-value]

    def loss(self, images: ImageBatch, targets: list[GroundTruth]) -> dict[str, Tensor]:
        """RPN and RoI-head losses of a batch."""
        if len(targets) != len(images):
            raise ValueError(f"got {len(targets)} targets for {len(images)} images")
        feats = self.extract_feat(images.tensor)
        padded = PaddedGroundTruth.of(targets, feats[0].device)  # once for both stages
        cls_scores, bbox_preds = self.rpn_head(feats)
        losses = self.rpn_head.loss(cls_scores, bbox_preds, images, targets, self.rpn_train, padded)
        proposals = [p for p, _ in self.rpn_head.get_proposals(cls_scores, bbox_preds, images, self.rpn_proposal)]
        losses.update(self.roi_head.loss(feats, proposals, images, targets, self.rcnn_train, padded))  # type: ignore[operator]
        return losses

    def predict(self, images: ImageBatch) -> list[Detections]:
        """Detections per image, computed under ``torch.inference_mode`` (results are normal tensors)."""
        with torch.inference_mode():
            feats = self.extract_feat(images.tensor)
            cls_scores, bbox_preds = self.rpn_head(feats)
            proposals = [p for p, _ in self.rpn_head.get_proposals(cls_scores, bbox_preds, images, self.rpn_test)]
            results = self.roi_head.predict(feats, proposals, images, self.rcnn_test)  # type: ignore[operator]
        # copies made outside inference mode can be modified in place by later stages
        return [Detections(d.image_size, d.boxes.tensor.clone(), d.scores.clone(), d.labels.clone(),
                           None if d.masks is None else d.masks.clone()) for d in results]


@DETECTORS.register()
class FasterRCNN(TwoStageDetector):
    """Faster R-CNN (Ren et al., 2015): :class:`TwoStageDetector` with a box-only RoI head."""

    def __init__(
        self,
        backbone: nn.Module,
        rpn_head: nn.Module,
        roi_head: nn.Module,
        train_cfg: Mapping[str, Any] | None,
        test_cfg: Mapping[str, Any] | None,
        neck: nn.Module | None = None,
        init_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(roi_head, StandardRoIHead) and roi_head.with_mask:
            raise ConfigError("model.roi_head.mask_head: FasterRCNN has no mask branch (use type: MaskRCNN)")
        super().__init__(backbone, rpn_head, roi_head, train_cfg, test_cfg, neck, init_cfg)


@DETECTORS.register()
class MaskRCNN(TwoStageDetector):
    """Mask R-CNN (He et al., 2017): :class:`TwoStageDetector` whose RoI head has a mask branch."""

    def __init__(
        self,
        backbone: nn.Module,
        rpn_head: nn.Module,
        roi_head: nn.Module,
        train_cfg: Mapping[str, Any] | None,
        test_cfg: Mapping[str, Any] | None,
        neck: nn.Module | None = None,
        init_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(roi_head, StandardRoIHead) and not roi_head.with_mask:
            raise ConfigError("model.roi_head: MaskRCNN needs mask_head (and mask_roi_extractor)")
        super().__init__(backbone, rpn_head, roi_head, train_cfg, test_cfg, neck, init_cfg)
